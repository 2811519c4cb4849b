"""The frame budget: how many rows of which lengths may share one padded batch.

One rule for every place that packs sequences into a batch (training batches, the pipeline's generation rows, the
service's live batches): a batch's padded size, rows x longest, stays within ``budget`` frames and it holds at most
``cap`` rows; a row longer than the budget still runs, alone. Torch-free, so the service's scheduler can use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def fits(rows: int, longest: int, length: int, budget: int, cap: int | None = None) -> bool:
    """Whether a row of ``length`` frames may join a batch of ``rows`` rows whose longest has ``longest`` frames.
    An empty batch takes any row."""
    if rows == 0:
        return True
    if cap is not None and rows >= cap:
        return False
    return (rows + 1) * max(longest, length) <= budget


def joinable(rows: int, longest: int, lengths: Iterable[int], budget: int, cap: int | None = None) -> int:
    """How many of ``lengths``, taken in order, may join a batch of ``rows`` rows whose longest has ``longest``
    frames (it stops at the first that does not fit: no row jumps the queue)."""
    n = 0
    for length in lengths:
        if not fits(rows + n, longest, length, budget, cap):
            break
        n, longest = n + 1, max(longest, length)
    return n


def pack(items: Iterable[T], lengths: Sequence[int], budget: int, cap: int | None = None) -> Iterator[list[T]]:
    """Cut ``items`` (in the order given; sort them by length first for less padding) into consecutive batches
    that each respect the budget and the cap."""
    batch: list[T] = []
    longest = 0
    for item, length in zip(items, lengths, strict=True):
        if not fits(len(batch), longest, length, budget, cap):
            yield batch
            batch, longest = [], 0
        batch.append(item)
        longest = max(longest, length)
    if batch:
        yield batch
