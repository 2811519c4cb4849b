"""The step loop: requests in, one ODE step at a time on the engine thread, results out.

A request is submitted with its sampling key and queued for preparation. The loop coroutine, on the event loop,
repeats: forget what nobody waits for (a cancelled future, a passed deadline: its rows leave the live batch before
the next step), prepare one queued request on the engine thread (its plan's rows go to the scheduler), then ask
the `Scheduler` for a turn and run it on the engine thread (rows join, one solver step, finished rows are
post-processed with their plan's ``piece``, complete requests assembled). Each call to the engine thread is one
short piece of work, so no request waits for another's whole generation. State lives here (requests) and in the
scheduler (rows); the engine only executes.

A chunked plan (TTS) hands its pieces to ``Request.chunks`` in order as they finish, the streaming hook. If a
live batch's step raises, the requests with rows in it fail; everything else goes on. If the loop itself dies,
every waiting request fails and ``on_fatal`` is called (the runtime turns /readyz to 503 and the server exits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.joining import CrossfadeJoiner

from .admission import LoopLimits, check_size, request_estimate
from .engine import Engine, Payload, SamplingKey, StepBatch, TaskParams
from .errors import DeadlineExceeded, QueueFull, ServiceError, ShuttingDown
from .metrics import Metrics
from .request import Request, RequestResult
from .scheduler import Budget, Entry, Scheduler, Turn

log = logging.getLogger(__name__)


@dataclass
class _TurnResult:
    finished: list[Entry]
    step_s: float
    rows: int
    padded: int
    real: int
    failed: Exception | None = None


@dataclass
class _Posted:
    """What post-processing the rows of one step made: requests now complete (with their result) or failed."""

    seconds: float
    done: list[tuple[Request, np.ndarray]] = field(default_factory=list)
    errors: dict[Request, Exception] = field(default_factory=dict)
    touched: list[Request] = field(default_factory=list)  # requests that got pieces (for streaming)


class StepLoop:
    def __init__(self, engine: Engine, limits: LoopLimits, metrics: Metrics | None = None,
                 executor: ThreadPoolExecutor | None = None, worker: ThreadPoolExecutor | None = None,
                 on_fatal: Callable[[BaseException], None] | None = None) -> None:
        self.engine = engine
        self.limits = limits
        self.metrics = metrics or Metrics()
        self.scheduler = Scheduler(Budget(limits.max_batch_frames, limits.max_batch_size), limits.policy,
                                   limits.max_wait_s)
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="speechflow-engine")
        # Pre- and post-processing: on ``worker`` (one thread) beside the steps, or between steps on the engine
        # thread when there is none. One thread either way, so they never run concurrently with each other.
        self._worker = worker
        self._background: set[asyncio.Task[None]] = set()
        self._on_fatal = on_fatal
        self._batches: dict[SamplingKey, StepBatch] = {}
        self._leaving: dict[SamplingKey, list[Entry]] = {}
        self._preparing: list[Request] = []  # submitted, not prepared yet (oldest first)
        self._requests: set[Request] = set()  # every request not finished yet
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._closing = False
        self.dead: BaseException | None = None
        self.cost: float | None = None  # the cost model: seconds per frame per network evaluation (warm-up)
        self._latency: float | None = None  # smoothed request latency, for Retry-After
        self._work_ratio = 1.0  # smoothed engine seconds a request took per estimated second (admission)

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="speechflow-step-loop")
        self._task.add_done_callback(self._died)
        self.metrics.scheduler_up.set(1)

    async def drain(self) -> None:
        """Refuse new requests, finish every admitted one (without waiting for batches to fill), then stop."""
        self._closing = True
        self.scheduler.draining = True
        if self._task is not None:
            self._poke()
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)
        if self._owns_executor:
            self._executor.shutdown(wait=False)

    @property
    def accepting(self) -> bool:
        return not self._closing and self.dead is None

    # --- admission ----------------------------------------------------------------------------------------------
    def check_cost(self, rows: int, frames: int, sampling_evals: int, timeout_s: float, param: str) -> float:
        """413 for a request too costly alone (`admission.request_estimate`); else its estimated engine seconds."""
        return request_estimate(self.limits, self.cost, rows, frames, sampling_evals, timeout_s, param)

    def submit(self, key: SamplingKey, payload: Payload, params: TaskParams, timeout_s: float,
               stream: bool = False, estimate_s: float = 0.0) -> Request:
        """Queue one request; raises ShuttingDown (503) or QueueFull (429) instead of queueing: when ``max_queue``
        requests wait, or when the work already admitted plus this request's (``estimate_s``, from `check_cost`)
        would not be done by its deadline. A request that would only time out is refused now, not answered 504 a
        minute later."""
        if not self.accepting or self._task is None:
            raise ShuttingDown()
        if (full := self.queue_full()) is not None:
            raise full
        ahead = self.backlog_s() + estimate_s * self._work_ratio
        if estimate_s and ahead > timeout_s:
            raise QueueFull(ahead - timeout_s)
        now = time.monotonic()
        request = Request(key, payload, params, asyncio.get_running_loop().create_future(), now, now + timeout_s,
                          chunks=asyncio.Queue() if stream else None, estimate_s=estimate_s)
        request.future.add_done_callback(lambda _: self._poke())  # a cancelled request leaves at the next step
        self._preparing.append(request)
        self._requests.add(request)
        self._publish_depth()
        self._poke()
        return request

    def queue_full(self) -> QueueFull | None:
        """429 when ``max_queue`` admitted requests have not started (the middleware asks before the body)."""
        return QueueFull(self.retry_after_s()) if self.depth() >= self.limits.max_queue else None

    def depth(self) -> int:
        """Requests admitted and still wanted that have not started stepping."""
        return sum(not r.future.done() and r.started_at is None for r in self._requests)

    def backlog_s(self) -> float:
        """Engine seconds the admitted, unfinished requests still need: their estimates, scaled by what requests
        have really cost so far (batching makes a row cheaper than the alone-measured cost model says, most of all
        on a GPU), less what each has had."""
        return sum(self._need_s(r) for r in self._requests if not r.future.done())

    def _need_s(self, request: Request) -> float:
        """Engine seconds ``request`` still needs (admission and the scheduler's deadline check)."""
        return max(0.0, request.estimate_s * self._work_ratio - request.engine_s)

    def retry_after_s(self) -> float:
        waves = math.ceil((self.depth() + 1) / self.limits.max_batch_size)
        return (self._latency or 1.0) * waves

    # --- the loop -----------------------------------------------------------------------------------------------
    def _poke(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            self._wakeup.clear()
            now = time.monotonic()
            self._prune(now)
            if self._preparing:  # every waiting request (up to a batch's rows) in one call
                batch = self._preparing[: self.limits.max_batch_size]
                del self._preparing[: len(batch)]
                await self._aside(self._prepare(batch))
            turn = self.scheduler.next(time.monotonic(), self._need_s)  # rows prepared now count as waiting since now
            if turn is not None:
                await self._step(turn)
                continue
            if self._preparing:
                continue
            if self._closing and self.scheduler.idle() and not self._background:
                return
            with contextlib.suppress(asyncio.TimeoutError):  # a timeout means: a waiting key is now due
                await asyncio.wait_for(self._wakeup.wait(), self.scheduler.due_in(now))

    async def _aside(self, work: Any) -> None:
        """Run pre- or post-processing: beside the step loop with a worker (the loop goes on stepping; the work
        pokes it when done), else awaited here, so it holds the engine thread between two steps."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda _: self._poke())
        if self._worker is None:
            await task

    def _prune(self, now: float) -> None:
        for request in list(self._requests):
            if not request.future.done() and now >= request.deadline:
                request.drop_reason = "deadline_exceeded"
                request.future.set_exception(DeadlineExceeded("the request's deadline passed before it finished"))
            if request.future.done():
                self._forget(request, request.drop_reason)
        for key in [k for k in self._leaving if not self.scheduler.live(k)]:
            del self._leaving[key]  # nothing of that batch is still wanted: drop it whole, no step needed
            self._batches.pop(key, None)

    def _forget(self, request: Request, reason: str | None) -> None:
        """Take a finished, failed or abandoned request out of the loop; its live rows leave before the next step."""
        self._requests.discard(request)
        if request in self._preparing:
            self._preparing.remove(request)
        for key, entries in self.scheduler.remove(request).items():
            self._leaving.setdefault(key, []).extend(entries)
        if reason is not None and request.plan is not None:  # live or still waiting: compute it will not cost
            self.metrics.rows_dropped.labels(reason).inc(len(request.plan.rows) - len(request.pieces))
        if request.chunks is not None:
            request.chunks.put_nowait(None)
        self._publish_depth()

    async def _prepare(self, requests: list[Request]) -> None:
        wanted = [r for r in requests if not r.future.done()]
        if not wanted:
            return
        start = time.perf_counter()
        plans = await self._on_processing(self._plans, wanted)
        self.metrics.inference.labels("prepare").observe(time.perf_counter() - start)
        now = time.monotonic()
        for request, plan in zip(wanted, plans, strict=True):
            if isinstance(plan, Exception):
                self._fail(request, plan)
            elif request.future.done():  # cancelled while it was being prepared
                self._forget(request, request.drop_reason)
            else:
                request.plan = plan
                self.scheduler.add(request.key, [Entry(row, request, row.frames, now, deadline=request.deadline)
                                                    for row in plan.rows])

    def _plans(self, requests: list[Request]) -> list[Any]:
        """On the processing thread: each request's plan, or the exception that fails only that request."""
        plans: list[Any] = []
        for request in requests:
            try:
                plan = self.engine.prepare(request.task, request.payload, request.params)
                check_size(self.limits, len(plan.rows), plan.frames, "input")
                plans.append(plan)
            except Exception as e:
                plans.append(e)
        return plans

    async def _step(self, turn: Turn) -> None:
        key = turn.key
        leaving = self._leaving.pop(key, [])
        now = time.monotonic()
        for entry in turn.join:
            request = entry.owner
            self.metrics.row_wait.labels(key.task).observe(now - entry.enqueued_at)
            if request.started_at is None:
                request.started_at = now
                self.metrics.queue_wait.labels(key.task).observe(now - request.enqueued_at)
        if turn.join:
            self._publish_depth()
        result = await self._on_engine(self._execute, key, turn, leaving)
        if result.failed is not None:
            self._batch_failed(key, result.failed)
            return
        self.scheduler.finished(key, result.finished, result.step_s)
        self.metrics.observe_step(key.task, result.rows, result.padded, result.real, result.step_s)
        live = self.scheduler.live(key)
        owners = {id(e.owner): e.owner for e in [*live, *result.finished]}.values()
        for request in owners:
            request.steps_seen += 1
            request.live_rows_sum += result.rows
            request.engine_s += result.step_s / len(owners)
        if not live and not self._leaving.get(key):
            self._batches.pop(key, None)  # an empty live batch holds no memory
        wanted = [(e, e.owner.attempt) for e in result.finished if not e.owner.future.done()]
        if wanted:
            await self._aside(self._postprocess(key, wanted))

    async def _postprocess(self, key: SamplingKey, finished: list[tuple[Entry, int]]) -> None:
        posted: _Posted = await self._on_processing(self._post, finished)
        self.metrics.inference.labels("postprocess").observe(posted.seconds)
        if self._worker is None:  # it held the engine thread like a step: charged to the key as one
            self.scheduler.charge(key, posted.seconds)
            for request in posted.touched:
                request.engine_s += posted.seconds / len(posted.touched)
        for request in posted.touched:
            self._stream(request)
        for request, output in posted.done:
            self._complete(request, output)
        for request, error in posted.errors.items():
            self._fail(request, error)

    def _batch_failed(self, key: SamplingKey, error: Exception) -> None:
        """A step raised: a request that ran alone fails; requests that shared the batch start again from t = 0,
        each in a live batch of its own (same seeds, so the same result), so only the culprit fails."""
        self._batches.pop(key, None)
        self._leaving.pop(key, None)
        owners = {id(e.owner): e.owner for e in self.scheduler.drop_key(key)}
        alone = len(owners) == 1 or any(r.alone for r in owners.values())
        log.warning("a step of %s failed (%r); %s", key, error,
                    "failing its request" if alone else f"retrying its {len(owners)} requests one by one")
        for request in owners.values():
            if alone or request.future.done():
                self._fail(request, error)
                continue
            self.scheduler.remove(request)
            request.pieces = {}
            request.attempt += 1
            request.alone = True
            self.scheduler.add(key, [Entry(row, request, row.frames, time.monotonic(), alone=True,
                                           deadline=request.deadline)
                                     for row in request.plan.rows])

    def _execute(self, key: SamplingKey, turn: Turn, leaving: list[Entry]) -> _TurnResult:
        """On the engine thread: rows leave and join, one step."""
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = self.engine.new_batch(key)
        start = time.perf_counter()
        try:
            if leaving:
                batch.leave([e.row for e in leaving])
            batch.join([e.row for e in turn.join])
            rows = self.scheduler.live(key)
            frames = [e.frames for e in rows]
            finished_rows = batch.step()
        except Exception as e:
            return _TurnResult([], 0.0, 0, 0, 0, failed=e)
        step_s = time.perf_counter() - start
        self.metrics.inference.labels("step").observe(step_s)
        by_row = {id(e.row): e for e in rows}
        finished = [by_row[id(r)] for r in finished_rows]
        return _TurnResult(finished, step_s, len(rows), len(rows) * max(frames, default=0), sum(frames))

    def _post(self, finished: list[tuple[Entry, int]]) -> _Posted:
        """On the processing thread: the pieces of rows that finished in one step (the engine batches them: one
        vocoder call for every TTS chunk among them), then the result of each request that now has all its pieces.
        The only writer of ``Request.pieces`` (the loop reads them, to stream). A failure fails only its request."""
        start = time.perf_counter()
        posted = _Posted(0.0)
        items = [(e, e.owner, _index_of(e)) for e, attempt in finished
                 if not e.owner.future.done() and e.owner.attempt == attempt]
        try:
            pieces: list[Any] = self.engine.pieces([(r.plan, i) for _, r, i in items])
        except Exception:  # find the culprit: one by one, so only its request fails
            pieces = [_one_piece(self.engine, r.plan, i) for _, r, i in items]
        for (_, request, index), piece in zip(items, pieces, strict=True):
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

    def _stream(self, request: Request) -> None:
        """Hand the finished chunks of a chunked plan over in order, as soon as every earlier one is there."""
        plan = request.plan
        if plan is None or plan.chunk_fade is None:
            return
        while request._streamed in request.pieces:
            if request.first_chunk_at is None:
                request.first_chunk_at = time.monotonic()
            if request.chunks is not None:
                if request._joiner is None:
                    request._joiner = CrossfadeJoiner(plan.chunk_fade)
                chunk = request._joiner.push(request.pieces[request._streamed])
                if request._streamed == len(plan.rows) - 1:  # the last chunk carries the held-back fade tail too
                    chunk = np.concatenate([chunk, request._joiner.close()])
                request.chunks.put_nowait(chunk)
            request._streamed += 1

    def _complete(self, request: Request, output: np.ndarray) -> None:
        now = time.monotonic()
        if not request.future.done():
            started = request.started_at or now
            first = None if request.first_chunk_at is None else request.first_chunk_at - request.enqueued_at
            request.future.set_result(RequestResult(output, started - request.enqueued_at, now - started, first,
                                                    len(request.plan.rows),
                                                    request.live_rows_sum / max(1, request.steps_seen)))
            latency = now - request.enqueued_at
            self._latency = latency if self._latency is None else 0.8 * self._latency + 0.2 * latency
            if request.estimate_s > 0:
                self._work_ratio = 0.8 * self._work_ratio + 0.2 * request.engine_s / request.estimate_s
        self._forget(request, None)

    def _fail(self, request: Request, error: BaseException) -> None:
        if not request.future.done():
            request.future.set_exception(error)
        self._forget(request, None)

    async def _on_engine(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _on_processing(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker or self._executor, fn, *args)

    def _died(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            self.metrics.scheduler_up.set(0)
            return
        error = task.exception()
        assert error is not None
        self.dead = error
        self.metrics.scheduler_up.set(0)
        log.error("the step loop stopped", exc_info=error)
        for request in list(self._requests):
            if not request.future.done():
                request.future.set_exception(ServiceError("the scheduler stopped; the server is restarting"))
            if request.chunks is not None:
                request.chunks.put_nowait(None)
        self._requests.clear()
        if self._on_fatal is not None:
            self._on_fatal(error)

    def _publish_depth(self) -> None:
        self.metrics.queue_depth.set(self.depth())
        self.metrics.live_rows.set(self.scheduler.live_rows())


def _index_of(entry: Entry) -> int:
    """The row's index in its request's plan."""
    return next(i for i, r in enumerate(entry.owner.plan.rows) if r is entry.row)


def _one_piece(engine: Engine, plan: Any, index: int) -> Any:
    try:
        return engine.pieces([(plan, index)])[0]
    except Exception as e:
        return e
