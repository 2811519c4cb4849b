"""What the TTS endpoints share beyond the step loop: OpenAI's voice names, and streamed responses (chunked audio
or server-sent events) fed by the step loop's per-chunk hook (``steploop.Request.chunks``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np

from .request import Request as LoopRequest
from .streaming import StreamEncoder, sse_delta, sse_done, sse_error

# OpenAI's voice names; each is an alias of one built-in voice (in order, round robin), so OpenAI clients just work
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
                 "marin", "cedar")


def openai_aliases(voices: list[str]) -> dict[str, str]:
    """OpenAI voice name -> built-in voice id (none when there are no built-in voices)."""
    ordered = sorted(voices)
    return {name: ordered[i % len(ordered)] for i, name in enumerate(OPENAI_VOICES)} if ordered else {}


async def next_chunk(job: LoopRequest) -> np.ndarray | None:
    """The request's next chunk of final audio (None: no more), waiting at most until its deadline."""
    assert job.chunks is not None, "submitted without stream=True"
    try:
        return await asyncio.wait_for(job.chunks.get(), timeout=max(0.0, job.deadline - time.monotonic()))
    except TimeoutError:
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
