"""A spoken example for demos and smoke tests, synthesised locally (nothing is downloaded)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import SAMPLE_RATE, prepare_waveform
from .errors import SpeechFlowError

EXAMPLE_TEXT = "The quick brown fox jumps over the lazy dog, and then it runs back home."


def example_speech(text: str = EXAMPLE_TEXT, voice: str = "en-us") -> tuple[np.ndarray, int]:
    """espeak-ng speech as (float32 (n,), 16000)."""
    if shutil.which("espeak-ng") is None:
        raise SpeechFlowError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "example.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(path), text], check=True, capture_output=True)
        wav, sr = sf.read(path, dtype="float32", always_2d=True)
    return prepare_waveform(wav, sr, SAMPLE_RATE), SAMPLE_RATE
