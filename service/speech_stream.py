"""A streamed TTS response, fed by the step loop's per-chunk hook (``Request.chunks``). It starts with the first
chunk: until then a failure is still an error response (4xx/5xx JSON); later the stream ends short (raw audio) or
with an error event (SSE)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive

from .engine import TaskParams
from .jobs import Translate, await_event, sampling_headers, unwrap_or_deadline
from .request import Request as LoopRequest
from .streaming import StreamEncoder, sse_delta, sse_done, sse_error
from .uploads import render_media_type


async def stream_response(job: LoopRequest, receive: Receive, translate: Translate, timeout_s: float, fmt: str,
                          sse: bool, params: TaskParams, sample_rate: int, input_chars: int) -> Response:
    """Wait for the first chunk (within the deadline; a disconnect cancels), then stream the rest."""
    waiter = asyncio.ensure_future(next_chunk(job))
    try:
        await await_event(job, waiter, receive, timeout_s)
    except BaseException:
        waiter.cancel()
        raise
    first = waiter.result()
    if first is None:  # ended without audio: its failure, or the deadline
        unwrap_or_deadline(job, translate, timeout_s)
    headers = {**sampling_headers(params, sample_rate, 1), "Cache-Control": "no-store"}
    if job.first_chunk_at is not None:
        headers["X-First-Chunk-Ms"] = f"{1000 * (job.first_chunk_at - job.enqueued_at):.1f}"
    media = "text/event-stream" if sse else render_media_type(fmt, sample_rate)
    return StreamingResponse(stream_audio(job, first, fmt, sample_rate, sse, input_chars), media_type=media,
                             headers=headers)


async def next_chunk(job: LoopRequest) -> np.ndarray | None:
    """The request's next chunk of final audio (None: no more), waiting at most until its deadline."""
    assert job.chunks is not None, "submitted without stream=True"
    try:
        return await asyncio.wait_for(job.chunks.get(), timeout=max(0.0, job.deadline - time.monotonic()))
    except asyncio.TimeoutError:  # not the builtin before Python 3.11
        job.cancel("deadline_exceeded")
        return None


async def stream_audio(job: LoopRequest, first: np.ndarray, fmt: str, sample_rate: int, sse: bool,
                       input_chars: int) -> AsyncIterator[bytes]:
    """The body of a streamed response: ``first`` and every later chunk, encoded as one growing ``fmt`` file,
    raw or as SSE events. If the client goes away (the server cancels this generator) or the deadline passes,
    the request is cancelled, so its remaining rows stop costing compute at the next step."""
    encoder = StreamEncoder(fmt, sample_rate)
    seconds = 0.0
    try:
        chunk: np.ndarray | None = first
        while chunk is not None:
            seconds += len(chunk) / sample_rate
            piece = encoder.push(chunk)
            if piece:
                yield _frame(piece, sse)
            chunk = await next_chunk(job)
        failed = job.future.done() and not job.future.cancelled() and job.future.exception() is not None
        if failed or job.drop_reason is not None:
            if sse:
                yield sse_error("synthesis stopped before the end: " + (job.drop_reason or "inference failed"),
                                job.drop_reason or "inference_failed")
            return  # a raw stream just ends short: the status line went out with the first chunk
        tail = encoder.close()
        if tail:
            yield _frame(tail, sse)
        if sse:
            yield sse_done(input_chars, seconds)
    finally:
        if not job.future.done():
            job.cancel("client_disconnected")


def _frame(piece: bytes, sse: bool) -> bytes:
    """Encoded audio as it goes on the wire: raw, or as one speech.audio.delta event."""
    return sse_delta(piece) if sse else piece
