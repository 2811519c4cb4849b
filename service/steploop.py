"""The step loop: requests in, one ODE step at a time on the engine thread, results out.

A request is submitted with its sampling key and queued for preparation. The loop coroutine, on the event loop,
repeats: forget what nobody waits for (a cancelled future, a passed deadline: its rows leave the live batch before
the next step), prepare the queued requests (their plans' rows go to the scheduler), run queued side jobs, then
ask the `Scheduler` for a turn and run it on the engine thread (rows join, one solver step); finished rows are
post-processed (`processing`). Each call to the engine thread is one short piece of work, so no request waits for
another's whole generation. State lives here (requests) and in the scheduler (rows); the engine only executes.

One writer: the loop coroutine alone changes the scheduler's and the requests' state, between steps. Preparation
and post-processing on the worker thread hand their outcome back through an inbox the loop applies before its next
decision, so a request that fails while a step is in flight is forgotten when that step has returned.

A chunked plan (TTS) hands its pieces to ``Request.chunks`` in order as they finish, the streaming hook. If a
live batch's step raises, its requests are bisected until the culprit fails alone; everything else goes on. If the
device cannot recover, or the loop itself dies, every waiting request fails and ``on_fatal`` is called (the
runtime turns /readyz to 503 and the server exits non-zero, for the orchestrator to restart it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .admission import Backlog, LoopLimits, request_estimate
from .engine import Engine, Payload, SamplingKey, StepBatch, TaskParams
from .errors import DeadlineExceeded, QueueFull, ShuttingDown
from .faults import EngineFailed, StepFailures, halves
from .metrics import Metrics
from .processing import Posted, execute, plans, post
from .request import Request, RequestResult
from .scheduler import Budget, Entry, Scheduler, Turn
from .side_jobs import SideJob, SideJobs, run, settle, wait

log = logging.getLogger(__name__)


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
        self._inbox: list[Callable[[], None]] = []  # outcomes of background work, applied between steps
        self._side = SideJobs()  # `process` jobs not started
        self._failures = StepFailures(limits.max_step_failures)
        self._groups = 0  # retry groups handed out by bisection
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._closing = False
        self.dead: BaseException | None = None
        self.cost: float | None = None  # the cost model: seconds per frame per network evaluation (warm-up)
        self.backlog = Backlog()

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="speechflow-step-loop")
        self._task.add_done_callback(self._died)
        self.metrics.scheduler_up.set(1)

    async def drain(self, timeout_s: float | None = None) -> None:
        """Refuse new requests, finish every admitted one (without waiting for batches to fill), then stop. After
        ``timeout_s`` (the orchestrator's grace period, less its margin) what is still running fails with 503."""
        self._closing = True
        self.scheduler.draining = True
        if self._task is not None and not self._task.done():
            self._poke()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except asyncio.TimeoutError:
                log.warning("drain timed out after %g s; failing %d unfinished requests", timeout_s,
                            sum(not r.future.done() for r in self._requests))
                for request in list(self._requests):
                    self._fail(request, ShuttingDown("the server stopped before this request finished"))
                self._task.cancel()  # a step in flight is abandoned: its thread's result is never read
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            except Exception:  # the loop died: _died answered every request already
                pass
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
        ahead = self.backlog.ahead_s(self._unfinished(), estimate_s)
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

    async def process(self, fn: Callable[..., Any], *args: Any, timeout_s: float) -> Any:
        """Model work that is not generation (a voice upload's transcription and prompt alignment) on the
        processing thread, admitted like a request (503 while draining, 429 when ``max_queue`` wait) and run by
        the loop between steps, or beside them with a worker: it never competes with a step for the engine
        thread. Its exception is raised here; past ``timeout_s``, DeadlineExceeded (504)."""
        if not self.accepting or self._task is None:
            raise ShuttingDown()
        if (full := self.queue_full()) is not None:
            raise full
        future = self._side.add(functools.partial(fn, *args))
        self._poke()
        return await wait(future, timeout_s)

    def queue_full(self) -> QueueFull | None:
        """429 when ``max_queue`` admitted requests have not started (the middleware asks before the body)."""
        waiting = self.depth()
        if waiting < self.limits.max_queue:
            return None
        return QueueFull(self.backlog.retry_after_s(waiting, self.limits.max_batch_size))

    def depth(self) -> int:
        """Requests (and side jobs: `process`) admitted and still wanted that have not started."""
        return sum(not r.future.done() and r.started_at is None for r in self._requests) + len(self._side)

    def backlog_s(self) -> float:
        """Engine seconds the admitted, unfinished requests still need (`admission.Backlog`)."""
        return self.backlog.total_s(self._unfinished())

    def _unfinished(self) -> list[Request]:
        return [r for r in self._requests if not r.future.done()]

    # --- the loop -----------------------------------------------------------------------------------------------
    def _poke(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            self._wakeup.clear()
            self._apply_inbox()
            now = time.monotonic()
            self._prune(now)
            if self._preparing:  # every waiting request (up to a batch's rows) in one call
                batch = self._preparing[: self.limits.max_batch_size]
                del self._preparing[: len(batch)]
                await self._aside(self._prepare(batch))
                self._apply_inbox()
            if self._side:
                await self._aside(self._side_jobs(self._side.take()))
                self._apply_inbox()
            # rows prepared just now count as waiting since now
            turn = self.scheduler.next(time.monotonic(), self.backlog.need_s)
            if turn is not None:
                await self._step(turn)
                continue
            if self._preparing or self._inbox or self._side:
                continue
            if self._closing and self.scheduler.idle() and not self._background:
                return
            with contextlib.suppress(asyncio.TimeoutError):  # a timeout means: a waiting key is now due
                await asyncio.wait_for(self._wakeup.wait(), self.scheduler.due_in(now))

    async def _aside(self, work: Awaitable[Callable[[], None]]) -> None:
        """Run pre- or post-processing: beside the step loop with a worker (the loop goes on stepping), else awaited
        here, so it holds the engine thread between two steps. Either way its outcome is applied by the loop
        between steps (``_apply_inbox``): the loop coroutine is the one writer of the scheduler's and the requests'
        state, so nothing changes under a step in flight."""
        task = asyncio.get_running_loop().create_task(self._deliver(work))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda _: self._poke())  # after the discard: a draining loop may stop now
        if self._worker is None:
            await task

    async def _deliver(self, work: Awaitable[Callable[[], None]]) -> None:
        try:
            outcome = await work  # then append: the loop swaps the inbox list while work is awaited
            self._inbox.append(outcome)
        except Exception as e:  # a bug of the loop's own, not of a request: the loop stops on it as it would inline
            self._inbox.append(functools.partial(_reraise, e))

    def _apply_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for apply in inbox:
            apply()

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

    async def _prepare(self, requests: list[Request]) -> Callable[[], None]:
        wanted = [r for r in requests if not r.future.done()]
        start = time.perf_counter()
        made = await self._on_processing(plans, self.engine, self.limits, self.cost, wanted) if wanted else []
        self.metrics.inference.labels("prepare").observe(time.perf_counter() - start)
        return functools.partial(self._prepared, wanted, made)

    def _prepared(self, requests: list[Request], plans: list[Any]) -> None:
        now = time.monotonic()
        for request, plan in zip(requests, plans, strict=True):
            if isinstance(plan, Exception):
                self._fail(request, plan)
            elif request.future.done():  # cancelled while it was being prepared
                self._forget(request, request.drop_reason)
            else:
                request.plan, request.estimate_s = plan
                entries = [Entry(row, request, row.frames, now, deadline=request.deadline) for row in request.plan.rows]
                if request.chunks is not None and self.limits.stream_in_order:
                    for earlier, entry in itertools.pairwise(entries):
                        entry.after = earlier
                self.scheduler.add(request.key, entries)

    async def _side_jobs(self, jobs: list[SideJob]) -> Callable[[], None]:
        outcomes = await self._on_processing(run, jobs)
        return functools.partial(settle, jobs, outcomes)

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
        live = self.scheduler.live(key)  # the rows this step runs, joiners included
        result = await self._on_engine(execute, self.engine, key, self._batches.get(key), turn.join, leaving, live)
        if result.failed is not None:
            self._batch_failed(key, result.failed)
            return
        self._failures.succeeded()
        self.metrics.inference.labels("step").observe(result.step_s)
        self._batches[key] = result.batch
        self.scheduler.finished(key, result.finished, result.step_s)
        self.metrics.observe_step(key.task, result.rows, result.padded, result.real, result.step_s)
        still = self.scheduler.live(key)
        owners = {id(e.owner): e.owner for e in live}.values()
        for request in owners:
            request.steps_seen += 1
            request.live_rows_sum += result.rows
            request.engine_s += result.step_s / len(owners)
        if not still and not self._leaving.get(key):
            self._batches.pop(key, None)  # an empty live batch holds no memory
        wanted = [e for e in result.finished if not e.owner.future.done()]
        if wanted:
            await self._aside(self._postprocess(key, wanted))

    async def _postprocess(self, key: SamplingKey, finished: list[Entry]) -> Callable[[], None]:
        posted: Posted = await self._on_processing(post, self.engine, finished)
        self.metrics.inference.labels("postprocess").observe(posted.seconds)
        return functools.partial(self._posted, key, posted)

    def _posted(self, key: SamplingKey, posted: Posted) -> None:
        if self._worker is None:  # it held the engine thread like a step: charged to the key as one
            self.scheduler.charge(key, posted.seconds)
            for request in posted.touched:
                request.engine_s += posted.seconds / len(posted.touched)
        now = time.monotonic()
        for request in posted.touched:
            request.stream(now)
        for request, output in posted.done:
            self._complete(request, output)
        for request, error in posted.errors.items():
            self._fail(request, error)

    def _batch_failed(self, key: SamplingKey, error: Exception) -> None:
        """A step raised. Its rows restart from t = 0 in two halves by request, each half in a live batch apart
        from other rows (same seeds, so the same results), and a half that fails again is split again: n
        co-batched requests cost about log2(n) retries, not n serial generations, and only the culprit fails.
        An error the device cannot recover from, or ``max_step_failures`` in a row, stops the loop instead."""
        self._batches.pop(key, None)
        self._leaving.pop(key, None)
        entries = [e for e in self.scheduler.drop_key(key) if not e.owner.future.done()]
        if (fatal := self._failures.failed(error)) is not None:
            raise fatal from error
        owners = list({id(e.owner): e.owner for e in entries}.values())
        log.warning("a step of %s failed (%r); %s", key, error,
                    "failing its request" if len(owners) == 1 else f"bisecting its {len(owners)} requests")
        if len(owners) == 1:
            self._fail(owners[0], error)
            return
        retried = []
        for half in halves(owners):
            self._groups += 1
            members = {id(r) for r in half}
            for entry in entries:
                if id(entry.owner) in members:
                    entry.group = self._groups
                    retried.append(entry)
        self.scheduler.retry(key, retried)

    def _complete(self, request: Request, output: np.ndarray) -> None:
        now = time.monotonic()
        if not request.future.done():
            started = request.started_at or now
            first = None if request.first_chunk_at is None else request.first_chunk_at - request.enqueued_at
            request.future.set_result(RequestResult(output, started - request.enqueued_at, now - started, first,
                                                    len(request.plan.rows),
                                                    request.live_rows_sum / max(1, request.steps_seen)))
            self.backlog.finished(request, now - request.enqueued_at)
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
        failure = error if isinstance(error, EngineFailed) else EngineFailed("the scheduler stopped; the server is "
                                                                            "restarting")
        for request in list(self._requests):
            if not request.future.done():
                request.future.set_exception(failure)
            if request.chunks is not None:
                request.chunks.put_nowait(None)
        self._requests.clear()
        if self._on_fatal is not None:
            self._on_fatal(error)

    def _publish_depth(self) -> None:
        self.metrics.queue_depth.set(self.depth())
        self.metrics.live_rows.set(self.scheduler.live_rows())



def _reraise(error: Exception) -> None:
    raise error

