"""Zero-shot TTS evaluation: intelligibility (WER), speaker similarity and DNSMOS, each next to its reference.

Protocol (cross-sentence, as in the SpeechFlow / Voicebox papers): every case is a target sentence spoken by a
speaker never seen in training (the corpus's `test.jsonl`) and a prompt, a *different* utterance of the same speaker
with its transcript, of about 3 s. The system under test gets (target text, prompt audio, prompt transcript) and
returns the new sentence only (16 kHz, without the prompt); its output is compared with the real recording of the
same sentence:

- **Intelligibility**: WER of the recogniser's transcript (`model.recognizer`: Whisper tiny.en, offline, else
  pocketsphinx) against the text. A recogniser can be weak on synthetic voices (pocketsphinx misses most words of
  espeak-ng speech even as recorded), so the ground-truth recordings of the same sentences are transcribed too,
  and the figure is the ratio WER(ours) / WER(ground truth), both corpus-level (summed errors / summed reference
  words, not a mean of ratios).
- **Speaker similarity**: cosine of resemblyzer d-vectors, ours vs the prompt, next to two references: the real
  recording vs the prompt (same speaker, different sentence: what a perfect clone would score) and the real recording
  vs a different unseen speaker's prompt (what no cloning at all scores).
- **DNSMOS** P.835 (OVRL / SIG / BAK) of ours and of the real recordings (`training.evaluation.metrics.dnsmos`).

Prompts are whole utterances whose length lies in `prompt_range` (default 2.5-4.5 s around the 3 s of the paper),
not 3 s crops: a crop would cut the prompt's transcript mid-word, and the corpus's phone times only say roughly
where words end. The report states the prompts' actual lengths. Speakers without such an utterance are skipped.

Text normalisation for WER is deliberately simple: Unicode folded to ASCII, lower case, punctuation removed
(apostrophes inside words kept: the recogniser's dictionary has "it's"), whitespace collapsed. Numbers are not
spelled out as espeak-ng would say them, so sentences with digits count against both systems alike.

This module is the public entry point (`run_tts_evaluation`, `pipeline_synthesizer` and the API the tests use); the
work is split under `training.evaluation`: `tts_cases` (deterministic case selection), `tts_metrics` (WER, speaker
similarity), `tts_scoring` (per case, summaries), `tts_report`. It never loads a TTS model: the CLI passes a
`synthesize(text, prompt_wav, prompt_text) -> wav16k` callable (`pipeline_synthesizer`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from model import recognizer
from model.audio import SAMPLE_RATE, resample
from model.errors import ConfigError
from model.recognizer import normalize_transcript as normalize_text
from model.recognizer import transcribe
from training.data.manifest import Utterance
from training.evaluation.common import write_json
from training.evaluation.markdown import Picture
from training.evaluation.real_cases import real_tts_cases
from training.evaluation.tts_cases import PROMPT_SECONDS, TARGET_RANGE_S, TTSCase, tts_cases
from training.evaluation.tts_metrics import (
    MIN_EMBED_SECONDS,
    cosine,
    speaker_embedding,
    speaker_similarity,
    wer,
    word_errors,
)
from training.evaluation.tts_references import Reference
from training.evaluation.tts_report import METRIC_LABELS, UNINFORMATIVE_WER, write_tts_report
from training.evaluation.tts_report import _wer_caveat as _wer_caveat  # the tests check it directly
from training.evaluation.tts_scoring import (
    METRICS,
    SYSTEM_LABELS,
    SYSTEMS,
    Synthesize,
    evaluate_tts,
    score_tts_case,
)

__all__ = [
    "METRICS",
    "METRIC_LABELS",
    "MIN_EMBED_SECONDS",
    "PROMPT_SECONDS",
    "SYSTEMS",
    "SYSTEM_LABELS",
    "TARGET_RANGE_S",
    "UNINFORMATIVE_WER",
    "Synthesize",
    "TTSCase",
    "cosine",
    "evaluate_tts",
    "normalize_text",
    "pipeline_synthesizer",
    "run_tts_evaluation",
    "score_tts_case",
    "speaker_embedding",
    "speaker_similarity",
    "transcribe",
    "tts_cases",
    "wer",
    "word_errors",
    "write_json",
    "write_tts_report",
]


def pipeline_synthesizer(pipeline: Any, **tts_kwargs: Any) -> Synthesize:
    """A `synthesize` callable from a loaded `SpeechFlowPipeline` (tts_kwargs: speed, steps, solver, guidance,
    seed)."""

    def synthesize(text: str, prompt_wav: np.ndarray, prompt_text: str) -> np.ndarray:
        wav, sr = pipeline.tts(text, prompt_wav=prompt_wav, prompt_sr=SAMPLE_RATE, prompt_text=prompt_text,
                               **tts_kwargs)
        return resample(np.asarray(wav, np.float32), sr, SAMPLE_RATE)

    return synthesize


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
    conditions: str = "synthetic",
    references: Mapping[str, Reference] | None = None,
) -> dict[str, Any]:
    """Build the cross-sentence test set, evaluate `synthesize`, write JSON and/or the Markdown report -> results.
    ``conditions="real"``: `manifest` is the real corpus's test split (`real_cases.real_tts_cases`: 3-6 s prompts).
    ``references``: fixed-voice engines saying every case's text, scored and timed beside ours (`tts_references`).

    Cost per case besides synthesis: two recogniser decodes (~0.2-0.3x real time each on a CPU core), four speaker
    embeddings and, with DNSMOS, two DNSMOS runs. `extra_config` (bundle, steps, ...) goes into results and report.
    """
    if conditions == "real":
        if not isinstance(manifest, str | os.PathLike):
            raise ConfigError("real conditions read the real corpus beside the manifest: give its path")
        cases = real_tts_cases(manifest, n, seed)
    else:
        cases = tts_cases(manifest, n, seed, prompt_seconds, target_range=target_range)
    pictures: list[Picture] = []

    def keep(case: TTSCase, out: np.ndarray) -> None:
        if len(pictures) < n_pictures:
            pictures.append((f"{case.id} ({case.info['speaker']}): {case.text}", case.prompt, out, case.target))

    results = evaluate_tts(synthesize, cases, use_dnsmos=use_dnsmos, progress=progress, on_output=keep,
                           references=references)
    source = manifest if isinstance(manifest, str | os.PathLike) else "(utterance list)"
    results["config"] = {"task": "tts", "manifest": str(source), "seed": seed, "conditions": conditions,
                         "prompt_seconds": "3-6 (real)" if conditions == "real" else prompt_seconds,
                         "recogniser": recognizer.backend(), **dict(extra_config or {})}
    if json_out is not None:
        write_json(results, json_out)
    if report_out is not None:
        write_tts_report(results, report_out, pictures)
    return results
