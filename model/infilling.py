"""What infilling regenerates and how it goes back into the recording: time spans as frames to generate, and the
generated audio spliced into the original inside them with short cross-fades. The pipeline plans the rows
(`SpeechFlowPipeline.plan_infill`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

CROSSFADE_S = 0.01  # splice regenerated spans into the original audio with 10 ms linear fades

Span = tuple[float, float]  # (start, end) in seconds


@dataclass
class InfillRequest:
    wav: np.ndarray  # (n,) or (n, channels), any rate
    sr: int
    spans: Sequence[Span]  # seconds


def span_frames(spans: Sequence[Span], duration_s: float, frames_per_s: float, num_frames: int) -> np.ndarray:
    """(num_frames,) bool: True on the frames the spans cover (whole frames, so the boundary frames too)."""
    frames = np.zeros(num_frames, dtype=bool)
    if not spans:
        raise ConfigError("infill needs at least one span (start, end) in seconds")
    for start, end in spans:
        if not (0 <= start < end) or start >= duration_s:
            raise ConfigError(f"span ({start}, {end}) must satisfy 0 <= start < end and start < {duration_s:.2f} s")
        frames[int(np.floor(start * frames_per_s)) : int(np.ceil(min(end, duration_s) * frames_per_s)) + 1] = True
    return frames


def splice(original: np.ndarray, generated: np.ndarray, spans: Sequence[Span], sr: int) -> np.ndarray:
    """Take ``generated`` inside the spans and ``original`` elsewhere, with short linear cross-fades (both 1-D at sr).
    """
    n = len(original)
    generated = np.pad(generated, (0, max(0, n - len(generated))))[:n]
    weight = np.zeros(n, dtype=np.float32)  # 1 = generated
    fade = max(1, int(CROSSFADE_S * sr))
    for start, end in spans:
        a, b = int(start * sr), min(n, int(end * sr))
        weight[a:b] = 1.0
        ramp_in = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        lo = max(0, a - fade)
        weight[lo:a] = np.maximum(weight[lo:a], ramp_in[fade - (a - lo):])
        hi = min(n, b + fade)
        weight[b:hi] = np.maximum(weight[b:hi], ramp_in[::-1][: hi - b])
    return (weight * generated + (1 - weight) * original).astype(np.float32)
