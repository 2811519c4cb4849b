"""Built-in TTS voices for a bundle: one prompt clip per speaker, from speakers never seen in training."""

from __future__ import annotations

import os

import numpy as np

from model.audio import SAMPLE_RATE

from .loading import load_mono
from .manifest import read_manifest, rows_with_phones


def pick_voices(manifest: str | os.PathLike, min_s: float = 3.0, max_s: float = 6.0,
                limit: int = 8) -> dict[str, tuple[np.ndarray, str]]:
    """name -> (16 kHz waveform, transcript): per speaker, the first utterance of 3-6 s with a transcript (cuts with
    phone alignments, so the transcript is the one the audio was made from)."""
    voices: dict[str, tuple[np.ndarray, str]] = {}
    for utt in rows_with_phones(read_manifest(manifest)):
        speaker = str(utt.meta.get("speaker", ""))
        if speaker and speaker not in voices and min_s <= utt.duration <= max_s and utt.meta.get("text"):
            voices[speaker] = (load_mono(utt.cut, SAMPLE_RATE), utt.meta["text"])
        if len(voices) >= limit:
            break
    return voices
