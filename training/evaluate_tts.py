"""Zero-shot TTS evaluation: intelligibility (WER), speaker similarity and DNSMOS, each next to its reference.

Protocol (cross-sentence, as in the SpeechFlow / Voicebox papers): every case is a target sentence spoken by a
speaker never seen in training (the corpus's `test.jsonl`) and a prompt, a *different* utterance of the same speaker
with its transcript, of about 3 s. The system under test gets (target text, prompt audio, prompt transcript) and
returns the new sentence only (16 kHz, without the prompt); its output is compared with the real recording of the
same sentence:

- **Intelligibility**: WER of pocketsphinx's transcript (its bundled US-English model, offline) against the text.
  Pocketsphinx is weak on synthetic voices (on the corpus's espeak-ng voices it misses most words even on the real
  recordings), so the ground-truth recordings of the same sentences are transcribed too, and the figure is the ratio
  WER(ours) / WER(ground truth), both corpus-level (summed errors / summed reference words, not a mean of ratios).
- **Speaker similarity**: cosine of resemblyzer d-vectors, ours vs the prompt, next to two references: the real
  recording vs the prompt (same speaker, different sentence: what a perfect clone would score) and the real recording
  vs a different unseen speaker's prompt (what no cloning at all scores).
- **DNSMOS** P.835 (OVRL / SIG / BAK) of ours and of the real recordings (`training.metrics.dnsmos`).

Prompts are whole utterances whose length lies in `prompt_range` (default 2.5-4.5 s around the 3 s of the paper),
not 3 s crops: a crop would cut the prompt's transcript mid-word, and the corpus's phone times only say roughly
where words end. The report states the prompts' actual lengths. Speakers without such an utterance are skipped.

Text normalisation for WER is deliberately simple: Unicode folded to ASCII, lower case, punctuation removed
(apostrophes inside words kept: the recogniser's dictionary has "it's"), whitespace collapsed. Numbers are not
spelled out as espeak-ng would say them, so sentences with digits count against both systems alike.

Case selection is deterministic: the targets are a seeded shuffle of the eligible utterances and case i draws its
prompts from a generator seeded by (seed, i), so the first k cases do not depend on n. This module never loads a TTS
model: the CLI passes a `synthesize(text, prompt_wav, prompt_text) -> wav16k` callable (`pipeline_synthesizer`).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from model.audio import SAMPLE_RATE, load_audio, resample
from model.recognizer import normalize_transcript as normalize_text
from model.recognizer import transcribe
from training import metrics
from training.evaluate import (
    _cell,
    _checked,
    _engine,
    _finite,
    _nanmean,
    _utterances,
    save_spectrograms,
    write_json,
)
from training.manifest import ManifestError, Utterance

log = logging.getLogger(__name__)

Synthesize = Callable[[str, np.ndarray, str], np.ndarray]  # (text, 16 kHz prompt, prompt transcript) -> 16 kHz wav

PROMPT_SECONDS = 3.0
TARGET_RANGE_S = (2.0, 10.0)  # DNSMOS needs >= 1 s; very short sentences have too few words for a WER
# Pocketsphinx decodes the audio as it is: no dither, no added noise floor. Both were tried against the digital
# silence of synthetic speech (12-15 real recordings of each unseen corpus speaker): they moved espeak-ng voices'
# WER from ~0.95 to ~0.90 but made flite / festival worse (0.21 -> 0.24-0.32), and pocketsphinx's dither is random per
# call (the same espeak-ng clip decoded with 4 to 8 errors out of 9 words). Each clip is decoded from a fresh stream
# (`reinit_feat`): without it, the transcript of a clip depends on the clips decoded before it.
UNINFORMATIVE_WER = 0.8  # ground-truth WER above this: the report warns that the ratio has no room to move
MIN_EMBED_SECONDS = 0.1  # after resemblyzer's silence trimming; less than this is no voice to compare
SYSTEMS = ("ground_truth", "ours", "different_speaker")
SYSTEM_LABELS = {
    "ground_truth": "ground truth (real recording)",
    "ours": "SpeechFlow (ours)",
    "different_speaker": "different speaker (reference)",
}
METRICS = ("wer", "speaker_sim", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak")
METRIC_LABELS = {
    "wer": "WER ↓",
    "speaker_sim": "speaker sim. vs prompt ↑",
    "dnsmos_ovrl": "DNSMOS OVRL ↑",
    "dnsmos_sig": "DNSMOS SIG ↑",
    "dnsmos_bak": "DNSMOS BAK ↑",
}


@dataclass
class TTSCase:
    """One cross-sentence test item: synthesise `text` in the voice of `prompt` (whose transcript is `prompt_text`);
    `target` is the real recording of `text` by the prompt's speaker, `other_prompt` a prompt of another speaker
    (the different-speaker reference). `info` says where everything came from (JSON-serialisable)."""

    id: str
    text: str
    target: np.ndarray
    prompt: np.ndarray
    prompt_text: str
    other_prompt: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------- test sets


def _speaker(utt: Utterance) -> str:
    return str(utt.meta.get("speaker") or "")


def _text(utt: Utterance) -> str:
    return str(utt.meta.get("text") or "").strip()


def tts_cases(
    manifest: str | os.PathLike | Sequence[Utterance],
    n: int,
    seed: int = 0,
    prompt_seconds: float = PROMPT_SECONDS,
    prompt_range: tuple[float, float] | None = None,
    target_range: tuple[float, float] = TARGET_RANGE_S,
) -> list[TTSCase]:
    """n cross-sentence cases from a manifest of unseen speakers (rows with audio, duration, speaker, text).

    Targets: n distinct utterances of `target_range` seconds (a seeded shuffle) whose speaker has an utterance of
    another sentence usable as a prompt. Prompt: such an utterance, whole, lasting `prompt_range` seconds (default
    prompt_seconds - 0.5 .. prompt_seconds + 1.5, i.e. 2.5-4.5 s for 3 s), drawn per case; the different-speaker
    reference prompt is drawn from another speaker the same way. Needs >= 2 such speakers. Rows without speaker or
    text are ignored; the manifest should hold speakers unseen in training (the corpus's test split does).
    """
    if n < 1:
        raise ValueError(f"need n >= 1 cases, got {n}")
    low, high = prompt_range if prompt_range is not None else (prompt_seconds - 0.5, prompt_seconds + 1.5)
    utts = [u for u in _utterances(manifest) if _speaker(u) and _text(u)]
    prompts: dict[str, list[int]] = {}
    for k, u in enumerate(utts):
        if low <= u.duration <= high:
            prompts.setdefault(_speaker(u), []).append(k)
    speakers = sorted({_speaker(u) for u in utts})
    skipped = [s for s in speakers if s not in prompts]
    if skipped:
        log.warning("no utterance of %.1f-%.1f s to use as a prompt for %s: skipped", low, high, ", ".join(skipped))
    if len(prompts) < 2:
        raise ManifestError(
            f"TTS evaluation needs utterances with 'speaker' and 'text' from at least two speakers that each have a "
            f"{low:.1f}-{high:.1f} s utterance for a prompt; found {len(prompts)}"
        )

    def prompts_for(k: int) -> list[int]:  # same speaker, another sentence (not just another recording of it)
        key = normalize_text(_text(utts[k]))
        return [p for p in prompts.get(_speaker(utts[k]), []) if normalize_text(_text(utts[p])) != key]

    targets = [k for k, u in enumerate(utts) if target_range[0] <= u.duration <= target_range[1] and prompts_for(k)]
    if not targets:
        raise ManifestError(f"no target utterances of {target_range[0]:g}-{target_range[1]:g} s with a prompt")
    if n > len(targets):
        log.warning("asked for %d TTS cases, the manifest has %d usable targets; using all", n, len(targets))
    order = np.random.default_rng(seed).permutation(len(targets))[:n]
    cache: dict[int, np.ndarray] = {}

    def load(k: int) -> np.ndarray:
        if k not in cache:
            cache[k] = load_audio(utts[k].audio)
        return cache[k]

    cases = []
    for i, t in enumerate(order):
        k = targets[t]
        target, speaker = utts[k], _speaker(utts[k])
        rng = np.random.default_rng([seed, i])
        same = prompts_for(k)
        p = same[int(rng.integers(len(same)))]
        others = [s for s in sorted(prompts) if s != speaker]
        other_speaker = others[int(rng.integers(len(others)))]
        q = prompts[other_speaker][int(rng.integers(len(prompts[other_speaker])))]
        prompt_wav = load(p)
        info = {
            "speaker": speaker,
            "engine": _engine(speaker),
            "target_audio": str(target.audio),
            "target_s": len(load(k)) / SAMPLE_RATE,
            "prompt_audio": str(utts[p].audio),
            "prompt_s": len(prompt_wav) / SAMPLE_RATE,
            "other_speaker": other_speaker,
            "other_audio": str(utts[q].audio),
        }
        cases.append(TTSCase(f"{i:04d}-{target.audio.stem}", _text(target), load(k), prompt_wav, _text(utts[p]),
                             load(q), info))
    return cases


# ------------------------------------------------------------------------------------------------------- metrics


def word_errors(reference_text: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after `normalize_text` on both, via jiwer."""
    jiwer = metrics._require("jiwer")
    ref, hyp = normalize_text(reference_text), normalize_text(hypothesis)
    if not ref:
        return len(hyp.split()), 0
    if not hyp:
        return len(ref.split()), len(ref.split())
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, len(ref.split())


def wer(reference_text: str, wav: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Word error rate of pocketsphinx's transcript of `wav` against `reference_text` (0 = perfect; can exceed 1
    with insertions). NaN when the reference has no words."""
    errors, words = word_errors(reference_text, transcribe(wav, sr))
    return errors / words if words else math.nan


@functools.lru_cache(maxsize=1)
def _voice_encoder():  # -> resemblyzer.VoiceEncoder on CPU (weights ship with the package), built once per process
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # webrtcvad imports pkg_resources, scipy.ndimage.morphology is deprecated
        resemblyzer = metrics._require("resemblyzer")
    return resemblyzer, resemblyzer.VoiceEncoder(device="cpu", verbose=False)


def speaker_embedding(wav: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """resemblyzer's d-vector (256,) of a waveform after its own preprocessing (volume, long silences trimmed);
    NaNs when less than 0.1 s of voice is left (silence has no speaker)."""
    resemblyzer, encoder = _voice_encoder()
    x = np.asarray(wav, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {x.shape}")
    x = resample(x, sr, resemblyzer.sampling_rate) if sr != resemblyzer.sampling_rate else x
    if x.size and np.abs(x).max() > 0:
        x = resemblyzer.preprocess_wav(x)
    if x.size < MIN_EMBED_SECONDS * resemblyzer.sampling_rate or not np.any(x):
        return np.full(256, np.nan, dtype=np.float32)
    return np.asarray(encoder.embed_utterance(x), dtype=np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings; NaN if either is undefined (NaN) or zero."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norm if math.isfinite(norm) and norm > 0 else math.nan


def speaker_similarity(wav_a: np.ndarray, wav_b: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Cosine similarity of the resemblyzer embeddings of two waveforms (about 1 = same voice)."""
    return cosine(speaker_embedding(wav_a, sr), speaker_embedding(wav_b, sr))


# ------------------------------------------------------------------------------------------------------- scoring


def _intelligibility(text: str, wav: np.ndarray) -> dict[str, Any]:
    hypothesis = transcribe(wav)
    errors, words = word_errors(text, hypothesis)
    return {"hypothesis": hypothesis, "errors": errors, "words": words, "wer": errors / words if words else math.nan}


def _quality(wav: np.ndarray, use_dnsmos: bool) -> dict[str, float]:
    return {f"dnsmos_{k}": v for k, v in metrics.dnsmos(wav).items()} if use_dnsmos else {}


def score_tts_case(case: TTSCase, ours: np.ndarray, use_dnsmos: bool = True) -> dict[str, Any]:
    """One case -> {"id", "info", "scores": {system: {metric: value}}}; WER rows also carry the transcript and the
    error / word counts that the corpus-level WER sums."""
    emb = {name: speaker_embedding(w) for name, w in
           (("ours", ours), ("target", case.target), ("prompt", case.prompt), ("other", case.other_prompt))}
    scores = {
        "ground_truth": _intelligibility(case.text, case.target)
        | {"speaker_sim": cosine(emb["target"], emb["prompt"])}
        | _quality(case.target, use_dnsmos),
        "ours": _intelligibility(case.text, ours)
        | {"speaker_sim": cosine(emb["ours"], emb["prompt"]), "seconds": len(ours) / SAMPLE_RATE}
        | _quality(ours, use_dnsmos),
        "different_speaker": {"speaker_sim": cosine(emb["target"], emb["other"])},
    }
    return {"id": case.id, "info": case.info | {"text": case.text, "prompt_text": case.prompt_text}, "scores": scores}


def _corpus_wer(rows: Sequence[Mapping[str, Any]], system: str) -> float:
    errors = sum(r["scores"][system]["errors"] for r in rows)
    words = sum(r["scores"][system]["words"] for r in rows)
    return errors / words if words else math.nan


def _aggregate(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Per system: corpus-level WER, means of the other metrics (NaNs skipped); plus the two headline figures."""
    overall: dict[str, dict[str, float]] = {}
    for system in SYSTEMS:
        present = [m for m in names if m in rows[0]["scores"][system]]
        overall[system] = {m: (_corpus_wer(rows, system) if m == "wer" else
                               _nanmean(r["scores"][system][m] for r in rows)) for m in present}
    gt_wer, our_wer = overall["ground_truth"]["wer"], overall["ours"]["wer"]
    same, diff = overall["ground_truth"]["speaker_sim"], overall["different_speaker"]["speaker_sim"]
    ours_sim = overall["ours"]["speaker_sim"]
    return {
        "overall": overall,
        "wer_ratio": our_wer / gt_wer if _finite(our_wer) and _finite(gt_wer) and gt_wer > 0 else math.nan,
        # 0 = no closer to the prompt's speaker than another speaker is, 1 = as close as the speaker's own recording
        "similarity_position": (ours_sim - diff) / (same - diff) if all(map(_finite, (ours_sim, same, diff)))
        and same != diff else math.nan,
    }


def _summarize(rows: list[dict[str, Any]], names: list[str], synth_s: float) -> dict[str, Any]:
    groups: dict[str, dict[str, Any]] = {}
    for group, key in (("engine", "engine"), ("speaker", "speaker")):
        groups[group] = {}
        for bucket in sorted({r["info"][key] for r in rows}):
            subset = [r for r in rows if r["info"][key] == bucket]
            groups[group][bucket] = {"n": len(subset)} | _aggregate(subset, names)
    nan_counts = {s: {m: sum(1 for r in rows if not _finite(r["scores"][s][m])) for m in names
                      if m in rows[0]["scores"][s]} for s in SYSTEMS}
    prompt_s = [r["info"]["prompt_s"] for r in rows]
    audio_s = sum(r["scores"]["ours"]["seconds"] for r in rows)
    return {
        "task": "tts",
        "n": len(rows),
        "systems": list(SYSTEMS),
        "system_labels": dict(SYSTEM_LABELS),
        "metrics": names,
        **_aggregate(rows, names),
        "groups": groups,
        "nan_counts": nan_counts,
        "prompts": {"mean_s": float(np.mean(prompt_s)), "min_s": min(prompt_s), "max_s": max(prompt_s)},
        "timing": {"synthesis_s": synth_s, "audio_s": audio_s, "rtf": synth_s / audio_s if audio_s else math.nan},
        "cases": rows,
    }


def evaluate_tts(
    synthesize: Synthesize,
    cases: Sequence[TTSCase],
    *,
    use_dnsmos: bool = True,
    progress: bool = True,
    on_output: Callable[[TTSCase, np.ndarray], None] | None = None,
) -> dict[str, Any]:
    """Synthesise every case and score it against its references -> results dict.

    results: overall[system][metric] for ground_truth / ours / different_speaker (WER corpus-level, the rest means),
    wer_ratio (ours / ground truth), similarity_position, the same per engine and per speaker under groups, NaN
    counts, prompt lengths, synthesis timing (real-time factor) and every per-case row. `on_output(case, wav)` sees
    each output (e.g. to keep a few for pictures).
    """
    if not cases:
        raise ValueError("no cases to evaluate")
    names = list(METRICS) if use_dnsmos else [m for m in METRICS if not m.startswith("dnsmos")]
    rows, spent = [], 0.0
    for case in tqdm(cases, desc="evaluate tts", unit="utt", disable=not progress):
        t0 = time.perf_counter()
        out = synthesize(case.text, case.prompt, case.prompt_text)
        spent += time.perf_counter() - t0
        ours = _checked(out, case, 1)  # type: ignore[arg-type]  # needs only .id
        if on_output is not None:
            on_output(case, ours)
        rows.append(score_tts_case(case, ours, use_dnsmos))
    return _summarize(rows, names, spent)


def pipeline_synthesizer(pipeline: Any, **tts_kwargs: Any) -> Synthesize:
    """A `synthesize` callable from a loaded `SpeechFlowPipeline` (tts_kwargs: speed, steps, solver, guidance,
    seed)."""

    def synthesize(text: str, prompt_wav: np.ndarray, prompt_text: str) -> np.ndarray:
        wav, sr = pipeline.tts(text, prompt_wav=prompt_wav, prompt_sr=SAMPLE_RATE, prompt_text=prompt_text,
                               **tts_kwargs)
        return resample(np.asarray(wav, np.float32), sr, SAMPLE_RATE)

    return synthesize


# -------------------------------------------------------------------------------------------------------- report


def _fmt(metric: str, value: float | None) -> str:
    if not _finite(value):
        return "n/a"
    return f"{value:.1%}" if metric == "wer" else f"{value:.3f}" if metric == "speaker_sim" else f"{value:.2f}"


def _table(results: Mapping[str, Any], entry: Mapping[str, Any], first: str = "") -> list[str]:
    """Markdown rows: one per system, a column per metric ("—" where a metric does not apply)."""
    names = results["metrics"]
    lead = [first] if first else []
    lines = [
        "| " + " | ".join([*lead, "system", *(METRIC_LABELS.get(m, m) for m in names)]) + " |",
        "|" + "---|" * (len(lead) + 1 + len(names)),
    ]
    for system in results["systems"]:
        values = entry["overall"][system]
        cells = [_fmt(m, values[m]) if m in values else "—" for m in names]
        lines.append("| " + " | ".join(_cell(c) for c in [*lead, results["system_labels"][system], *cells]) + " |")
    return lines


def _headline(entry: Mapping[str, Any]) -> str:
    ratio, position = entry["wer_ratio"], entry["similarity_position"]
    return (f"WER ratio ours / ground truth **{ratio:.2f}**" if _finite(ratio) else "WER ratio n/a") + "; " + (
        f"similarity position **{position:.2f}**" if _finite(position) else "similarity position n/a")


def _wer_caveat(results: Mapping[str, Any], limit: float = UNINFORMATIVE_WER) -> list[str]:
    """A warning when the recogniser misses most words of the real recordings: the ratio then has no room to move."""
    if not (_finite(results["overall"]["ground_truth"]["wer"]) and results["overall"]["ground_truth"]["wer"] > limit):
        return []
    usable = [f"{bucket} ({_headline(entry)})" for bucket, entry in results["groups"]["engine"].items()
              if _finite(entry["overall"]["ground_truth"]["wer"]) and entry["overall"]["ground_truth"]["wer"] <= limit]
    return [f"- Pocketsphinx misses more than {limit:.0%} of the words of the real recordings, so the overall WER ratio"
            " says little; " + ("read it per engine where the ground truth is recognised: " + "; ".join(usable)
                                if usable else "no engine's recordings are recognised well enough") + "."]


def write_tts_report(
    results: Mapping[str, Any],
    out_md: str | os.PathLike,
    pictures: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = (),
) -> None:
    """Markdown report in the style of the enhancement report: configuration, the overall table, headline figures,
    per-engine / per-speaker tables, notes and spectrogram PNGs (prompt / ours / ground truth) as `<stem>_NN.png`."""
    out_md = Path(out_md)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    prompts, timing = results["prompts"], results["timing"]
    lines = ["# SpeechFlow evaluation: zero-shot text-to-speech", ""]
    lines += [f"- {k}: `{v}`" for k, v in results.get("config", {}).items()]
    lines += [
        f"- cases: {results['n']} (cross-sentence: unseen speakers, prompt = another utterance of the same speaker; "
        f"prompts {prompts['mean_s']:.2f} s on average, {prompts['min_s']:.2f}-{prompts['max_s']:.2f} s)",
        "",
        "## Overall",
        "",
        *_table(results, results),
        "",
        f"- {_headline(results)}.",
        "- WER ratio: pocketsphinx's WER on ours divided by its WER on the real recordings of the same sentences (the"
        " recogniser is weak on synthetic voices, so the ratio, not the absolute WER, is the figure; 1 = as"
        " intelligible as the real recording).",
        "- Similarity position: (ours - different speaker) / (ground truth - different speaker) of the speaker"
        " similarities; 0 = no closer to the prompt's voice than another speaker, 1 = as close as the speaker's own"
        " recording of another sentence.",
    ]
    lines += _wer_caveat(results)
    for group, buckets in results["groups"].items():
        lines += ["", f"## By {group}", ""]
        header = _table(results, results, first=group)[:2]
        body: list[str] = []
        for bucket, entry in buckets.items():
            body += _table(results, entry, first=f"{bucket} (n={entry['n']})")[2:]
        lines += header + body + [""] + [f"- {bucket}: {_headline(entry)}." for bucket, entry in buckets.items()]
    lines += [
        "",
        "## Notes",
        "",
        f"- Synthesis (ours): {timing['synthesis_s']:.1f} s for {timing['audio_s']:.1f} s of audio (real-time factor "
        f"{_fmt('rtf', timing['rtf'])}).",
        "- WER is corpus-level (summed errors / summed reference words); text is lower-cased with punctuation removed,"
        " numbers are not spelled out. Pocketsphinx decodes each clip whole with its bundled US-English model.",
        "- Speaker similarity: cosine of resemblyzer embeddings. Ground truth row = the real recording vs the prompt"
        " (same speaker); different speaker row = the real recording vs another unseen speaker's prompt.",
        "- Prompts are whole utterances (no crop: a crop would cut the transcript mid-word).",
    ]
    missing = {f"{s}/{m}": c for s, per in results["nan_counts"].items() for m, c in per.items() if c}
    if missing:
        lines.append("- Undefined scores (skipped in means): " + ", ".join(f"{k}: {v}" for k, v in missing.items()))
    if pictures:
        lines += ["", "## Spectrograms", ""]
        for i, (caption, prompt, ours, target) in enumerate(pictures):
            png = out_md.with_name(f"{out_md.stem}_{i:02d}.png")
            save_spectrograms(png, caption, [("prompt", prompt), ("ours", ours), ("ground truth", target)])
            lines += [f"### {caption}", "", f"![{caption}]({png.name})", ""]
    out_md.write_text("\n".join(lines).rstrip() + "\n")


# ------------------------------------------------------------------------------------------------- one-call entry


def run_tts_evaluation(
    synthesize: Synthesize,
    manifest: str | os.PathLike | Sequence[Utterance],
    n: int = 100,
    seed: int = 0,
    json_out: str | os.PathLike | None = None,
    report_out: str | os.PathLike | None = None,
    extra_config: Mapping[str, Any] | None = None,
    *,
    prompt_seconds: float = PROMPT_SECONDS,
    target_range: tuple[float, float] = TARGET_RANGE_S,
    use_dnsmos: bool = True,
    n_pictures: int = 3,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the cross-sentence test set, evaluate `synthesize`, write JSON and/or the Markdown report -> results.

    Cost per case besides synthesis: two pocketsphinx decodes (~0.3x real time each on a CPU core), four speaker
    embeddings and, with DNSMOS, two DNSMOS runs. `extra_config` (bundle, steps, ...) goes into results and report.
    """
    cases = tts_cases(manifest, n, seed, prompt_seconds, target_range=target_range)
    pictures: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []

    def keep(case: TTSCase, out: np.ndarray) -> None:
        if len(pictures) < n_pictures:
            pictures.append((f"{case.id} ({case.info['speaker']}): {case.text}", case.prompt, out, case.target))

    results = evaluate_tts(synthesize, cases, use_dnsmos=use_dnsmos, progress=progress, on_output=keep)
    source = manifest if isinstance(manifest, str | os.PathLike) else "(utterance list)"
    results["config"] = {"task": "tts", "manifest": str(source), "seed": seed, "prompt_seconds": prompt_seconds,
                         **dict(extra_config or {})}
    if json_out is not None:
        write_json(results, json_out)
    if report_out is not None:
        write_tts_report(results, report_out, pictures)
    return results
