"""The speech recogniser the project uses (pocketsphinx with its bundled en-us model): WER in the TTS evaluation,
and transcripts of uploaded voices that come without one. Optional: ``speechflow[asr]`` (or ``[eval]``) installs it."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
import unicodedata
from typing import Any

import numpy as np

from .audio import SAMPLE_RATE, resample


def normalize_transcript(text: str) -> str:
    """Text as compared by WER: ASCII-folded, lower case, punctuation dropped (inner apostrophes kept)."""
    text = unicodedata.normalize("NFKD", text.replace("’", "'")).encode("ascii", "ignore").decode().lower()
    words = re.sub(r"[^a-z0-9']+", " ", text).split()
    return " ".join(w.strip("'") for w in words if w.strip("'"))


def available() -> bool:
    return importlib.util.find_spec("pocketsphinx") is not None


@functools.lru_cache(maxsize=1)
def _decoder() -> Any:  # pocketsphinx.Decoder with the bundled en-us model, built once per process
    try:
        pocketsphinx = importlib.import_module("pocketsphinx")
    except ImportError as e:
        raise ImportError(f"pocketsphinx is needed to transcribe: pip install 'speechflow[asr]' ({e})") from e
    return pocketsphinx.Decoder(loglevel="FATAL")


def transcribe(wav: np.ndarray, sr: int = SAMPLE_RATE) -> str:
    """Pocketsphinx's best hypothesis for a waveform (any rate; 16 kHz mono int16 is what it decodes), normalised.

    Deterministic: each clip is decoded whole from a fresh stream, so the same audio always gives the same
    transcript, whatever was decoded before. Empty audio gives "".
    """
    x = np.asarray(wav, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {x.shape}")
    if sr != SAMPLE_RATE:
        x = resample(x, sr, SAMPLE_RATE)
    if x.size == 0:
        return ""
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    decoder = _decoder()
    decoder.reinit_feat()  # forget the previous clips (noise / CMN state): same audio, same transcript, any order
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return normalize_transcript(hyp.hypstr) if hyp is not None else ""
