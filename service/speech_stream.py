"""A streamed TTS response, fed by the step loop's per-chunk hook (``Request.chunks``). It starts with the first
chunk: until then a failure is still an error response (4xx/5xx JSON); later the stream ends short (raw audio) or
with an error event (SSE). Each chunk is resampled to the response's rate and encoded on a worker thread (soxr,
libsndfile and FFmpeg are CPU work that would otherwise hold up every other request on the event loop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np
from starlette.responses import StreamingResponse
from starlette.types import Receive

from .engine import TaskParams
from .jobs import Translate, await_event, sampling_headers, unwrap_or_deadline
from .request import Request as LoopRequest
from .streaming import StreamEncoder, sse_delta, sse_done, sse_error, sse_timestamps
from .uploads import render_media_type


async def first_chunk(job: LoopRequest, receive: Receive, translate: Translate, timeout_s: float) -> np.ndarray:
    """The request's first chunk of audio, within its deadline (a disconnect cancels it); a failure before it is
    raised as the service's error, so that the client gets an ordinary error response."""
    waiter = asyncio.ensure_future(next_chunk(job))
    try:
        await await_event(job, waiter, receive, timeout_s)
    except BaseException:  # the server cancelled this handler too (the client went away): the rows stop as well
        waiter.cancel()
        job.cancel("abandoned")
        raise
    first = waiter.result()
    if first is None:  # ended without audio: its failure, or the deadline
        unwrap_or_deadline(job, translate, timeout_s)
    return first


def complete(job: LoopRequest) -> bool:
    """Whether the request has succeeded: all of its audio is there (it came with the first chunk)."""
    return job.future.done() and not job.future.cancelled() and job.future.exception() is None


Timings = dict[str, list[Any]]  # "words" / "phones" -> model.tts.WordTime spans, seconds of the joined audio
GRANULARITY_KEYS = {"word": "words", "phone": "phones"}


def plan_timings(plan: Any, granularities: Sequence[str]) -> list[Timings] | None:
    """A TTS plan's timings per chunk, of the granularities asked for (None: none asked); empty lists for an engine
    that does not time them."""
    if not granularities:
        return None
    rows = len(getattr(plan, "rows", []))
    keyed = {GRANULARITY_KEYS[g]: getattr(plan, GRANULARITY_KEYS[g], None) or [[]] * rows for g in granularities}
    return [{key: per_chunk[k] for key, per_chunk in keyed.items()} for k in range(rows)]


def joined_timings(timings: Sequence[Timings]) -> Timings:
    """Every chunk's timings in one (they are already in seconds of the joined audio)."""
    return {key: [span for chunk in timings for span in chunk[key]] for key in (timings[0] if timings else {})}


def stream_response(job: LoopRequest, first: np.ndarray, fmt: str, sse: bool, params: TaskParams, source_rate: int,
                    sample_rate: int, input_chars: int, on_end: Callable[[float], None],
                    timings: list[Timings] | None = None) -> StreamingResponse:
    """Stream ``first`` and the chunks after it, at ``sample_rate``. ``on_end`` gets the seconds of audio sent once
    the stream is over; ``timings`` (per chunk, SSE only) go out as a timestamps event before each chunk's audio. The
    headers say what is known at the first chunk: the sampling settings, the rows, the wait for the first step and
    for the first chunk."""
    headers = {**sampling_headers(params, sample_rate, 1), "Cache-Control": "no-store"}
    if job.plan is not None:
        headers["X-Rows"] = str(len(job.plan.rows))
    if job.started_at is not None:
        headers["X-Queue-Time-Ms"] = f"{1000 * (job.started_at - job.enqueued_at):.1f}"
    if job.first_chunk_at is not None:
        headers["X-First-Chunk-Ms"] = f"{1000 * (job.first_chunk_at - job.enqueued_at):.1f}"
    if not sse:
        headers["Content-Disposition"] = f'attachment; filename="speech.{fmt}"'
    media = "text/event-stream" if sse else render_media_type(fmt, sample_rate)
    encoder = StreamEncoder(fmt, sample_rate, source_rate)
    return StreamingResponse(stream_audio(job, first, encoder, source_rate, sse, input_chars, on_end, timings),
                             media_type=media, headers=headers)


async def next_chunk(job: LoopRequest) -> np.ndarray | None:
    """The request's next chunk of final audio (None: no more), waiting at most until its deadline."""
    assert job.chunks is not None, "submitted without stream=True"
    try:
        return await asyncio.wait_for(job.chunks.get(), timeout=max(0.0, job.deadline - time.monotonic()))
    except asyncio.TimeoutError:  # not the builtin before Python 3.11
        job.cancel("deadline_exceeded")
        return None


async def stream_audio(job: LoopRequest, first: np.ndarray, encoder: StreamEncoder, source_rate: int, sse: bool,
                       input_chars: int, on_end: Callable[[float], None],
                       timings: list[Timings] | None = None) -> AsyncIterator[bytes]:
    """The body of a streamed response: ``first`` and every later chunk, encoded as one growing file, raw or as
    SSE events. If the client goes away (the server cancels this generator) or the deadline passes, the request
    is cancelled, so its remaining rows stop costing compute at the next step."""
    seconds = 0.0
    closed = False
    try:
        chunk: np.ndarray | None = first
        index = 0  # chunks come one per row, in order: the plan's timings of chunk k go with it
        while chunk is not None:
            if sse and timings is not None and index < len(timings):
                yield sse_timestamps(timings[index])
            index += 1
            seconds += len(chunk) / source_rate
            # the last chunk's piece carries the file's end too (what the resampler and encoder held back), so
            # that there is one piece per sentence: the demo page counts SSE deltas as sentences
            closed = _last(job)
            piece = await asyncio.to_thread(_encode, encoder, chunk, closed)
            if piece:
                yield _frame(piece, sse)
            chunk = await next_chunk(job)
        failed = job.future.done() and not job.future.cancelled() and job.future.exception() is not None
        if failed or job.drop_reason is not None:
            if sse:
                yield sse_error("synthesis stopped before the end: " + (job.drop_reason or "inference failed"),
                                job.drop_reason or "inference_failed")
            return  # a raw stream just ends short: the status line went out with the first chunk
        tail = b"" if closed else await asyncio.to_thread(encoder.close)
        if tail:
            yield _frame(tail, sse)
        if sse:
            yield sse_done(input_chars, seconds)
    finally:
        if not job.future.done():
            job.cancel("client_disconnected")
        on_end(seconds)


def _last(job: LoopRequest) -> bool:
    """Whether the chunk just taken is the request's last: it succeeded, and only the end marker is left (the
    step loop queues the last chunk and the marker together, as it completes the request)."""
    assert job.chunks is not None
    return complete(job) and job.chunks.qsize() == 1


def _encode(encoder: StreamEncoder, chunk: np.ndarray, last: bool) -> bytes:
    return encoder.push(chunk) + (encoder.close() if last else b"")


def _frame(piece: bytes, sse: bool) -> bytes:
    """Encoded audio as it goes on the wire: raw, or as one speech.audio.delta event."""
    return sse_delta(piece) if sse else piece
