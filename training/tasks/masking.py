"""Masks for the pre-training condition: which frames the model must generate.

SpeechFlow: with probability p_uncond the whole condition is dropped; otherwise a fraction r ~ U(mask_min, mask_max)
of the frames is masked, in spans of at least ``min_span`` frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import Tensor


def _composition(rng: np.random.Generator, total: int, parts: int, minimum: int) -> np.ndarray:
    """Split ``total`` into ``parts`` random integers, each >= minimum (requires total >= parts * minimum)."""
    free = total - parts * minimum
    cuts = np.sort(rng.integers(0, free + 1, size=parts - 1))
    return np.diff(np.concatenate([[0], cuts, [free]])) + minimum


def span_mask(rng: np.random.Generator, length: int, fraction: float, min_span: int) -> np.ndarray:
    """Boolean (length,) with round(fraction * length) True frames in separated spans of >= min_span frames."""
    target = min(length, max(min_span, round(fraction * length)))
    mask = np.zeros(length, dtype=bool)
    if target >= length:
        mask[:] = True
        return mask
    unmasked = length - target
    # k spans need k-1 interior gaps of >= 1 frame so that spans stay separate (and each span >= min_span).
    max_spans = max(1, min(target // min_span, unmasked + 1))
    k = int(rng.integers(1, max_spans + 1))
    spans = _composition(rng, target, k, min_span)
    gaps = _composition(rng, unmasked - (k - 1), k + 1, 0)  # outer gaps may be empty ...
    gaps[1:-1] += 1  # ... interior ones are >= 1 frame
    pos = 0
    for gap, span in zip(gaps[:-1], spans, strict=True):
        pos += int(gap)
        mask[pos : pos + int(span)] = True
        pos += int(span)
    return mask


class MaskSettings(Protocol):
    """The masking recipe's knobs (FlowConfig for frames, DurationConfig for phones)."""

    p_uncond: float
    mask_min: float
    mask_max: float
    min_span: int


def pretraining_masks(rng: np.random.Generator, lengths: Sequence[int], max_len: int, cfg: MaskSettings) -> Tensor:
    """(B, max_len) bool: True = masked (to generate, counted by the loss); padding positions stay False.

    Per sequence: everything with probability p_uncond, else a share U(mask_min, mask_max) in spans >= min_span.
    """
    out = torch.zeros(len(lengths), max_len, dtype=torch.bool)
    for i, n in enumerate(lengths):
        if rng.random() < cfg.p_uncond:
            out[i, :n] = True
        else:
            fraction = rng.uniform(cfg.mask_min, cfg.mask_max)
            out[i, :n] = torch.from_numpy(span_mask(rng, int(n), fraction, cfg.min_span))
    return out
