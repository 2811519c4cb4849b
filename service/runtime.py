"""`ServiceRuntime`: what one app instance owns (settings, engine, batcher, metrics, readiness) and the life of one
task request: validate -> decode (thread) -> queue -> batch (worker thread) -> encode (thread) -> response."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from fastapi import Request, UploadFile
from starlette.responses import Response
from starlette.types import Receive

from model.errors import AudioError, ConfigError

from . import paths
from .batching import Batcher, BatchLimits, Job, JobResult, SamplingKey
from .engine import SERVED_TASKS, Engine, PipelineEngine, TaskParams
from .errors import (
    BadAudio,
    DeadlineExceeded,
    InvalidParameter,
    ModelNotFound,
    NotImplementedYet,
    NotReady,
    ServiceError,
    ShuttingDown,
)
from .metrics import Metrics
from .schemas import ModelCard, ModelList, TaskForm
from .settings import Settings
from .uploads import DecodedAudio, check_upload_type, decode_upload, render_audio

log = logging.getLogger(__name__)

ENDPOINTS = {"enhance": paths.ENHANCE, "separate": paths.SEPARATE}
OUTPUT_NAMES = {"enhance": "enhanced", "separate": "separated"}


class ClientClosedRequest(ServiceError):
    status, type, code = 499, "invalid_request_error", "client_disconnected"


class ServiceRuntime:
    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._engine = engine
        self._batcher: Batcher | None = None
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
    def batcher(self) -> Batcher:
        if self._batcher is None:
            raise NotReady("the service has not started")
        return self._batcher

    # --- lifecycle ----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the bundle (a failure stops the server), start the batcher, then warm up in the background so
        /livez answers at once while /readyz says 503 until every task has run once."""
        if self._engine is None:
            s = self.settings
            self._engine = await asyncio.to_thread(PipelineEngine.load, s.bundle, s.device)
        limits = BatchLimits(self.settings.max_batch_frames, self.settings.max_batch_size, self.settings.max_wait_s,
                             self.settings.max_queue)
        self._batcher = Batcher(self._engine.run_batch, limits, self.metrics)
        self._batcher.start()
        self._ready = asyncio.Event()
        self._warmup = asyncio.create_task(self._warm_up(), name="speechflow-warmup")

    async def _warm_up(self) -> None:
        try:
            await asyncio.to_thread(self.engine.warmup)
        except Exception as e:
            log.exception("warm-up failed; the service stays not ready")
            self.warmup_error = f"warm-up failed: {e}"
            return
        self.warm = True
        assert self._ready is not None
        self._ready.set()
        log.info("warm and ready (bundle tasks: %s)", ", ".join(self.engine.tasks))

    async def wait_ready(self) -> None:
        assert self._ready is not None, "start() first"
        await self._ready.wait()

    def begin_shutdown(self) -> None:
        """Readiness -> 503 and new work refused; called on SIGTERM before the server stops listening."""
        self.shutting_down = True

    async def stop(self) -> None:
        """Refuse new work, let queued and running requests finish, then release the worker."""
        self.begin_shutdown()
        if self._warmup is not None:
            await self._warmup  # a thread cannot be interrupted; warm-up is short
        if self._batcher is not None:
            await self._batcher.drain()

    def admission_error(self) -> ServiceError | None:
        if self.shutting_down:
            return ShuttingDown()
        if not self.warm:
            return NotReady(self.warmup_error or "the model is still loading or warming up")
        return None

    # --- requests -----------------------------------------------------------------------------------------------
    async def process(self, task: str, upload: UploadFile, form: TaskForm, request: Request) -> Response:
        engine = self._serving(task)
        params = self._params(form)
        check_upload_type(upload.content_type)
        data = await upload.read()
        decoded = await asyncio.to_thread(decode_upload, data, upload.content_type, upload.filename,
                                          target_sr=engine.sample_rate, max_seconds=self.settings.max_audio_seconds)
        key = SamplingKey(task, params.solver, params.steps, params.guidance, params.reconstruction)
        job = self.batcher.submit(key, (decoded.wav, params), engine.frames(len(decoded.wav)),
                                  self.settings.request_timeout_s)
        result = await self._await(job, request.receive)
        audio, media_type = await asyncio.to_thread(render_audio, result.output, engine.sample_rate, decoded,
                                                    form.response_format)
        channels = 1 if result.output.ndim == 1 else result.output.shape[0]
        self.metrics.audio_seconds.labels(task, "in").inc(decoded.seconds)
        self.metrics.audio_seconds.labels(task, "out").inc(decoded.seconds * channels)
        return Response(audio, media_type=media_type, headers=_result_headers(task, form, params, result, decoded,
                                                                              channels))

    def _serving(self, task: str) -> Engine:
        engine = self.engine
        if task not in engine.tasks:
            raise ModelNotFound(f"this server's bundle has no {task!r} model (it has: {', '.join(engine.tasks)})",
                                param="model")
        return engine

    def _params(self, form: TaskForm) -> TaskParams:
        steps = form.steps or self.settings.default_steps
        if steps > self.settings.max_steps:
            raise InvalidParameter(f"steps must be at most {self.settings.max_steps} on this server", param="steps")
        seed = secrets.randbelow(2**31) if form.seed is None else form.seed
        return TaskParams(steps=steps, solver=form.solver or self.settings.default_solver, guidance=form.guidance,
                          seed=seed, reconstruction=form.reconstruction)

    async def _await(self, job: Job, receive: Receive) -> JobResult:
        """The job's result; 504 at its deadline; if the client goes away the job is cancelled, so a queued job is
        dropped before it costs compute."""
        gone = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            done, _ = await asyncio.wait({job.future, gone}, timeout=max(0.0, job.deadline - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
            if job.future in done:
                return _unwrap(job)
            if gone in done:
                raise ClientClosedRequest("the client closed the connection")
            raise DeadlineExceeded(f"no result within the request timeout of {self.settings.request_timeout_s:g} s")
        finally:
            gone.cancel()
            if not job.future.done():
                job.future.cancel()
            elif not job.future.cancelled():
                job.future.exception()  # mark a late failure as seen (asyncio would log it as never retrieved)

    # --- catalogue ----------------------------------------------------------------------------------------------
    def model_list(self) -> ModelList:
        engine = self.engine
        cards = [ModelCard(id=task, task=task, endpoint=ENDPOINTS.get(task) if task in SERVED_TASKS else None)
                 for task in engine.tasks]
        return ModelList(data=cards, engine=engine.describe())

    def tts_unavailable(self) -> ServiceError:
        """TTS endpoints exist in the contract; until they are implemented, say clearly why they cannot answer."""
        tasks = self.engine.tasks
        if "tts" not in tasks:
            return ModelNotFound(f"this server's bundle has no TTS model (it serves: {', '.join(tasks)})",
                                 param="model")
        return NotImplementedYet("the bundle has a TTS model, but TTS serving is not implemented in this version")


def _unwrap(job: Job) -> JobResult:
    """A finished job's result; engine exceptions become the service's errors."""
    try:
        return job.future.result()
    except ServiceError:
        raise
    except AudioError as e:
        raise BadAudio(str(e), param="file") from e
    except ConfigError as e:
        raise InvalidParameter(str(e)) from e
    except Exception as e:
        log.exception("inference failed for a %s request", job.task)
        raise ServiceError("inference failed; see the server log") from e


async def _wait_for_disconnect(receive: Receive) -> None:
    """After the body is read, the server's next message is http.disconnect, sent when the client goes away."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _result_headers(task: str, form: TaskForm, params: TaskParams, result: JobResult, decoded: DecodedAudio,
                    channels: int) -> dict[str, str]:
    queue_ms, inference_ms = 1000 * result.queue_wait_s, 1000 * result.inference_s
    return {
        "Content-Disposition": f'attachment; filename="{OUTPUT_NAMES[task]}.{form.response_format}"',
        "X-Seed": str(params.seed),
        "X-Steps": str(params.steps),
        "X-Solver": params.solver,
        "X-Sample-Rate": str(decoded.sample_rate),
        "X-Channels": str(channels),
        "X-Batch-Size": str(result.batch_size),
        "X-Queue-Time-Ms": f"{queue_ms:.1f}",
        "X-Inference-Time-Ms": f"{inference_ms:.1f}",
        "Server-Timing": f"queue;dur={queue_ms:.1f}, inference;dur={inference_ms:.1f}",
    }
