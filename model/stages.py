"""Wall time per pipeline stage (text frontend, durations, prompt alignment, sampling, vocoder, ...), for
``speechflow profile``. A stage costs nothing unless a ``recording()`` is active in the calling context."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

_recorder: ContextVar[dict[str, float] | None] = ContextVar("speechflow_stages", default=None)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Add the time spent inside to ``name`` of the active recording (nested stages count in both)."""
    record = _recorder.get()
    if record is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()  # CUDA work is asynchronous: charge it to the stage that launched it
        record[name] = record.get(name, 0.0) + time.perf_counter() - start


@contextmanager
def recording() -> Iterator[dict[str, float]]:
    """Collect stage times (seconds) of everything run inside, in this context only."""
    record: dict[str, float] = {}
    token = _recorder.set(record)
    try:
        yield record
    finally:
        _recorder.reset(token)
