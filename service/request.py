"""A request's state in the step loop (`service.steploop`): its future, deadline, plan, pieces, stream, and the
engine time it has had; and what it resolves to."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.joining import CrossfadeJoiner

from .engine import Payload, SamplingKey, TaskParams


@dataclass(frozen=True)
class RequestResult:
    output: np.ndarray
    queue_wait_s: float  # admission -> first step
    inference_s: float  # first step -> result
    first_chunk_s: float | None  # admission -> first chunk ready (chunked plans)
    rows: int
    mean_live_rows: float  # rows in the live batch, averaged over this request's steps


@dataclass(eq=False)  # identity semantics
class Request:
    key: SamplingKey
    payload: Payload
    params: TaskParams
    future: asyncio.Future[RequestResult]
    enqueued_at: float
    deadline: float
    chunks: asyncio.Queue[np.ndarray | None] | None = None  # streaming: final audio as it is ready, None = end
    plan: Any = None  # model.generation.Plan, once prepared
    pieces: dict[int, Any] = field(default_factory=dict)
    started_at: float | None = None
    first_chunk_at: float | None = None
    steps_seen: int = 0  # steps its live batch took while it was in it ...
    live_rows_sum: int = 0  # ... and the rows of those steps, for its mean live rows
    drop_reason: str | None = None  # why the future was cancelled (client_disconnected, deadline_exceeded)
    estimate_s: float = 0.0  # estimated engine seconds (the cost model; from its plan once prepared), for admission
    engine_s: float = 0.0  # engine seconds it has had: its share of every step it was in
    _streamed: int = 0
    _joiner: CrossfadeJoiner | None = None

    @property
    def task(self) -> str:
        return self.key.task

    def stream(self, now: float) -> None:
        """Hand the finished chunks of a chunked plan over in order, as soon as every earlier one is there (on the
        event loop, after post-processing wrote the pieces)."""
        plan = self.plan
        if plan is None or plan.chunk_fade is None:
            return
        while self._streamed in self.pieces:
            if self.first_chunk_at is None:
                self.first_chunk_at = now
            if self.chunks is not None:
                if self._joiner is None:
                    self._joiner = CrossfadeJoiner(plan.chunk_fade)
                chunk = self._joiner.push(self.pieces[self._streamed])
                if self._streamed == len(plan.rows) - 1:  # the last chunk carries the held-back fade tail too
                    chunk = np.concatenate([chunk, self._joiner.close()])
                self.chunks.put_nowait(chunk)
            self._streamed += 1

    def cancel(self, reason: str) -> None:
        """Stop the request's compute: its rows leave at the next step boundary."""
        if not self.future.done():
            self.drop_reason = reason
            self.future.cancel()
