"""The Markdown report of an enhancement or separation evaluation: tables, plain-sentence verdicts, notes, pictures.

It reads only the results dict (also after a JSON round trip, where NaNs are None), so a report can be rewritten
from a saved JSON without scoring again.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.evaluation import metrics
from training.evaluation.cases import Case
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
from training.evaluation.scoring import OnOutput

METRIC_LABELS = {
    "pesq_wb": "PESQ-WB",
    "estoi": "ESTOI",
    "si_sdr": "SI-SDR (dB)",
    "si_sdri": "SI-SDRi (dB)",
    "dnsmos_ovrl": "DNSMOS OVRL",
    "dnsmos_sig": "DNSMOS SIG",
    "dnsmos_bak": "DNSMOS BAK",
}
PRECISION = {"estoi": ".3f"}  # format of each metric's values; ".2f" for the rest
UPPER_BOUNDS = {"oracle_irm"}  # knows the answer: never the "best" system in a table


def _fmt(metric: str, value: float | None) -> str:
    return fmt(value, PRECISION.get(metric, ".2f"))


def _best(means: Mapping[str, Mapping[str, float]], metric: str) -> str | None:
    """The best shown value of a metric (all ours are higher-is-better) among systems other than upper bounds."""
    candidates = [v[metric] for s, v in means.items() if s not in UPPER_BOUNDS and finite(v[metric])]
    return _fmt(metric, max(candidates)) if candidates else None


def _rows(results: Mapping[str, Any], means: Mapping[str, Mapping[str, float]], first: str = "") -> list[str]:
    """Table rows: one per system, a column per metric, the best (non-oracle) value in bold."""
    names, labels = results["metrics"], results["system_labels"]
    lead = [first] if first else []
    best = {m: _best(means, m) for m in names}
    lines = []
    for system, values in means.items():
        cells = []
        for m in names:
            shown = _fmt(m, values[m])
            cells.append(f"**{shown}**" if system not in UPPER_BOUNDS and shown == best[m] else shown)
        lines.append(table_row([*lead, labels.get(system, system), *cells]))
    return lines


def _group_tables(results: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for group, buckets in results["groups"].items():
        header = table_header(results["metrics"], METRIC_LABELS, first=group)
        lines += group_section(group, buckets, header, lambda entry, lead: _rows(results, entry["means"], lead))
    return lines


def _delta(results: Mapping[str, Any], metric: str, other: str) -> str:
    overall = results["overall"]
    if other not in overall or not (finite(overall["ours"].get(metric)) and finite(overall[other].get(metric))):
        return "n/a"
    diff = overall["ours"][metric] - overall[other][metric]
    return format(diff, "+" + PRECISION.get(metric, ".2f"))


def _verdict(results: Mapping[str, Any]) -> list[str]:
    """Plain sentences on the issue's targets, so a reader need not compare numbers by eye."""
    if results["task"] == "enhance":
        lines = []
        for other in ("input", "spectral_gating"):
            if other in results["overall"]:
                label = results["system_labels"][other]
                lines.append(
                    f"- Ours vs {label}: PESQ-WB {_delta(results, 'pesq_wb', other)}, "
                    f"ESTOI {_delta(results, 'estoi', other)}, SI-SDR {_delta(results, 'si_sdr', other)} dB."
                )
        return lines
    per_class = {
        f"{group}: {bucket}": entry["means"]["ours"]["si_sdri"]
        for group, buckets in results["groups"].items()
        for bucket, entry in buckets.items()
    }
    worst = min(per_class, key=lambda k: per_class[k] if finite(per_class[k]) else -math.inf)
    met = all(finite(v) and v > 0 for v in per_class.values())
    return [
        f"- Ours: mean SI-SDRi {_fmt('si_sdri', results['overall']['ours']['si_sdri'])} dB; lowest class mean "
        f"{_fmt('si_sdri', per_class[worst])} dB ({worst}).",
        f"- SI-SDRi > 0 dB on every class: **{'yes' if met else 'no'}**.",
    ]


def _notes(results: Mapping[str, Any]) -> list[str]:
    timing = results["timing"]
    lines = [
        "",
        "## Notes",
        "",
        f"- Processing (ours): {timing['process_s']:.1f} s for {timing['audio_s']:.1f} s of audio "
        f"(real-time factor {_fmt('rtf', timing['rtf'])}).",
        *[f"- Processing ({results['system_labels'].get(name, name)}): {spent['process_s']:.1f} s, real-time factor "
          f"{_fmt('rtf', spent['rtf'])}, one utterance at a time." for name, spent in timing.get("systems", {}).items()
          if name != "ours"],
        "- Means skip utterances where a metric is undefined (silent reference, too little speech; DNSMOS needs"
        " >= 1 s).",
    ]
    missing = undefined_counts(results["nan_counts"])
    if missing:
        lines.append("- Undefined scores: " + ", ".join(f"{k}: {v}" for k, v in missing.items()) + ".")
    if results.get("pesq_failures"):
        lines.append("- PESQ could not score: " + ", ".join(f"{k} x{v}" for k, v in results["pesq_failures"].items()))
    if results["task"] == "separate":
        lines.append("- Scores are averaged over both speakers after the best speaker permutation.")
    return lines


def write_report(
    results: Mapping[str, Any],
    out_md: str | os.PathLike,
    pictures: Sequence[Picture] = (),
) -> None:
    """A Markdown report: configuration, the overall table, per-class tables, verdict, notes, and spectrogram PNGs
    (input / ours / clean per picture) saved next to it as `<stem>_NN.png`."""
    out_md = Path(out_md)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    task = results["task"]
    title = "speech enhancement" if task == "enhance" else "two-speaker separation"
    lines = [f"# SpeechFlow evaluation: {title}", "", *config_lines(results)]
    lines += [f"- utterances: {results['n']}", "", "## Overall (mean over utterances; higher is better)", ""]
    lines += table_header(results["metrics"], METRIC_LABELS) + _rows(results, results["overall"])
    lines += ["", *_verdict(results)]
    lines += _group_tables(results)
    lines += _notes(results)
    names = ("mixture", "ours", "clean speaker") if task == "separate" else ("noisy input", "ours", "clean")
    lines += spectrogram_section(out_md, pictures, names)
    out_md.write_text("\n".join(lines).rstrip() + "\n")


def picture_collector(task: str, limit: int, pictures: list[Picture]) -> OnOutput:
    """An on_output hook keeping the first outputs as (caption, input, ours, clean) pictures for `write_report`;
    a separation output gives one picture per speaker, matched to the speakers by the best permutation."""

    def keep(case: Case, out: np.ndarray) -> None:
        if len(pictures) >= limit:
            return
        if task == "enhance":
            caption = f"{case.id} ({case.info.get('noise')} noise, {case.info.get('snr_db', math.nan):.1f} dB SNR)"
            pictures.append((caption, case.noisy, out, case.clean))
            return
        _, perm = metrics.permutation_si_sdr(out, case.clean)
        for k in range(case.clean.shape[0]):
            if len(pictures) < limit:
                caption = f"{case.id}, speaker {k + 1} ({case.info['speakers'][k]})"
                pictures.append((caption, case.noisy, out[perm[k]], case.clean[k]))

    return keep
