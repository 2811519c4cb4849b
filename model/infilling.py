"""What infilling regenerates: time spans of a recording as the frames to generate. The pipeline plans the row
(`SpeechFlowPipeline.plan_infill`) and `model.editing.splice` puts the regenerated audio back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import SettingError

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
        raise SettingError("infill needs at least one span (start, end) in seconds", param="spans")
    for start, end in spans:
        if not (0 <= start < end) or start >= duration_s:
            raise SettingError(f"span ({start}, {end}) must satisfy 0 <= start < end and start < {duration_s:.2f} s",
                               param="spans")
        frames[int(np.floor(start * frames_per_s)) : int(np.ceil(min(end, duration_s) * frames_per_s)) + 1] = True
    return frames
