"""Post-processing on the processing thread: the pieces of rows that finished in one step, made together (one
vocoder call for every TTS chunk among them, whichever requests they belong to), then the result of each request
that now has all its pieces. A failure fails only its request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .engine import Engine
from .request import Request
from .scheduler import Entry


@dataclass
class Posted:
    """What post-processing made: requests now complete (with their result) or failed, and those with new pieces."""

    seconds: float
    done: list[tuple[Request, np.ndarray]] = field(default_factory=list)
    errors: dict[Request, Exception] = field(default_factory=dict)
    touched: list[Request] = field(default_factory=list)  # requests that got pieces (for streaming)


def post(engine: Engine, finished: list[Entry]) -> Posted:
    """The processing thread is the only writer of ``Request.pieces`` (the step loop reads them, to stream, once
    this call has returned): a request's rows finish once each, and a retried row has no piece yet."""
    start = time.perf_counter()
    posted = Posted(0.0)
    items = [(e.owner, index_of(e)) for e in finished if not e.owner.future.done()]
    try:
        pieces: list[Any] = engine.pieces([(r.plan, i) for r, i in items])
    except Exception:  # find the culprit: one by one, so only its request fails
        pieces = [_one_piece(engine, r.plan, i) for r, i in items]
    for (request, index), piece in zip(items, pieces, strict=True):
        if isinstance(piece, Exception):
            posted.errors[request] = piece
        elif request not in posted.errors:
            request.pieces[index] = piece
            if request not in posted.touched:
                posted.touched.append(request)
    for request in posted.touched:
        plan = request.plan
        if request not in posted.errors and len(request.pieces) == len(plan.rows):
            try:
                posted.done.append((request, plan.assemble([request.pieces[i] for i in range(len(plan.rows))])))
            except Exception as e:
                posted.errors[request] = e
    posted.seconds = time.perf_counter() - start
    return posted


def index_of(entry: Entry) -> int:
    """The row's index in its request's plan."""
    return next(i for i, r in enumerate(entry.owner.plan.rows) if r is entry.row)


def _one_piece(engine: Engine, plan: Any, index: int) -> Any:
    try:
        return engine.pieces([(plan, index)])[0]
    except Exception as e:
        return e
