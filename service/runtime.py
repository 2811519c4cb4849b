"""`ServiceRuntime`: what one app instance owns (settings, engine, step loop, metrics, readiness) and the life of
one task request: validate -> decode (thread) -> cost check -> queue -> prepare, steps, post-processing (the step
loop, on the engine thread) -> encode (thread) -> response.

Every request's cost is bounded before it is queued (413 ``request_too_costly``: generation rows, frames, and the
compute time estimated from measured steps against the request timeout). TTS requests take the same path
(deadline, 429, cancellation, metrics). Their checks, in order:
the form or JSON schema (422: speed outside 0.25-4, an unknown field or format), the text (413 ``text_too_long``
above ``max_text_chars``, 422 when blank; ``prompt_text`` above ``max_prompt_text_chars`` likewise), voice or
prompt (422: unknown voice, both or neither, a prompt without
``prompt_text``), then the uploaded prompt: 415 not audio, 400 undecodable, 413 ``audio_too_long`` above 15 s (the
pipeline's limit; the upload limits of /v1/enhance apply too), 422 below 0.5 s. What only the model can find out
(text with nothing speakable, a transcript that cannot fit its prompt) comes back as 422 naming the parameter.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import numpy as np
from fastapi import Request, UploadFile
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive

from model.defaults import sampling
from model.duration import DurationError
from model.errors import AudioError, ConfigError
from model.solvers import network_passes
from model.text import TextError, normalize_text
from model.tts import MAX_PROMPT_S, MIN_PROMPT_S
from model.windows import window_spans

from . import paths
from .engine import SERVED_TASKS, Engine, PipelineEngine, SamplingKey, TaskParams, TtsInput, tts_cost
from .errors import (
    BadAudio,
    DeadlineExceeded,
    InvalidParameter,
    ModelNotFound,
    NotReady,
    ServiceError,
    ShuttingDown,
    TextTooLong,
)
from .metrics import Metrics
from .placement import default_batch_frames, processing_worker
from .request import Request as LoopRequest
from .request import RequestResult
from .schemas import ModelCard, ModelList, SpeechRequest, TaskForm, TtsForm, VoiceList
from .settings import Settings
from .speech import next_chunk, stream_audio
from .steploop import LoopLimits, StepLoop
from .streaming import STREAMED_FORMATS
from .uploads import DecodedAudio, check_upload_type, decode_upload, render_audio, render_media_type, render_speech
from .voice_api import VoiceAPI

log = logging.getLogger(__name__)

ENDPOINTS = {"enhance": paths.ENHANCE, "separate": paths.SEPARATE, "tts": paths.TTS}
OUTPUT_NAMES = {"enhance": "enhanced", "separate": "separated", "tts": "speech"}
TTS_MODEL_ID = "tts"  # the id /v1/models lists for the TTS model
# accepted as aliases of the TTS model, so OpenAI clients just work
OPENAI_SPEECH_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15")
Translate = Callable[[Exception], ServiceError | None]


@dataclass(frozen=True)
class _TtsNames:
    """The request's names for the text and voice parameters (/v1/tts: text, /v1/audio/speech: input)."""

    text: str
    voice: str = "voice"


class ClientClosedRequest(ServiceError):
    status, type, code = 499, "invalid_request_error", "client_disconnected"


class ServiceRuntime:
    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.voice_api = VoiceAPI(self)
        self._engine = engine
        self._loop: StepLoop | None = None
        self.on_fatal: Callable[[BaseException], None] | None = None  # the server exits when the step loop dies
        # Every engine call (load, warm-up, batches) runs on this one thread. OpenMP gives each thread that calls
        # into torch its own team of workers; a second team left over from loading made every matmul after it
        # 30-40 % slower on a 2-core CPU (measured: 0.82 s -> 1.08 s per 4 s enhancement at NFE 32).
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

    # --- lifecycle ----------------------------------------------------------------------------------------------
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
            self._engine = await self._on_engine_thread(PipelineEngine.load, s.bundle, s.device, s.dtype)
        device = str(self._engine.describe().get("device", "cpu"))
        frames = s.max_batch_frames or default_batch_frames(device)
        limits = LoopLimits(frames, s.max_batch_size, s.max_wait_s, s.max_queue, s.max_request_rows,
                            s.max_request_frames, s.scheduling)
        self._worker = processing_worker(s.processing, device)
        self._loop = StepLoop(self._engine, limits, self.metrics, executor=self._engine_thread, worker=self._worker,
                              on_fatal=self._fatal)
        self._loop.start()
        self._ready = asyncio.Event()
        self._warmup = asyncio.create_task(self._warm_up(), name="speechflow-warmup")

    async def _warm_up(self) -> None:
        try:
            cost = await self._on_engine_thread(self.engine.warmup)
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

    async def _on_engine_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
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
                await self._loop.drain()
        finally:
            self._engine_thread.shutdown(wait=False)
            if self._worker is not None:
                self._worker.shutdown(wait=False)
            self.voice_api.close()

    def _fatal(self, error: BaseException) -> None:
        if self.on_fatal is not None:
            self.on_fatal(error)

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

    # --- requests -----------------------------------------------------------------------------------------------
    async def process(self, task: str, upload: UploadFile, form: TaskForm, request: Request) -> Response:
        engine = self._serving(task)
        params = self._params(task, form.steps, form.solver, form.guidance, form.seed, form.reconstruction,
                              form.ensemble)
        if len((await request.form()).getlist("file")) > 1:  # already parsed: the form is cached on the request
            raise InvalidParameter("send one file per request (the form has several 'file' fields)", param="file")
        check_upload_type(upload.content_type)
        data = await upload.read()
        decoded = await asyncio.to_thread(decode_upload, data, upload.content_type, upload.filename,
                                          target_sr=engine.sample_rate, max_seconds=self.settings.max_audio_seconds,
                                          max_decoded_bytes=self.settings.max_decoded_bytes)
        frames = engine.frames(len(decoded.wav))
        key = SamplingKey.of(task, params)
        draws = params.sampling.ensemble  # every draw of every window is a row
        estimate = self._check_cost(key, draws * window_count(frames), draws * frames, "file")
        job = self.loop.submit(key, decoded.wav, params, self.settings.request_timeout_s, estimate_s=estimate)
        result = await self._await(job, request.receive)
        audio, media_type = await asyncio.to_thread(render_audio, result.output, engine.sample_rate, decoded,
                                                    form.response_format)
        channels = 1 if result.output.ndim == 1 else result.output.shape[0]
        self.metrics.audio_seconds.labels(task, "in").inc(decoded.seconds)
        self.metrics.audio_seconds.labels(task, "out").inc(decoded.seconds * channels)
        filename = f"{OUTPUT_NAMES[task]}.{form.response_format}"
        return Response(audio, media_type=media_type,
                        headers=_result_headers(filename, params, result, decoded.sample_rate, channels))

    # --- text-to-speech -----------------------------------------------------------------------------------------
    async def tts(self, form: TtsForm, prompt: UploadFile | None, request: Request) -> Response:
        """``POST /v1/tts``: text in a built-in voice, or in the voice of an uploaded prompt + its transcript."""
        engine = self._serving("tts")
        names = _TtsNames("text")
        text = self._check_text(form.text, names.text)
        if prompt is not None and form.voice is not None:
            raise InvalidParameter("give either voice or prompt (with prompt_text), not both", param="voice")
        if prompt is None:
            if form.voice is None:
                raise InvalidParameter("give a voice (see /v1/voices), or upload a prompt (0.5-15 s of the voice to "
                                       "use) with its transcript in prompt_text", param="voice")
            if form.prompt_text is not None:
                raise InvalidParameter("prompt_text is the transcript of an uploaded prompt; a built-in voice has "
                                       "its own", param="prompt_text")
            payload = await self.voice_api.tts_input(engine, form.voice, text, form.speed, names.voice)
            prompt_seconds = 0.0
        else:
            if not (form.prompt_text and form.prompt_text.strip()):
                raise InvalidParameter("an uploaded prompt needs prompt_text, the transcript of what it says",
                                       param="prompt_text")
            if len(form.prompt_text) > self.settings.max_prompt_text_chars:
                raise TextTooLong(f"prompt_text is {len(form.prompt_text)} characters; the limit is "
                                  f"{self.settings.max_prompt_text_chars}", param="prompt_text")
            decoded = await self._decode_prompt(engine, prompt)
            payload = TtsInput(text, prompt=decoded.wav, prompt_text=form.prompt_text, speed=form.speed)
            prompt_seconds = decoded.seconds
        params = self._params("tts", form.steps, form.solver, form.cfg, form.seed, "vocoder")
        return await self._synthesize(engine, payload, params, form.response_format, form.stream_format, request,
                                      names, prompt_seconds)

    async def speech(self, body: SpeechRequest, request: Request) -> Response:
        """``POST /v1/audio/speech`` (OpenAI-compatible): ``input`` in a built-in ``voice``."""
        engine = self._serving("tts")
        if body.model not in (TTS_MODEL_ID, *OPENAI_SPEECH_MODELS):
            raise ModelNotFound(f"unknown model {body.model!r}; this server's TTS model is {TTS_MODEL_ID!r} (OpenAI's "
                                f"{', '.join(OPENAI_SPEECH_MODELS)} are accepted as its aliases)", param="model")
        names = _TtsNames("input")
        text = self._check_text(body.input, names.text)
        payload = await self.voice_api.tts_input(engine, body.voice_id, text, body.speed, names.voice)
        params = self._params("tts", body.steps, body.solver, body.cfg, body.seed, "vocoder")
        response = await self._synthesize(engine, payload, params, body.response_format, body.stream_format,
                                          request, names, 0.0)
        if body.instructions is not None:
            response.headers["X-Instructions"] = "ignored"
        return response

    def voice_list(self) -> VoiceList:
        return self.voice_api.catalogue(self._serving("tts"))

    def _check_text(self, text: str, param: str) -> str:
        limit = self.settings.max_text_chars
        if len(text) > limit:
            raise TextTooLong(f"{param} is {len(text)} characters; the limit is {limit}", param=param)
        if not text.strip():
            raise InvalidParameter(f"{param} is empty: give the text to speak", param=param)
        return text

    async def _decode_prompt(self, engine: Engine, prompt: UploadFile, param: str = "prompt") -> DecodedAudio:
        check_upload_type(prompt.content_type, param=param)
        data = await prompt.read()
        decoded = await asyncio.to_thread(decode_upload, data, prompt.content_type, prompt.filename,
                                          target_sr=engine.sample_rate, param=param,
                                          max_seconds=min(self.settings.max_audio_seconds, MAX_PROMPT_S),
                                          max_decoded_bytes=self.settings.max_decoded_bytes)
        if decoded.seconds < MIN_PROMPT_S:
            raise InvalidParameter(f"the {param} is {decoded.seconds:.2f} s; it must be {MIN_PROMPT_S:g}-"
                                   f"{MAX_PROMPT_S:g} s", param=param)
        return decoded

    async def _synthesize(self, engine: Engine, payload: TtsInput, params: TaskParams, fmt: str,
                          stream_format: str | None, request: Request, names: _TtsNames,
                          prompt_seconds: float) -> Response:
        if payload.prompt is not None:
            prompt_frames = engine.frames(len(payload.prompt))
        else:
            prompt_frames = engine.frames(int(engine.voices[str(payload.voice)].seconds * engine.sample_rate))
        if stream_format is not None and fmt not in STREAMED_FORMATS:
            raise InvalidParameter(f"{fmt} cannot be streamed (its header needs the total length); stream one of "
                                   f"{', '.join(STREAMED_FORMATS)}, or leave stream_format out", param="stream_format")
        key = SamplingKey.of("tts", params)
        estimate = self._check_cost(key, *tts_cost(payload.text, prompt_frames), names.text)
        self.metrics.audio_seconds.labels("tts", "in").inc(prompt_seconds)
        translate = lambda e: _tts_error(e, payload, names)  # noqa: E731
        job = self.loop.submit(key, payload, params, self.settings.request_timeout_s, stream=stream_format is not None,
                               estimate_s=estimate)
        if stream_format is not None:
            return await self._stream(job, request, translate, fmt, stream_format == "sse", params,
                                      engine.sample_rate, len(payload.text))
        result = await self._await(job, request.receive, translate)
        wav = np.asarray(result.output, dtype=np.float32)
        audio, media_type = await asyncio.to_thread(render_speech, wav, engine.sample_rate, fmt)
        self.metrics.audio_seconds.labels("tts", "out").inc(len(wav) / engine.sample_rate)
        headers = _result_headers(f"{OUTPUT_NAMES['tts']}.{fmt}", params, result, engine.sample_rate, 1)
        headers["X-Audio-Seconds"] = f"{len(wav) / engine.sample_rate:.3f}"
        return Response(audio, media_type=media_type, headers=headers)

    async def _stream(self, job: LoopRequest, request: Request, translate: Translate, fmt: str, sse: bool,
                      params: TaskParams, sample_rate: int, input_chars: int) -> Response:
        """A streamed TTS response. It starts with the first chunk: until then a failure is still an error
        response (4xx/5xx JSON); later the stream ends short (raw) or with an error event (SSE)."""
        waiter = asyncio.ensure_future(next_chunk(job))
        try:
            await self._await_event(job, waiter, request.receive)
        except BaseException:
            waiter.cancel()
            raise
        first = waiter.result()
        if first is None:  # ended without audio: its failure, or the deadline
            _unwrap_or_deadline(job, translate, self.settings.request_timeout_s)
        headers = {**_sampling_headers(params, sample_rate, 1), "Cache-Control": "no-store"}
        if job.first_chunk_at is not None:
            headers["X-First-Chunk-Ms"] = f"{1000 * (job.first_chunk_at - job.enqueued_at):.1f}"
        media = "text/event-stream" if sse else render_media_type(fmt, sample_rate)
        return StreamingResponse(stream_audio(job, first, fmt, sample_rate, sse, input_chars), media_type=media,
                                 headers=headers)

    # --- shared -------------------------------------------------------------------------------------------------
    def _serving(self, task: str) -> Engine:
        engine = self.engine
        error = self.missing_model(task)
        if error is not None:
            raise error
        return engine

    def missing_model(self, task: str) -> ServiceError | None:
        """404 when the bundle has no model for ``task`` (the admission middleware asks before reading a body)."""
        tasks = self.engine.tasks
        if task in tasks:
            return None
        return ModelNotFound(f"this server's bundle has no {task!r} model (it has: {', '.join(tasks)})",
                             param="model")

    def _params(self, task: str, steps: int | None, solver: str | None, guidance: float | None, seed: int | None,
                reconstruction: str, ensemble: int | None = None) -> TaskParams:
        """A request's sampling settings: its own, else the server's defaults, else the task's (model/defaults.py)."""
        s = self.settings
        if task != "tts" and ensemble is None:
            ensemble = s.default_ensemble
        chosen = sampling(task, steps or s.default_steps, guidance, solver or s.default_solver, ensemble=ensemble)
        if not steps:  # a default never exceeds the server's cap; a request that asks for more is refused
            chosen = replace(chosen, steps=min(chosen.steps, s.max_steps))
        if chosen.steps > s.max_steps:
            raise InvalidParameter(f"steps must be at most {s.max_steps} on this server", param="steps")
        seed = secrets.randbelow(2**31) if seed is None else seed
        return TaskParams(chosen, seed, reconstruction)

    def _check_cost(self, key: SamplingKey, rows: int, frames: int, param: str) -> float:
        """413 before queueing when the request alone exceeds the server's per-request bounds; else its estimated
        engine seconds (for the admission check of ``StepLoop.submit``)."""
        passes = network_passes(key.sampling)
        return self.loop.check_cost(rows, frames, passes, self.settings.request_timeout_s, param)

    async def _await(self, job: LoopRequest, receive: Receive, translate: Translate | None = None) -> RequestResult:
        """The request's result; 504 at its deadline; if the client goes away the request is cancelled, so its rows
        leave the live batch at the next step (a queued one is dropped before it costs compute)."""
        try:
            await self._await_event(job, job.future, receive)
        finally:
            if not job.future.done():
                job.cancel("abandoned")
            elif not job.future.cancelled():
                job.future.exception()  # mark a late failure as seen (asyncio would log it as never retrieved)
        return _unwrap(job, translate)

    async def _await_event(self, job: LoopRequest, event: asyncio.Future, receive: Receive) -> None:
        """Wait for ``event`` (the result, or a streamed request's first chunk) within the request's deadline;
        a disconnect or the deadline cancels the request (499 / 504)."""
        gone = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            done, _ = await asyncio.wait({event, gone}, timeout=max(0.0, job.deadline - time.monotonic()),
                                         return_when=asyncio.FIRST_COMPLETED)
            if event in done:
                return
            if gone in done:
                job.cancel("client_disconnected")
                raise ClientClosedRequest("the client closed the connection")
            job.cancel("deadline_exceeded")
            raise DeadlineExceeded(f"no result within the request timeout of {self.settings.request_timeout_s:g} s")
        finally:
            gone.cancel()

    # --- catalogue ----------------------------------------------------------------------------------------------
    def model_list(self) -> ModelList:
        engine = self.engine
        cards = [ModelCard(id=task, task=task, endpoint=ENDPOINTS.get(task) if task in SERVED_TASKS else None)
                 for task in engine.tasks]
        return ModelList(data=cards, engine=engine.describe())


def window_count(frames: int, frames_per_s: int = 100) -> int:
    """Generation rows of an enhancement/separation input of ``frames`` frames (the pipeline's windows)."""
    return len(window_spans(frames, frames_per_s))


def _unwrap_or_deadline(job: LoopRequest, translate: Translate, timeout_s: float) -> NoReturn:
    """Raise why a streamed request ended before its first chunk: its own failure, or its deadline."""
    if job.future.done() and not job.future.cancelled():
        _unwrap(job, translate)  # raises the request's error
    raise DeadlineExceeded(f"no audio within the request timeout of {timeout_s:g} s")


def _unwrap(job: LoopRequest, translate: Translate | None = None) -> RequestResult:
    """A finished job's result; engine exceptions become the service's errors (``translate`` first, if given)."""
    try:
        return job.future.result()
    except ServiceError:
        raise
    except Exception as e:
        error = translate(e) if translate is not None else None
        if error is not None:
            raise error from e
        if isinstance(e, AudioError):
            raise BadAudio(str(e), param="file") from e
        if isinstance(e, ConfigError):
            raise InvalidParameter(str(e)) from e
        log.exception("inference failed for a %s request", job.task)
        raise ServiceError("inference failed; see the server log") from e


def _tts_error(error: Exception, request: TtsInput, names: _TtsNames) -> ServiceError | None:
    """What the pipeline says about one TTS request's input -> 422 naming the parameter (None: not the input's
    fault, a 500). The service checked voice, prompt length and speed before queueing, so these are what only the
    model finds out: text with nothing to speak, a transcript that cannot fit its prompt."""
    own_prompt = request.prompt is not None
    if isinstance(error, TextError):
        param = "prompt_text" if own_prompt and not _speakable(request.prompt_text) else names.text
        return InvalidParameter(str(error), param=param)
    if isinstance(error, DurationError):
        return InvalidParameter(str(error), param="prompt_text" if own_prompt else names.voice)
    if isinstance(error, AudioError):
        return InvalidParameter(str(error), param="prompt" if own_prompt else names.voice)
    if isinstance(error, ConfigError):
        return InvalidParameter(str(error), param="prompt_text" if own_prompt else names.voice)
    return None


def _speakable(text: str | None) -> bool:
    try:
        normalize_text(text or "")
    except TextError:
        return False
    return True


async def _wait_for_disconnect(receive: Receive) -> None:
    """After the body is read, the server's next message is http.disconnect, sent when the client goes away."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _sampling_headers(params: TaskParams, sample_rate: int, channels: int) -> dict[str, str]:
    """What every audio answer says about how it was made (a streamed one knows no more before its first byte)."""
    return {"X-Seed": str(params.seed), "X-Steps": str(params.sampling.steps), "X-Solver": params.sampling.solver,
            "X-Ensemble": str(params.sampling.ensemble), "X-Sample-Rate": str(sample_rate),
            "X-Channels": str(channels)}


def _result_headers(filename: str, params: TaskParams, result: RequestResult, sample_rate: int,
                    channels: int) -> dict[str, str]:
    queue_ms, inference_ms = 1000 * result.queue_wait_s, 1000 * result.inference_s
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        **_sampling_headers(params, sample_rate, channels),
        "X-Batch-Size": f"{result.mean_live_rows:.1f}",  # rows in its live batch, mean over its steps
        "X-Rows": str(result.rows),
        "X-Queue-Time-Ms": f"{queue_ms:.1f}",
        "X-Inference-Time-Ms": f"{inference_ms:.1f}",
        "Server-Timing": f"queue;dur={queue_ms:.1f}, inference;dur={inference_ms:.1f}",
    }
    if result.first_chunk_s is not None:  # chunked (TTS): when the first chunk was ready, the streaming latency
        headers["X-First-Chunk-Ms"] = f"{1000 * result.first_chunk_s:.1f}"
    return headers
