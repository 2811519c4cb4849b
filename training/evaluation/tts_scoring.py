"""Scoring and running the TTS evaluation: each case's scores next to its references, and the summaries.

WER is corpus-level (summed errors / summed reference words, not a mean of ratios); the other metrics are means
that skip NaNs. The two headline figures compare ours with the references rather than stand alone, because the
recogniser and the speaker encoder are only trustworthy relative to the real recordings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from model.audio import SAMPLE_RATE
from model.recognizer import transcribe
from training.evaluation import metrics
from training.evaluation.common import checked, finite, nanmean
from training.evaluation.tts_cases import TTSCase
from training.evaluation.tts_metrics import cosine, speaker_embedding, word_errors
from training.evaluation.tts_references import REFERENCE_LABELS, Reference

Synthesize = Callable[[str, np.ndarray, str], np.ndarray]  # (text, 16 kHz prompt, prompt transcript) -> 16 kHz wav

SYSTEMS = ("ground_truth", "ours", "different_speaker")
SYSTEM_LABELS = {
    "ground_truth": "ground truth (real recording)",
    "ours": "SpeechFlow (ours)",
    "different_speaker": "different speaker (reference)",
}
METRICS = ("wer", "speaker_sim", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak")


def _intelligibility(text: str, wav: np.ndarray) -> dict[str, Any]:
    hypothesis = transcribe(wav)
    errors, words = word_errors(text, hypothesis)
    return {"hypothesis": hypothesis, "errors": errors, "words": words, "wer": errors / words if words else math.nan}


def _quality(wav: np.ndarray, use_dnsmos: bool) -> dict[str, float]:
    return {f"dnsmos_{k}": v for k, v in metrics.dnsmos(wav).items()} if use_dnsmos else {}


def score_tts_case(case: TTSCase, ours: np.ndarray, use_dnsmos: bool = True,
                   references: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """One case -> {"id", "info", "scores": {system: {metric: value}}}; WER rows also carry the transcript and the
    error / word counts that the corpus-level WER sums. ``references``: fixed-voice engines' outputs of the same
    text (`tts_references`), scored like ours."""
    emb = {name: speaker_embedding(w) for name, w in
           (("target", case.target), ("prompt", case.prompt), ("other", case.other_prompt))}

    def spoken(wav: np.ndarray) -> dict[str, Any]:
        return (_intelligibility(case.text, wav)
                | {"speaker_sim": cosine(speaker_embedding(wav), emb["prompt"]), "seconds": len(wav) / SAMPLE_RATE}
                | _quality(wav, use_dnsmos))

    scores = {
        "ground_truth": _intelligibility(case.text, case.target)
        | {"speaker_sim": cosine(emb["target"], emb["prompt"])}
        | _quality(case.target, use_dnsmos),
        "ours": spoken(ours),
        "different_speaker": {"speaker_sim": cosine(emb["target"], emb["other"])},
        **{name: spoken(wav) for name, wav in (references or {}).items()},
    }
    return {"id": case.id, "info": case.info | {"text": case.text, "prompt_text": case.prompt_text}, "scores": scores}


def _corpus_wer(rows: Sequence[Mapping[str, Any]], system: str) -> float:
    errors = sum(r["scores"][system]["errors"] for r in rows)
    words = sum(r["scores"][system]["words"] for r in rows)
    return errors / words if words else math.nan


def _aggregate(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Per system: corpus-level WER, means of the other metrics (NaNs skipped); plus the two headline figures."""
    overall: dict[str, dict[str, float]] = {}
    for system in rows[0]["scores"]:
        present = [m for m in names if m in rows[0]["scores"][system]]
        overall[system] = {m: (_corpus_wer(rows, system) if m == "wer" else
                               nanmean(r["scores"][system][m] for r in rows)) for m in present}
    gt_wer, our_wer = overall["ground_truth"]["wer"], overall["ours"]["wer"]
    same, diff = overall["ground_truth"]["speaker_sim"], overall["different_speaker"]["speaker_sim"]
    ours_sim = overall["ours"]["speaker_sim"]
    return {
        "overall": overall,
        "wer_ratio": our_wer / gt_wer if finite(our_wer) and finite(gt_wer) and gt_wer > 0 else math.nan,
        # 0 = no closer to the prompt's speaker than another speaker is, 1 = as close as the speaker's own recording
        "similarity_position": (ours_sim - diff) / (same - diff) if all(map(finite, (ours_sim, same, diff)))
        and same != diff else math.nan,
    }


def _summarize(rows: list[dict[str, Any]], names: list[str], spent: Mapping[str, float]) -> dict[str, Any]:
    groups: dict[str, dict[str, Any]] = {}
    for group, key in (("engine", "engine"), ("speaker", "speaker")):
        groups[group] = {}
        for bucket in sorted({r["info"][key] for r in rows}):
            subset = [r for r in rows if r["info"][key] == bucket]
            groups[group][bucket] = {"n": len(subset)} | _aggregate(subset, names)
    nan_counts = {s: {m: sum(1 for r in rows if not finite(r["scores"][s][m])) for m in names
                      if m in rows[0]["scores"][s]} for s in rows[0]["scores"]}
    prompt_s = [r["info"]["prompt_s"] for r in rows]
    timing = {}
    for system, seconds in spent.items():
        audio_s = sum(r["scores"][system]["seconds"] for r in rows)
        timing[system] = {"synthesis_s": seconds, "audio_s": audio_s, "rtf": seconds / audio_s if audio_s else math.nan}
    return {
        "task": "tts",
        "n": len(rows),
        "systems": list(rows[0]["scores"]),
        "system_labels": SYSTEM_LABELS | {name: REFERENCE_LABELS.get(name, name) for name in spent if name != "ours"},
        "metrics": names,
        **_aggregate(rows, names),
        "groups": groups,
        "nan_counts": nan_counts,
        "prompts": {"mean_s": float(np.mean(prompt_s)), "min_s": min(prompt_s), "max_s": max(prompt_s)},
        "timing": timing["ours"],  # ours; every system's (references too) under "timings"
        "timings": timing,
        "cases": rows,
    }


def evaluate_tts(
    synthesize: Synthesize,
    cases: Sequence[TTSCase],
    *,
    use_dnsmos: bool = True,
    progress: bool = True,
    on_output: Callable[[TTSCase, np.ndarray], None] | None = None,
    references: Mapping[str, Reference] | None = None,
) -> dict[str, Any]:
    """Synthesise every case and score it against its references -> results dict.

    results: overall[system][metric] for ground_truth / ours / different_speaker (WER corpus-level, the rest means),
    wer_ratio (ours / ground truth), similarity_position, the same per engine and per speaker under groups, NaN
    counts, prompt lengths, synthesis timing (real-time factor) and every per-case row. `on_output(case, wav)` sees
    each output (e.g. to keep a few for pictures). ``references`` (name -> text to 16 kHz speech) are fixed-voice
    engines run on every case's text, scored and timed like ours.
    """
    if not cases:
        raise ValueError("no cases to evaluate")
    names = list(METRICS) if use_dnsmos else [m for m in METRICS if not m.startswith("dnsmos")]
    references = dict(references or {})
    rows, spent = [], dict.fromkeys(["ours", *references], 0.0)

    def timed(system: str, case: TTSCase, make: Callable[..., np.ndarray], *args: Any) -> np.ndarray:
        t0 = time.perf_counter()
        out = make(*args)
        spent[system] += time.perf_counter() - t0
        return checked(out, case.id if system == "ours" else f"{case.id} ({system})", 1)

    for case in tqdm(cases, desc="evaluate tts", unit="utt", disable=not progress):
        ours = timed("ours", case, synthesize, case.text, case.prompt, case.prompt_text)
        if on_output is not None:
            on_output(case, ours)
        said = {name: timed(name, case, say, case.text) for name, say in references.items()}
        rows.append(score_tts_case(case, ours, use_dnsmos, said))
    return _summarize(rows, names, spent)
