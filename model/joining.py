"""Joining consecutive audio chunks with short linear cross-fades, all at once or as they arrive (streaming)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class CrossfadeJoiner:
    """Feed chunks in order with ``push``: each call returns the samples that are final (all but the last
    ``fade`` samples seen, which the next chunk fades into); ``close`` returns the rest. The concatenation of what
    it returns equals `join_with_crossfade` of the same chunks."""

    def __init__(self, fade: int) -> None:
        self.fade = fade
        self._tail = np.zeros(0, np.float32)  # held back: the next chunk fades into it
        self._started = False

    def push(self, chunk: np.ndarray) -> np.ndarray:
        chunk = np.asarray(chunk, dtype=np.float32)
        if self._started:
            n = min(self.fade, len(self._tail), len(chunk))
            ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
            head = self._tail[len(self._tail) - n :] * (1 - ramp) + chunk[:n] * ramp
            chunk = np.concatenate([self._tail[: len(self._tail) - n], head, chunk[n:]])
        self._started = True
        keep = min(self.fade, len(chunk))
        ready, self._tail = chunk[: len(chunk) - keep], chunk[len(chunk) - keep :]
        return ready

    def close(self) -> np.ndarray:
        tail, self._tail = self._tail, np.zeros(0, np.float32)
        return tail


def join_with_crossfade(pieces: Sequence[np.ndarray], fade: int) -> np.ndarray:
    """Concatenate 1-D waveforms, overlapping each joint by ``fade`` samples with a linear cross-fade."""
    joiner = CrossfadeJoiner(fade)
    return np.concatenate([*(joiner.push(p) for p in pieces), joiner.close()])


def chunk_offsets(lengths: Sequence[int], fade: int) -> list[int]:
    """Where each chunk starts in the joined audio, in samples: the end of what came before, less the samples it
    fades into (as `CrossfadeJoiner` lays them out, short chunks included)."""
    offsets: list[int] = []
    total = tail = 0  # samples so far; of them, held back for the next fade
    for length in lengths:
        overlap = min(fade, tail, length) if offsets else 0
        offsets.append(total - overlap)
        tail = min(fade, tail - overlap + length)
        total += length - overlap
    return offsets
