"""The processing thread's work for the step loop. Preparation: each request's plan, and its cost re-estimated from
the plan. Post-processing: the pieces of rows that finished in one step, made together (one vocoder call for every
TTS chunk among them, whichever requests they belong to), then the result of each request that now has all its
pieces. A failure fails only its request. The engine thread's work, one turn: ``execute``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.solvers import network_passes

from .admission import LoopLimits, request_estimate
from .engine import Engine, SamplingKey, StepBatch
from .request import Request
from .scheduler import Entry


def plans(engine: Engine, limits: LoopLimits, cost: float | None, requests: list[Request]) -> list[Any]:
    """Each request's (plan, estimated engine seconds), or the exception that fails only that request. The estimate
    is re-made from the plan's true frames (a TTS request's length is known only now, its ``speed`` included): a
    request that could not finish in its time is refused (413)."""
    made: list[Any] = []
    for request in requests:
        try:
            plan = engine.prepare(request.task, request.payload, request.params)
            estimate = request_estimate(limits, cost, len(plan.rows), plan.frames,
                                        network_passes(request.params.sampling),
                                        request.deadline - request.enqueued_at, "input")
            made.append((plan, estimate or request.estimate_s))
        except Exception as e:
            made.append(e)
    return made


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


@dataclass
class TurnResult:
    batch: StepBatch | None  # the live batch, made by this turn if it had none
    finished: list[Entry]
    step_s: float
    rows: int
    padded: int
    real: int
    failed: Exception | None = None


def execute(engine: Engine, key: SamplingKey, batch: StepBatch | None, joining: list[Entry], leaving: list[Entry],
            live: list[Entry]) -> TurnResult:
    """On the engine thread: rows leave and join, one step, timed to the device's end of it (one synchronisation
    per step, so its time is charged to this key and not to whichever comes next). ``live``: the rows it runs."""
    start = time.perf_counter()
    try:
        if batch is None:
            batch = engine.new_batch(key)
        if leaving:
            batch.leave([e.row for e in leaving])
        batch.join([e.row for e in joining])
        finished_rows = batch.step()
        engine.synchronize()
    except Exception as e:
        return TurnResult(None, [], 0.0, 0, 0, 0, failed=e)
    by_row = {id(e.row): e for e in live}
    frames = [e.frames for e in live]
    return TurnResult(batch, [by_row[id(r)] for r in finished_rows], time.perf_counter() - start, len(live),
                      len(live) * max(frames, default=0), sum(frames))
