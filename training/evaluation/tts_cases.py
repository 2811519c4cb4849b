"""Cross-sentence zero-shot TTS test cases: a target sentence of an unseen speaker, a prompt of the same speaker
saying something else, and another speaker's prompt for the different-speaker reference.

Selection is deterministic: the targets are a seeded shuffle of the eligible utterances and case i draws its
prompts from a generator seeded by (seed, i), so the first k cases do not depend on n.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.audio import SAMPLE_RATE, load_audio
from model.recognizer import normalize_transcript as normalize_text
from training.data.cuts import ManifestError
from training.data.manifest import Utterance
from training.evaluation.common import engine, utterances

log = logging.getLogger("training.evaluation.evaluate_tts")  # the public module's name: one logger per evaluation

PROMPT_SECONDS = 3.0
TARGET_RANGE_S = (2.0, 10.0)  # DNSMOS needs >= 1 s; very short sentences have too few words for a WER


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
    is_target: Callable[[Utterance], bool] | None = None,
) -> list[TTSCase]:
    """n cross-sentence cases from a manifest of unseen speakers (rows with audio, duration, speaker, text).

    Targets: n distinct utterances of `target_range` seconds (a seeded shuffle) whose speaker has an utterance of
    another sentence usable as a prompt. Prompt: such an utterance, whole, lasting `prompt_range` seconds (default
    prompt_seconds - 0.5 .. prompt_seconds + 1.5, i.e. 2.5-4.5 s for 3 s), drawn per case; the different-speaker
    reference prompt is drawn from another speaker the same way. Needs >= 2 such speakers. Rows without speaker or
    text are ignored; the manifest should hold speakers unseen in training (the corpus's test split does).
    ``is_target`` limits the targets (and so the cloned speakers), e.g. to one language; the others still serve as
    different-speaker references.
    """
    if n < 1:
        raise ValueError(f"need n >= 1 cases, got {n}")
    low, high = prompt_range if prompt_range is not None else (prompt_seconds - 0.5, prompt_seconds + 1.5)
    utts = [u for u in utterances(manifest) if _speaker(u) and _text(u)]
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

    targets = [k for k, u in enumerate(utts) if target_range[0] <= u.duration <= target_range[1]
               and (is_target is None or is_target(u)) and prompts_for(k)]
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
            "engine": engine(speaker),
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
