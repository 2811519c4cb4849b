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


SECOND_TEXT = "Seven silver swans swam silently south of the old stone bridge."


def noisy_example(snr_db: float = 5.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) float32 (n,) at 16 kHz: the example sentence in pink noise at ``snr_db``."""
    clean, _ = example_speech()
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(len(clean)))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))  # 1/f power
    noise = np.fft.irfft(spectrum, n=len(clean)).astype(np.float32)
    noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return (clean + noise).astype(np.float32), clean


def mixture_example() -> tuple[np.ndarray, np.ndarray]:
    """(mixture (n,), sources (2, n)) at 16 kHz: two espeak-ng voices saying different sentences at once."""
    one, _ = example_speech()
    two, _ = example_speech(SECOND_TEXT, voice="en-gb+f3")
    n = min(len(one), len(two))
    sources = np.stack([one[:n], two[:n]])
    return sources.sum(0).astype(np.float32), sources


def write_examples(out: str | Path) -> list[Path]:
    """noisy.wav (+ its clean.wav) and mix.wav, 16 kHz: inputs for the README's curl examples."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    noisy, clean = noisy_example()
    mixture, _ = mixture_example()
    files = {"noisy.wav": noisy, "clean.wav": clean, "mix.wav": mixture}
    for name, wav in files.items():
        sf.write(out / name, wav, SAMPLE_RATE, subtype="PCM_16")
    return [out / name for name in files]
