"""Long inputs in overlapping windows: plan them, then stitch the generated windows back with linear cross-fades.

All windows of all requests go through the sampler as one batch; for separation, each window's speaker order is
matched to what is already stitched on their overlap, so speaker 1 stays speaker 1 across the whole recording.
"""

from __future__ import annotations

import torch
from torch import Tensor

WINDOW_S = 6.0  # long inputs are generated in windows of this length ...
OVERLAP_S = 1.0  # ... overlapping by this much, cross-faded


def window_spans(num_frames: int, frames_per_s: float, window_s: float = WINDOW_S,
                 overlap_s: float = OVERLAP_S) -> list[tuple[int, int]]:
    """`plan_windows` with the window and overlap given in seconds."""
    return plan_windows(num_frames, int(window_s * frames_per_s), int(overlap_s * frames_per_s))


def plan_windows(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) frame ranges covering ``num_frames``; consecutive windows share at least ``overlap`` frames."""
    if overlap < 0 or window <= 2 * overlap:
        raise ValueError(f"window ({window}) must exceed twice the overlap ({overlap})")
    if num_frames <= window:
        return [(0, num_frames)]
    hop = window - overlap
    starts = [*range(0, num_frames - window, hop), num_frames - window]  # the last one ends flush
    return [(s, s + window) for s in starts]


def match_order(reference: Tensor, window: Tensor, n_streams: int) -> Tensor:
    """Swap the two stacked streams of ``window`` (T, 2D) if that matches ``reference`` (O, 2D), which covers the
    window's first O frames, more closely. One stream: returned as is."""
    if n_streams == 1:
        return window
    if n_streams != 2:
        raise ValueError("speaker-order matching is implemented for two streams")
    a, b = window.chunk(2, dim=-1)
    swapped = torch.cat([b, a], dim=-1)
    o = reference.shape[0]
    keep_err = (window[:o] - reference).pow(2).mean()
    swap_err = (swapped[:o] - reference).pow(2).mean()
    return swapped if swap_err < keep_err else window


def stitch(windows: list[Tensor], spans: list[tuple[int, int]], num_frames: int, n_streams: int = 1) -> Tensor:
    """Windows (T_w, D) at ``spans`` (from ``plan_windows``) -> (num_frames, D), linearly cross-faded over each
    overlap with what is already stitched."""
    out = torch.zeros(num_frames, windows[0].shape[-1], dtype=windows[0].dtype, device=windows[0].device)
    written = 0
    for (start, end), win in zip(spans, windows, strict=True):
        overlap = max(0, written - start)
        if overlap:
            win = match_order(out[start:written], win, n_streams)
            ramp = torch.linspace(0, 1, overlap + 2, dtype=out.dtype, device=out.device)[1:-1, None]
            out[start:written] = (1 - ramp) * out[start:written] + ramp * win[:overlap]
        out[start + overlap : end] = win[overlap:]
        written = max(written, end)
    return out
