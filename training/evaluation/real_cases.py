"""The real-speech test conditions, built from the real corpus (`training.data.real_corpus`): its test split is the
held-out speaker's recordings, and the interferers are real too.

TTS: the held-out speaker cloned from her own 3-6 s English prompts, saying her other English prompts.

Enhancement: every one of ``utterances`` English test prompts (3 s or longer, a seeded pick) under every noise kind
(white, pink, babble of 3-6 other real talkers from the corpus's valid split, never trained on, and the held-out
music track) at every SNR (0, 5, 10 dB on active speech): 8 x 4 x 3 = 96 cases by default. Separation: a test
prompt and a valid-split prompt of another real talker at 0 dB, the second starting up to half a second later.

Case i of a grid is made with a generator seeded by (seed, i), so a (corpus, seed) pair gives the same cases on any
machine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.audio import load_audio
from training.augmentation.mixing import AugmentConfig, make_noisy, mix_speakers
from training.augmentation.noise import NoiseBank
from training.data.cuts import ManifestError
from training.data.manifest import Utterance
from training.evaluation.cases import Case, level_class
from training.evaluation.common import utterances
from training.evaluation.tts_cases import TTSCase, tts_cases

REAL_NOISES = ("white", "pink", "babble", "music")
REAL_SNRS_DB = (0.0, 5.0, 10.0)
MIN_SECONDS = 3.0
BABBLE_SOURCES = 24


def _corpus(manifest: str | os.PathLike) -> Path:
    folder = Path(manifest).parent
    if not (folder / "valid_cuts.jsonl.gz").is_file():
        raise ManifestError(f"real conditions need the real corpus beside {manifest} (its valid_cuts.jsonl.gz gives "
                            "the babble talkers): build it with scripts/real-speech-corpus.sh")
    return folder


def _pick(utts: Sequence[Utterance], n: int, seed: int, language: str | None) -> list[Utterance]:
    """``n`` utterances of at least MIN_SECONDS (in ``language``), a seeded pick in a stable order."""
    fit = [u for u in utts if u.duration >= MIN_SECONDS and (language is None or _language(u) == language)]
    if len(fit) < n:
        raise ManifestError(f"the test split has {len(fit)} prompts of {MIN_SECONDS:g} s or more"
                            f"{f' in {language}' if language else ''}; {n} asked for")
    order = np.random.default_rng(seed).permutation(len(fit))
    return [fit[k] for k in sorted(order[:n])]


def real_enhancement_cases(manifest: str | os.PathLike, utterances_per_condition: int = 8, seed: int = 0,
                           noises: Sequence[str] = REAL_NOISES, snrs_db: Sequence[float] = REAL_SNRS_DB,
                           language: str | None = "en-US") -> list[Case]:
    """Every picked test prompt x noise kind x SNR. info: speaker, noise, snr_db (as `make_noisy` reports)."""
    folder = _corpus(manifest)
    targets = _pick(utterances(manifest), utterances_per_condition, seed, language)
    talkers = utterances(folder / "valid_cuts.jsonl.gz")
    order = np.random.default_rng([seed, 1]).permutation(len(talkers))[:BABBLE_SOURCES]
    music = [load_audio(p) for p in sorted((folder / "music" / "test").glob("*.flac"))] if "music" in noises else []
    if "music" in noises and not music:
        raise ManifestError(f"no held-out music in {folder / 'music' / 'test'}")
    bank = NoiseBank(babble_sources=[load_audio(talkers[k].audio) for k in order], clip_dir=None, music=music)
    cases = []
    for utt in targets:
        clean = load_audio(utt.audio)
        for noise in noises:
            for snr in snrs_db:
                i = len(cases)
                cfg = AugmentConfig(snr_db=(float(snr), float(snr)), noise_weights={noise: 1.0})
                noisy, target, info = make_noisy(np.random.default_rng([seed, i]), clean, bank, cfg)
                info |= {"audio": str(utt.audio), "speaker": str(utt.meta.get("speaker")), "engine": "real"}
                cases.append(Case(f"{i:04d}-{utt.audio.stem}-{noise}-{snr:g}dB", noisy, target, info))
    return cases


def real_separation_cases(manifest: str | os.PathLike, n: int, seed: int = 0, language: str | None = "en-US",
                          max_offset_s: float = 0.5) -> list[Case]:
    """``n`` mixtures at 0 dB of a test prompt and a valid-split prompt of another real talker."""
    folder = _corpus(manifest)
    targets = _pick(utterances(manifest), n, seed, language)
    others = [u for u in utterances(folder / "valid_cuts.jsonl.gz") if u.duration >= MIN_SECONDS / 2]
    if not others:
        raise ManifestError(f"no valid-split prompts in {folder} to mix with")
    cases = []
    for i, utt in enumerate(targets):
        rng = np.random.default_rng([seed, i])
        other = others[int(rng.integers(len(others)))]
        a, b = load_audio(utt.audio), load_audio(other.audio)
        mixture, (s1, s2), mix_info = mix_speakers(rng, a, b, (0.0, 0.0), max_offset_s)
        speakers = [str(utt.meta.get("speaker")), str(other.meta.get("speaker"))]
        info = {"audio": [str(utt.audio), str(other.audio)], "speakers": speakers, "engines": ["real", "real"],
                "engine_pair": "real+real", "level": level_class(mix_info["rel_db"])} | mix_info
        cases.append(Case(f"{i:04d}-{utt.audio.stem}+{other.audio.stem}", mixture, np.stack([s1, s2]), info))
    return cases


def real_tts_cases(manifest: str | os.PathLike, n: int, seed: int = 0, language: str = "en-US",
                   prompt_range: tuple[float, float] = (3.0, 6.0)) -> list[TTSCase]:
    """``n`` cross-sentence cases cloning the held-out speaker from her own 3-6 s recordings in ``language``; the
    different-speaker references are real talkers of the corpus's valid split."""
    folder = _corpus(manifest)
    test = [u for u in utterances(manifest) if _language(u) == language]
    return tts_cases([*test, *utterances(folder / "valid_cuts.jsonl.gz")], n, seed, prompt_range=prompt_range,
                     is_target=lambda u: _language(u) == language)


def _language(utt: Utterance) -> str | None:
    return utt.cut.supervisions[0].language if utt.cut is not None and utt.cut.supervisions else None
