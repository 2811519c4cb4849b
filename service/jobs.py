"""A request's life in the step loop, shared by every resource: its sampling settings (the request's own, else the
server's, else the task's), its cost check and submission, waiting for it within its deadline (a disconnect or the
deadline cancels it, so its rows stop costing compute at the next step), turning an engine failure into the
service's error, and the headers that say how its audio was made."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NoReturn

from starlette.types import Receive

from model.defaults import sampling
from model.errors import AudioError, ConfigError, SettingError
from model.solvers import network_passes
from model.windows import window_spans

from .engine import Engine, SamplingKey, TaskParams
from .errors import BadAudio, DeadlineExceeded, InvalidParameter, ServiceError
from .request import Request as LoopRequest
from .request import RequestResult
from .settings import Settings

if TYPE_CHECKING:
    from .lifecycle import ServiceRuntime

log = logging.getLogger(__name__)
Translate = Callable[[Exception], ServiceError | None]


class ClientClosedRequest(ServiceError):
    status, type, code = 499, "invalid_request_error", "client_disconnected"


def request_params(settings: Settings, engine: Engine, task: str, steps: int | None, solver: str | None,
                   guidance: float | None, seed: int | None, reconstruction: str, ensemble: int | None = None,
                   quality: str | None = None) -> TaskParams:
    """A request's sampling settings: its own, else the server's defaults, else the model's: the task's teacher
    (model/defaults.py) or, with ``quality`` 'fast' (or a bundle whose default it is), its few-step student."""
    given = {"steps": steps, "guidance": guidance, "solver": solver, "ensemble": ensemble}
    try:  # the network (student or teacher) and its sampling: model.quality.Qualities
        chosen = engine.task_sampling(task, quality, given)
    except ConfigError as e:
        raise InvalidParameter(str(e), param=e.param if isinstance(e, SettingError) else "quality") from e
    if not chosen.student:  # the server's default_* settings fill what a teacher request left out
        ensemble = settings.default_ensemble if task != "tts" and ensemble is None else ensemble
        chosen = sampling(task, steps or settings.default_steps, guidance, solver or settings.default_solver,
                          ensemble=ensemble, base=chosen)
    if not steps:  # a default never exceeds the server's cap; a request that asks for more is refused
        chosen = replace(chosen, steps=min(chosen.steps, settings.max_steps))
    if chosen.steps > settings.max_steps:
        raise InvalidParameter(f"steps must be at most {settings.max_steps} on this server", param="steps")
    seed = secrets.randbelow(2**31) if seed is None else seed
    return TaskParams(chosen, seed, reconstruction)


def window_count(frames: int, frames_per_s: int = 100) -> int:
    """Generation rows of an enhancement/separation input of ``frames`` frames (the pipeline's windows)."""
    return len(window_spans(frames, frames_per_s))


def submit(runtime: ServiceRuntime, key: SamplingKey, payload: Any, params: TaskParams, rows: int, frames: int,
           param: str, stream: bool = False) -> LoopRequest:
    """Queue a job after its cost check: 413 naming ``param`` when the request alone exceeds the server's bounds
    (rows, frames, compute estimated from measured steps against the request timeout)."""
    timeout_s = runtime.settings.request_timeout_s
    estimate = runtime.loop.check_cost(rows, frames, network_passes(params.sampling), timeout_s, param)
    return runtime.loop.submit(key, payload, params, timeout_s, stream=stream, estimate_s=estimate)


async def await_result(job: LoopRequest, receive: Receive, timeout_s: float,
                       translate: Translate | None = None) -> RequestResult:
    """The request's result; 504 at its deadline; if the client goes away the request is cancelled, so its rows
    leave the live batch at the next step (a queued one is dropped before it costs compute)."""
    try:
        await await_event(job, job.future, receive, timeout_s)
    finally:
        if not job.future.done():
            job.cancel("abandoned")
        elif not job.future.cancelled():
            job.future.exception()  # mark a late failure as seen (asyncio would log it as never retrieved)
    return unwrap(job, translate)


async def await_event(job: LoopRequest, event: asyncio.Future, receive: Receive, timeout_s: float) -> None:
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
        raise DeadlineExceeded(f"no result within the request timeout of {timeout_s:g} s")
    finally:
        gone.cancel()


def unwrap_or_deadline(job: LoopRequest, translate: Translate, timeout_s: float) -> NoReturn:
    """Raise why a streamed request ended before its first chunk: its own failure, or its deadline."""
    if job.future.done() and not job.future.cancelled():
        unwrap(job, translate)  # raises the request's error
    raise DeadlineExceeded(f"no audio within the request timeout of {timeout_s:g} s")


def unwrap(job: LoopRequest, translate: Translate | None = None) -> RequestResult:
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
        if isinstance(e, ConfigError):  # a SettingError names the field the model found wrong
            raise InvalidParameter(str(e), param=e.param if isinstance(e, SettingError) else None) from e
        log.exception("inference failed for a %s request", job.task)
        raise ServiceError("inference failed; see the server log") from e


async def _wait_for_disconnect(receive: Receive) -> None:
    """After the body is read, the server's next message is http.disconnect, sent when the client goes away."""
    while (await receive())["type"] != "http.disconnect":
        pass


def sampling_headers(params: TaskParams, sample_rate: int, channels: int) -> dict[str, str]:
    """What every audio answer says about how it was made (a streamed one knows no more before its first byte)."""
    return {"X-Seed": str(params.seed), "X-Steps": str(params.sampling.steps), "X-Solver": params.sampling.solver,
            "X-Ensemble": str(params.sampling.ensemble), "X-Quality": "fast" if params.sampling.student else "full",
            "X-Sample-Rate": str(sample_rate), "X-Channels": str(channels)}


def result_headers(filename: str, params: TaskParams, result: RequestResult, sample_rate: int,
                   channels: int) -> dict[str, str]:
    queue_ms, inference_ms = 1000 * result.queue_wait_s, 1000 * result.inference_s
    headers = {
        "Content-Disposition": f'attachment; filename="{filename}"',
        **sampling_headers(params, sample_rate, channels),
        "X-Batch-Size": f"{result.mean_live_rows:.1f}",  # rows in its live batch, mean over its steps
        "X-Rows": str(result.rows),
        "X-Queue-Time-Ms": f"{queue_ms:.1f}",
        "X-Inference-Time-Ms": f"{inference_ms:.1f}",
        "Server-Timing": f"queue;dur={queue_ms:.1f}, inference;dur={inference_ms:.1f}",
    }
    if result.first_chunk_s is not None:  # chunked (TTS): when the first chunk was ready, the streaming latency
        headers["X-First-Chunk-Ms"] = f"{1000 * result.first_chunk_s:.1f}"
    return headers
