"""`ServiceRuntime`: what one app instance owns and how it lives. Settings, metrics, the engine and its one thread,
the processing worker, the step loop, the voice book; load, warm-up, readiness, drain and release.

Requests do not pass through here: each resource's router (service/routes/) parses a request into a job, submits
it to the step loop (service/jobs.py) and renders the result. Routers ask the runtime only whether a task is
served (`serving`) and for what it owns."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .admission import LoopLimits
from .engine import Engine, PipelineEngine
from .errors import ModelNotFound, NotReady, ServiceError, ShuttingDown
from .metrics import Metrics
from .placement import default_batch_frames, processing_worker, stream_in_order
from .settings import Settings
from .steploop import StepLoop
from .voice_book import VoiceBook

log = logging.getLogger(__name__)


class ServiceRuntime:
    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.voices = VoiceBook(settings)
        self._engine = engine
        self._loop: StepLoop | None = None
        self.on_fatal: Callable[[BaseException], None] | None = None  # the server exits when the step loop dies
        # Every engine call (load, warm-up, batches) runs on this one thread. OpenMP gives each thread that calls
        # into torch its own team of workers; a second team left over from loading slows every later matmul on a
        # small CPU.
        self._engine_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="speechflow-engine")
        self._worker: ThreadPoolExecutor | None = None  # pre- and post-processing beside the steps, if any
        self._warmup: asyncio.Task[None] | None = None
        self._ready: asyncio.Event | None = None
        self.warm = False
        self.shutting_down = False
        self.warmup_error: str | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise NotReady("the model is not loaded yet")
        return self._engine

    @property
    def loop(self) -> StepLoop:
        if self._loop is None:
            raise NotReady("the service has not started")
        return self._loop

    def load(self) -> None:
        """Load the bundle now, on the engine thread, before the server listens: a missing or damaged bundle is
        then the CLI's one-line error (a ``SpeechFlowError`` naming the file) instead of a failed ASGI start-up."""
        if self._engine is None:
            s = self.settings
            self._engine = self._engine_thread.submit(PipelineEngine.load, s.bundle, s.device, s.dtype).result()

    async def start(self) -> None:
        """Load the bundle (a failure stops the server), start the step loop, then warm up in the background so
        /livez answers at once while /readyz says 503 until every task has run once."""
        s = self.settings
        if self._engine is None:
            self._engine = await self.on_engine_thread(PipelineEngine.load, s.bundle, s.device, s.dtype)
        device = str(self._engine.describe().get("device", "cpu"))
        frames = s.max_batch_frames or default_batch_frames(device)
        limits = LoopLimits(frames, s.max_batch_size, s.max_wait_s, s.max_queue, s.max_request_rows,
                            s.max_request_frames, s.scheduling, s.max_step_failures,
                            stream_in_order(s.stream_order, device))
        self._worker = processing_worker(s.processing, device)
        self._loop = StepLoop(self._engine, limits, self.metrics, executor=self._engine_thread, worker=self._worker,
                              on_fatal=self._fatal)
        self._loop.start()
        # decoding uploads, encoding results and the voice store run on asyncio's default pool (asyncio.to_thread):
        # bounded here, so a burst of large uploads cannot start a decode per core and starve the engine
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=s.io_threads, thread_name_prefix="speechflow-io"))
        self._ready = asyncio.Event()
        self._warmup = asyncio.create_task(self._warm_up(), name="speechflow-warmup")

    async def _warm_up(self) -> None:
        try:
            cost = await self.on_engine_thread(self.engine.warmup)
            if cost is not None and self.loop.cost is None:
                self.loop.cost = cost
        except Exception as e:
            log.exception("warm-up failed; the service stays not ready")
            self.warmup_error = f"warm-up failed: {e}"
            return
        self.warm = True
        assert self._ready is not None
        self._ready.set()
        log.info("warm and ready (bundle tasks: %s)", ", ".join(self.engine.tasks))

    async def on_engine_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` on the engine's thread (model work before the step loop serves: loading, warm-up)."""
        return await asyncio.get_running_loop().run_in_executor(self._engine_thread, fn, *args)

    async def wait_ready(self) -> None:
        assert self._ready is not None, "start() first"
        await self._ready.wait()

    def begin_shutdown(self) -> None:
        """Readiness -> 503 and new work refused; called on SIGTERM before the server stops listening."""
        self.shutting_down = True

    async def stop(self) -> None:
        """Refuse new work, let queued and running requests finish, then release the worker."""
        self.begin_shutdown()
        try:
            if self._warmup is not None:
                await self._warmup  # a thread cannot be interrupted; warm-up is short
            if self._loop is not None:
                await self._loop.drain(self.settings.drain_s)
        finally:
            self._engine_thread.shutdown(wait=False)
            if self._worker is not None:
                self._worker.shutdown(wait=False)
            self.voices.close()

    def _fatal(self, error: BaseException) -> None:
        if self.on_fatal is not None:
            self.on_fatal(error)

    # --- readiness and admission --------------------------------------------------------------------------------
    def admission_error(self) -> ServiceError | None:
        if self._loop is not None and self._loop.dead is not None:
            return NotReady("the scheduler stopped; the server is restarting")
        if self.shutting_down:
            return ShuttingDown()
        if not self.warm:
            return NotReady(self.warmup_error or "the model is still loading or warming up")
        return None

    def queue_error(self) -> ServiceError | None:
        """429 while the queue is full: the middleware answers it before a byte of the body is read."""
        return None if self._loop is None else self._loop.queue_full()

    def missing_model(self, task: str) -> ServiceError | None:
        """404 when the bundle has no model for ``task`` (the admission middleware asks before reading a body)."""
        tasks = self.engine.tasks
        if task in tasks:
            return None
        return ModelNotFound(f"this server's bundle has no {task!r} model (it has: {', '.join(tasks)})",
                             param="model")

    def serving(self, task: str) -> Engine:
        """The engine, when it serves ``task``; else 404 naming the bundle's tasks."""
        engine = self.engine
        error = self.missing_model(task)
        if error is not None:
            raise error
        return engine
