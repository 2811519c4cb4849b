"""Dynamic batching of requests into engine calls.

Each request becomes a `Job` with its own asyncio future and deadline, queued per task. One scheduler coroutine
forms batches and hands them to a single worker thread, one batch at a time, so the event loop never blocks and
the model is never called concurrently. While a batch runs, new requests queue up and form the next one.

A batch holds jobs with one `SamplingKey` (task, solver, steps, guidance, reconstruction): those settings are
per call in the sampler. It always contains the oldest job of its task (no starvation), is filled with the same-key
jobs closest to it in length (less padding) while ``size x longest <= max_batch_frames`` and
``size <= max_batch_size`` (or the task's own lower cap), and is handed to the engine sorted by length. A batch is
dispatched as soon as the worker is free and it is full (the cap is reached or a same-key job did not fit) or its
oldest job has waited ``max_wait_s``; when several tasks are ready, the one with the oldest job goes first. Jobs
whose future is done (the client went away and the handler cancelled it) or whose deadline passed are dropped before
they cost compute.
If a batch raises, its members are retried one by one, so only the culprit fails; a runner that can tell which item
failed returns that item's exception in its place instead, which fails only that job without a retry.

Design note, joining a running batch between ODE steps: the sampler already keeps a per-sample time t, seed and
padding mask, so rows of a batch are independent. A later version can swap the one-shot `BatchRunner` for a
stepping runner (``admit(jobs)``, ``step()``, ``finished()``): after every solver step the scheduler retires rows
that reached t = 1, resolving their futures, and admits queued jobs of the same key at t = 0 while the frame budget
allows. `_plan` and the queues stay as they are; what changes is that the budget bounds the live batch rather than
one call. It needs a step-wise sampling API in ``model/flow.py`` and a per-row step count there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .errors import DeadlineExceeded, QueueFull, ShuttingDown
from .metrics import Metrics

log = logging.getLogger(__name__)

# (task, payloads, stage timings to fill) -> one output per payload, in order; an Exception as an output fails only
# its job. Runs in the worker thread.
BatchRunner = Callable[[str, list[Any], dict[str, float]], list[Any]]


# Padded feature frames per batch when the settings leave it open. CPU: measured with scripts/bench-sweep.sh on the
# demo bundle (README): at NFE 16 + guidance 2 a CPU forward is already at the machine's matmul peak, so larger
# batches only add padding and latency (1,600 frames: 98 % of the pipeline's best throughput at concurrency 16;
# 24,000: 81 %). GPU: a wide budget, where batching pays; bound it by activation memory.
CPU_BATCH_FRAMES = 1_600
GPU_BATCH_FRAMES = 24_000


def default_batch_frames(device: str) -> int:
    return CPU_BATCH_FRAMES if device in ("cpu", "fake") else GPU_BATCH_FRAMES


@dataclass(frozen=True)
class SamplingKey:
    task: str
    solver: str
    steps: int
    guidance: float
    reconstruction: str


@dataclass(frozen=True)
class BatchLimits:
    max_batch_frames: int = 24_000
    max_batch_size: int = 16
    max_wait_s: float = 0.01
    max_queue: int = 64
    task_batch_size: Mapping[str, int] = field(default_factory=dict)  # a lower cap for some tasks (tts: see engine)

    def batch_size(self, task: str) -> int:
        return min(self.max_batch_size, self.task_batch_size.get(task, self.max_batch_size))


@dataclass(frozen=True)
class JobResult:
    output: Any
    queue_wait_s: float
    inference_s: float
    batch_size: int


@dataclass(eq=False)  # identity semantics: two jobs are never "equal"
class Job:
    key: SamplingKey
    payload: Any
    frames: int
    future: asyncio.Future[JobResult]
    enqueued_at: float
    deadline: float

    @property
    def task(self) -> str:
        return self.key.task


@dataclass
class _Throughput:
    """Smoothed seconds per batch, for a Retry-After that reflects the actual load."""

    seconds: float | None = None
    alpha: float = field(default=0.2)

    def update(self, seconds: float) -> None:
        self.seconds = seconds if self.seconds is None else (1 - self.alpha) * self.seconds + self.alpha * seconds


class Batcher:
    def __init__(self, run: BatchRunner, limits: BatchLimits, metrics: Metrics | None = None,
                 executor: ThreadPoolExecutor | None = None) -> None:
        """``executor``: the one thread that runs every engine call (the caller's, so loading and warm-up can
        share it); by default the batcher makes and owns one."""
        self._run = run
        self.limits = limits
        self.metrics = metrics or Metrics()
        self._queues: dict[str, list[Job]] = {}  # per task, oldest first
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="speechflow-engine")
        self._running: asyncio.Task[None] | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._closing = False
        self._batch_time = _Throughput()

    # --- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._scheduler = asyncio.get_running_loop().create_task(self._schedule(), name="speechflow-batcher")
        self._scheduler.add_done_callback(_log_crash)

    async def drain(self) -> None:
        """Refuse new jobs, run every queued one (without waiting for batches to fill), then stop."""
        self._closing = True
        if self._scheduler is not None:
            self._poke()
            await asyncio.shield(self._scheduler)
        if self._owns_executor:
            self._executor.shutdown(wait=False)

    @property
    def accepting(self) -> bool:
        return not self._closing

    # --- admission ----------------------------------------------------------------------------------------------
    def submit(self, key: SamplingKey, payload: Any, frames: int, timeout_s: float) -> Job:
        """Queue one request; raises ShuttingDown (503) or QueueFull (429) instead of queueing."""
        if self._closing or self._scheduler is None:
            raise ShuttingDown()
        if self.depth() >= self.limits.max_queue:
            raise QueueFull(self.retry_after_s())
        now = time.monotonic()
        job = Job(key, payload, max(1, frames), asyncio.get_running_loop().create_future(), now, now + timeout_s)
        job.future.add_done_callback(lambda _: self._poke())  # a cancelled job leaves the queue (and the gauge) now
        self._queues.setdefault(key.task, []).append(job)
        self._publish_depth(key.task)
        self._poke()
        return job

    def depth(self, task: str | None = None) -> int:
        """Queued jobs still wanted (not counting the running batch)."""
        queues = self._queues.values() if task is None else [self._queues.get(task, [])]
        return sum(not job.future.done() for queue in queues for job in queue)

    def retry_after_s(self) -> float:
        batches_ahead = math.ceil((self.depth() + 1) / self.limits.max_batch_size) + 1
        return (self._batch_time.seconds or 1.0) * batches_ahead

    # --- scheduling ---------------------------------------------------------------------------------------------
    def _poke(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _schedule(self) -> None:
        assert self._wakeup is not None
        while True:
            self._wakeup.clear()
            now = time.monotonic()
            self._prune(now)
            timeout: float | None = None
            if self._running is None:
                batch, timeout = self._next_batch(now)
                if batch:
                    self._running = asyncio.create_task(self._execute(batch))
                    continue
                if self._closing and not any(self._queues.values()):
                    return
            with contextlib.suppress(asyncio.TimeoutError):  # a timeout means: the oldest job is now due
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _prune(self, now: float) -> None:
        """Drop jobs nobody waits for any more, and fail the expired ones with 504, before they cost compute."""
        for task, queue in self._queues.items():
            keep = []
            for job in queue:
                if job.future.done():
                    continue
                if now >= job.deadline:
                    job.future.set_exception(DeadlineExceeded("the request's deadline passed while it was queued"))
                    continue
                keep.append(job)
            if len(keep) != len(queue):
                self._queues[task] = keep
                self._publish_depth(task)

    def _next_batch(self, now: float) -> tuple[list[Job], float | None]:
        """The batch to run now (possibly none) and, if none, how long until one becomes due."""
        best: tuple[Job, list[Job]] | None = None
        due: float | None = None
        for queue in self._queues.values():
            if not queue:
                continue
            head = queue[0]
            batch, full = self._plan(queue)
            ready_at = head.enqueued_at + self.limits.max_wait_s
            if full or self._closing or now >= ready_at:
                if best is None or head.enqueued_at < best[0].enqueued_at:
                    best = (head, batch)
            else:
                due = ready_at if due is None else min(due, ready_at)
        if best is None:
            return [], None if due is None else max(0.0, due - now)
        head, batch = best
        chosen = {id(job) for job in batch}
        self._queues[head.task] = [job for job in self._queues[head.task] if id(job) not in chosen]
        self._publish_depth(head.task)
        return sorted(batch, key=lambda job: job.frames), None

    def _plan(self, queue: list[Job]) -> tuple[list[Job], bool]:
        """The batch around the oldest job, and whether it is full (waiting longer cannot improve it)."""
        head = queue[0]
        cap = self.limits.batch_size(head.task)
        others = sorted((job for job in queue[1:] if job.key == head.key),
                        key=lambda job: (abs(job.frames - head.frames), job.enqueued_at))
        batch, longest, full = [head], head.frames, False
        for job in others:
            if len(batch) >= cap:
                break
            longest_with = max(longest, job.frames)
            if (len(batch) + 1) * longest_with > self.limits.max_batch_frames:
                full = True  # a same-key job is left over: no point in waiting
                continue
            batch.append(job)
            longest = longest_with
        return batch, full or len(batch) >= cap

    # --- execution ----------------------------------------------------------------------------------------------
    async def _execute(self, jobs: list[Job]) -> None:
        task = jobs[0].task
        started = time.monotonic()
        for job in jobs:
            self.metrics.queue_wait.labels(task).observe(started - job.enqueued_at)
        try:
            try:
                await self._call(jobs, started)
            except Exception as exc:
                if len(jobs) == 1:
                    _fail(jobs[0], exc)
                    return
                log.warning("a batch of %d %s requests failed (%r); retrying them one by one", len(jobs), task, exc)
                for job in jobs:
                    if job.future.done():
                        continue
                    try:
                        await self._call([job], started)
                    except Exception as single:
                        _fail(job, single)
        finally:
            self._running = None
            self._poke()

    async def _call(self, jobs: list[Job], started: float) -> None:
        task = jobs[0].task
        stages: dict[str, float] = {}
        t0 = time.monotonic()
        outputs = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._run, task, [job.payload for job in jobs], stages)
        elapsed = time.monotonic() - t0
        if len(outputs) != len(jobs):
            raise RuntimeError(f"the engine returned {len(outputs)} outputs for {len(jobs)} inputs")
        stages.setdefault("total", elapsed)
        self.metrics.observe_batch(task, [job.frames for job in jobs], stages)
        self._batch_time.update(elapsed)
        for job, output in zip(jobs, outputs, strict=True):
            if job.future.done():
                continue
            if isinstance(output, Exception):
                job.future.set_exception(output)
            else:
                job.future.set_result(JobResult(output, started - job.enqueued_at, elapsed, len(jobs)))

    def _publish_depth(self, task: str) -> None:
        self.metrics.queue_depth.labels(task).set(self.depth(task))


def _fail(job: Job, exc: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(exc)


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the batch scheduler stopped", exc_info=task.exception())
