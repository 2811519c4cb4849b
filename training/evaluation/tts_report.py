"""The Markdown report of a TTS evaluation, in the style of the enhancement report: tables, the two headline
figures with what they mean, a warning where the recogniser cannot tell, notes and pictures.

Like the enhancement report it reads only the results dict, so it can be rewritten from a saved JSON.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from training.evaluation.common import finite
from training.evaluation.markdown import (
    Picture,
    config_lines,
    fmt,
    group_section,
    spectrogram_section,
    table_header,
    table_row,
    undefined_counts,
)

METRIC_LABELS = {
    "wer": "WER ↓",
    "speaker_sim": "speaker sim. vs prompt ↑",
    "dnsmos_ovrl": "DNSMOS OVRL ↑",
    "dnsmos_sig": "DNSMOS SIG ↑",
    "dnsmos_bak": "DNSMOS BAK ↑",
}
PRECISION = {"wer": ".1%", "speaker_sim": ".3f"}  # format of each metric's values; ".2f" for the rest
UNINFORMATIVE_WER = 0.8  # ground-truth WER above this: the report warns that the ratio has no room to move


def _fmt(metric: str, value: float | None) -> str:
    return fmt(value, PRECISION.get(metric, ".2f"))


def _rows(results: Mapping[str, Any], entry: Mapping[str, Any], first: str = "") -> list[str]:
    """Table rows: one per system, a column per metric ("—" where a metric does not apply)."""
    lead = [first] if first else []
    lines = []
    for system in results["systems"]:
        values = entry["overall"][system]
        cells = [_fmt(m, values[m]) if m in values else "—" for m in results["metrics"]]
        lines.append(table_row([*lead, results["system_labels"][system], *cells]))
    return lines


def _headline(entry: Mapping[str, Any]) -> str:
    ratio, position = entry["wer_ratio"], entry["similarity_position"]
    return (f"WER ratio ours / ground truth **{ratio:.2f}**" if finite(ratio) else "WER ratio n/a") + "; " + (
        f"similarity position **{position:.2f}**" if finite(position) else "similarity position n/a")


def _wer_caveat(results: Mapping[str, Any], limit: float = UNINFORMATIVE_WER) -> list[str]:
    """A warning when the recogniser misses most words of the real recordings: the ratio then has no room to move."""
    if not (finite(results["overall"]["ground_truth"]["wer"]) and results["overall"]["ground_truth"]["wer"] > limit):
        return []
    usable = [f"{bucket} ({_headline(entry)})" for bucket, entry in results["groups"]["engine"].items()
              if finite(entry["overall"]["ground_truth"]["wer"]) and entry["overall"]["ground_truth"]["wer"] <= limit]
    return [f"- The recogniser misses more than {limit:.0%} of the words of the recordings, so the overall WER ratio"
            " says little; " + ("read it per engine where the ground truth is recognised: " + "; ".join(usable)
                                if usable else "no engine's recordings are recognised well enough") + "."]


def write_tts_report(
    results: Mapping[str, Any],
    out_md: str | os.PathLike,
    pictures: Sequence[Picture] = (),
) -> None:
    """Markdown report in the style of the enhancement report: configuration, the overall table, headline figures,
    per-engine / per-speaker tables, notes and spectrogram PNGs (prompt / ours / ground truth) as `<stem>_NN.png`."""
    out_md = Path(out_md)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    prompts, timing = results["prompts"], results["timing"]
    recogniser = results.get("config", {}).get("recogniser") or "pocketsphinx"
    lines = ["# SpeechFlow evaluation: zero-shot text-to-speech", "", *config_lines(results)]
    lines += [
        f"- cases: {results['n']} (cross-sentence: unseen speakers, prompt = another utterance of the same speaker; "
        f"prompts {prompts['mean_s']:.2f} s on average, {prompts['min_s']:.2f}-{prompts['max_s']:.2f} s)",
        "",
        "## Overall",
        "",
        *table_header(results["metrics"], METRIC_LABELS),
        *_rows(results, results),
        "",
        f"- {_headline(results)}.",
        f"- WER ratio: the recogniser's ({recogniser}) WER on ours divided by its WER on the recordings of the same"
        " sentences (a recogniser can be weak on synthetic voices, so the ratio, not the absolute WER, is the figure;"
        " 1 = as intelligible as the recording).",
        "- Similarity position: (ours - different speaker) / (ground truth - different speaker) of the speaker"
        " similarities; 0 = no closer to the prompt's voice than another speaker, 1 = as close as the speaker's own"
        " recording of another sentence.",
    ]
    lines += _wer_caveat(results)
    for group, buckets in results["groups"].items():
        header = table_header(results["metrics"], METRIC_LABELS, first=group)
        lines += group_section(group, buckets, header, lambda entry, lead: _rows(results, entry, lead))
        lines += ["", *(f"- {bucket}: {_headline(entry)}." for bucket, entry in buckets.items())]
    lines += [
        "",
        "## Notes",
        "",
        *(f"- Synthesis ({results['system_labels'][system]}): {t['synthesis_s']:.1f} s for {t['audio_s']:.1f} s of "
          f"audio (real-time factor {_fmt('rtf', t['rtf'])})."
          for system, t in results.get("timings", {"ours": timing}).items()),
        "- WER is corpus-level (summed errors / summed reference words); text is lower-cased with punctuation removed,"
        f" numbers are not spelled out. The recogniser ({recogniser}) decodes each clip whole.",
        "- Speaker similarity: cosine of resemblyzer embeddings. Ground truth row = the real recording vs the prompt"
        " (same speaker); different speaker row = the real recording vs another unseen speaker's prompt.",
        "- Prompts are whole utterances (no crop: a crop would cut the transcript mid-word).",
    ]
    missing = undefined_counts(results["nan_counts"])
    if missing:
        lines.append("- Undefined scores (skipped in means): " + ", ".join(f"{k}: {v}" for k, v in missing.items()))
    lines += spectrogram_section(out_md, pictures, ("prompt", "ours", "ground truth"))
    out_md.write_text("\n".join(lines).rstrip() + "\n")
