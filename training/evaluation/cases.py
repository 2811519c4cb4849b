"""Deterministic enhancement and separation test sets built from a clean manifest, and the classes they report by.

Case i is made with a generator seeded by (seed, i), so the same (manifest, seed) gives the same noisy inputs and
mixtures on any machine with the same noise kinds, and the first k cases do not depend on n.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.audio import SAMPLE_RATE, load_audio
from training.augmentation.mixing import AugmentConfig, make_noisy, mix_speakers
from training.augmentation.noise import NoiseBank
from training.data.cuts import ManifestError
from training.data.manifest import Utterance
from training.evaluation.common import engine, utterances

log = logging.getLogger("training.evaluation.evaluate")  # the public module's name: one logger per evaluation

LEVEL_SPLIT_DB = 2.5  # separation classes: talkers at similar level vs one clearly louder
SNR_BUCKET_DB = 5.0
BABBLE_SOURCES = 8  # utterances lent to the babble noise of the default noise bank


@dataclass
class Case:
    """One test item. `noisy` is the model input (noisy speech, or the two-talker mixture), `clean` the target ((n,)
    for enhancement, (2, n) for separation), `info` how the case was made (JSON-serialisable)."""

    id: str
    noisy: np.ndarray
    clean: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def _load(utt: Utterance, max_seconds: float | None) -> np.ndarray:
    wav = load_audio(utt.audio)
    return wav[: int(max_seconds * SAMPLE_RATE)] if max_seconds else wav


def _utt_info(utt: Utterance) -> dict[str, Any]:
    speaker = str(utt.meta.get("speaker", "unknown"))
    return {"audio": str(utt.audio), "speaker": speaker, "engine": engine(speaker)}


def _default_bank(utts: list[Utterance], pool: np.ndarray, max_seconds: float | None) -> NoiseBank:
    """Noise bank whose babble comes from test utterances that are not targets, when the manifest has any spare."""
    sources = [_load(utts[k], max_seconds) for k in pool[:BABBLE_SOURCES]]
    return NoiseBank(babble_sources=sources)


def enhancement_cases(
    manifest: str | os.PathLike | Sequence[Utterance],
    n: int,
    seed: int = 0,
    snr_db: tuple[float, float] = (0.0, 10.0),
    noise_bank: NoiseBank | None = None,
    max_seconds: float | None = None,
) -> list[Case]:
    """n noisy/clean pairs: n distinct utterances (a seeded shuffle), each mixed by `make_noisy` at an SNR drawn from
    `snr_db`, no reverberation. info: speaker, engine, noise kind, snr_db, ... (see `make_noisy`).

    The default noise bank offers every kind this machine has (babble from other test utterances; `sound-icons`
    clips when installed), so results match across machines with the same packages.
    """
    utts = utterances(manifest)
    if n > len(utts):
        log.warning("asked for %d enhancement cases, the manifest has %d utterances; using %d", n, len(utts), len(utts))
    order = np.random.default_rng(seed).permutation(len(utts))
    picks, spare = order[:n], order[n:]
    bank = noise_bank if noise_bank is not None else _default_bank(utts, spare if spare.size else order, max_seconds)
    cfg = AugmentConfig(snr_db=(float(snr_db[0]), float(snr_db[1])))
    cases = []
    for i, k in enumerate(picks):
        utt = utts[k]
        noisy, clean, info = make_noisy(np.random.default_rng([seed, i]), _load(utt, max_seconds), bank, cfg)
        cases.append(Case(f"{i:04d}-{utt.audio.stem}", noisy, clean, _utt_info(utt) | info))
    return cases


def level_class(rel_db: float | None) -> str:
    """Separation class by the talkers' relative level: similar (hardest to tell apart by loudness) or not."""
    if rel_db is None:
        return "unknown level"
    return f"within {LEVEL_SPLIT_DB:g} dB" if abs(rel_db) < LEVEL_SPLIT_DB else f"{LEVEL_SPLIT_DB:g} dB or more apart"


def snr_bucket(snr_db: float, width: float = SNR_BUCKET_DB) -> str:
    """Enhancement class by input SNR: the `width`-dB bin it falls in, e.g. "5-10 dB"."""
    low = width * math.floor(snr_db / width)
    return f"{low:g}-{low + width:g} dB"


def separation_cases(
    manifest: str | os.PathLike | Sequence[Utterance],
    n: int,
    seed: int = 0,
    rel_db: tuple[float, float] = (-5.0, 5.0),
    max_offset_s: float = 1.0,
    max_seconds: float | None = None,
) -> list[Case]:
    """n two-talker mixtures of different speakers (`mix_speakers`: relative level from `rel_db`, one talker starting
    up to `max_offset_s` later). Utterances without a speaker count as speakers of their own.

    info: speakers, engines, engine_pair (e.g. "espeak+flite"), rel_db, level (within 2.5 dB or not), offsets.
    """
    utts = utterances(manifest)
    speakers = [str(u.meta.get("speaker", f"utterance-{k}")) for k, u in enumerate(utts)]
    if len(set(speakers)) < 2:
        raise ManifestError("separation needs utterances of at least two different speakers")
    cache: dict[int, np.ndarray] = {}

    def load(k: int) -> np.ndarray:
        if k not in cache:
            cache[k] = _load(utts[k], max_seconds)
        return cache[k]

    cases = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        a = int(rng.integers(len(utts)))
        others = [k for k, s in enumerate(speakers) if s != speakers[a]]
        b = others[int(rng.integers(len(others)))]
        mixture, (s1, s2), mix_info = mix_speakers(rng, load(a), load(b), rel_db, max_offset_s)
        engines = [engine(speakers[a]), engine(speakers[b])]
        info = {
            "audio": [str(utts[a].audio), str(utts[b].audio)],
            "speakers": [speakers[a], speakers[b]],
            "engines": engines,
            "engine_pair": "+".join(sorted(engines)),
            "level": level_class(mix_info["rel_db"]),
        } | mix_info
        cases.append(Case(f"{i:04d}-{utts[a].audio.stem}+{utts[b].audio.stem}", mixture, np.stack([s1, s2]), info))
    return cases
