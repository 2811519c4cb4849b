"""``POST /v1/audio/edit`` (make a recording say other words, in its own voice) and ``POST /v1/audio/infill``
(regenerate time spans of a recording). Both take one uploaded recording and answer it at its own rate, its kept
samples as they were sent; the model work is `model.editing` through the step loop like every task. The checks,
in order: the form (422), one ``file`` (422), its type (415), decoding (400) and length (413), then (edit) the
transcript, the request's cost (413) and the queue (429, 503); what only the model can judge (a transcript the
audio cannot be saying, nothing changed, too much to regenerate) is a 422 naming the field."""

from __future__ import annotations

import asyncio
import math
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, File, Form, Request, UploadFile
from starlette.responses import Response

from model import recognizer
from model.editing import MAX_EDIT_S, MAX_EDIT_TEXT_CHARS, MAX_ROWS_S
from model.infilling import InfillRequest

from .. import paths
from ..engine import TTS_FRAMES_PER_CHAR, EditInput, Engine, SamplingKey, TaskParams
from ..errors import InvalidParameter, TextTooLong
from ..jobs import await_result, request_params, result_headers, submit
from ..lifecycle import ServiceRuntime
from ..openapi import AUDIO_RESPONSE
from ..schemas import EditForm, InfillForm
from ..uploads import DecodedAudio, check_upload_type, decode_upload, render_speech

MAX_SPANS = 32  # spans of one infill request


def router(runtime: ServiceRuntime) -> APIRouter:
    api = APIRouter(tags=["editing"])

    @api.post(paths.EDIT, response_class=Response, responses=AUDIO_RESPONSE)
    async def edit(request: Request, file: Annotated[UploadFile, File(description="the recording to edit: speech, "
                                                                      "any format libsndfile reads, any rate")],
                   form: Annotated[EditForm, Form()]) -> Response:
        """Change the words of a recording in its speaker's voice: give what it should say (``text``) and,
        optionally, what it says (``transcript``). Only the changed words and a 0.1 s margin around them are
        regenerated, their length chosen in the context of the speaker's rate; the rest is the upload's own audio,
        at its rate."""
        return await _edit(runtime, request, file, form.text, form.transcript, form.speed, form.steps, form.solver,
                           form.cfg, form.seed, form.response_format, quality=form.quality)

    @api.post(paths.INFILL, response_class=Response, responses=AUDIO_RESPONSE)
    async def infill(request: Request, file: Annotated[UploadFile, File(description="the recording: any format "
                                                                        "libsndfile reads, any rate")],
                     form: Annotated[InfillForm, Form()]) -> Response:
        """Regenerate time spans of a recording from the audio around them (a cough, a click, a dropout) with the
        pre-trained model; or, with ``text``, make one span say that text in the recording's voice (the TTS
        model). The rest is the upload's own audio, at its rate."""
        spans = tuple((float(a), float(b)) for a, b in form.spans)
        if len(spans) > MAX_SPANS:
            raise InvalidParameter(f"spans holds {len(spans)} spans; at most {MAX_SPANS} are taken", param="spans")
        if form.text is None:
            engine = runtime.serving("pretrain")
            params = request_params(runtime.settings, engine, "pretrain", form.steps, form.solver, form.guidance,
                                    form.seed, "vocoder")
            audio = await _recording(runtime, request, file)
            regenerated = sum(max(0.0, min(b, audio.seconds) - a) for a, b in spans)
            if not spans or regenerated > MAX_EDIT_S:
                raise InvalidParameter(f"spans must hold 1 or more spans of at most {MAX_EDIT_S:g} s in all, got "
                                       f"{regenerated:.1f} s", param="spans")
            return await _run(runtime, request, InfillRequest(audio.wav, audio.sample_rate, spans), params,
                              SamplingKey.of("pretrain", params), _row_frames(engine, audio), audio,
                              form.response_format, "infilled", {})
        if len(spans) != 1 or not 0 <= spans[0][0] < spans[0][1]:
            raise InvalidParameter("with text, give one span [[start, end]] (0 <= start < end) for it to replace",
                                   param="spans")
        return await _edit(runtime, request, file, form.text, form.transcript, 1.0, form.steps, form.solver,
                           form.guidance, form.seed, form.response_format, spans[0])

    return api


async def _edit(runtime: ServiceRuntime, request: Request, file: UploadFile, text: str, transcript: str | None,
                speed: float, steps: int | None, solver: str | None, guidance: float | None, seed: int | None,
                fmt: str, span: tuple[float, float] | None = None, quality: str | None = None) -> Response:
    """An edit (or a span given a text) through the TTS model: the checks, the transcript, the bounded cost."""
    engine = runtime.serving("tts")
    params = request_params(runtime.settings, engine, "tts", steps, solver, guidance, seed, "vocoder", quality=quality)
    for name, value in (("text", text), ("transcript", transcript or "")):
        if len(value) > MAX_EDIT_TEXT_CHARS:
            raise TextTooLong(f"{name} is {len(value)} characters; the limit is {MAX_EDIT_TEXT_CHARS}", param=name)
    audio = await _recording(runtime, request, file)
    said, transcribed = (transcript or "").strip(), False
    if not said:
        said, transcribed = await _transcribe(runtime, audio), True
    payload = EditInput(audio.wav, audio.sample_rate, text, said, speed, span)
    grown = TTS_FRAMES_PER_CHAR * max(0, len(text) - len(said)) / speed
    headers = {"X-Transcript": quote(said), "X-Transcribed": str(transcribed).lower()}
    return await _run(runtime, request, payload, params, SamplingKey.of("tts", params),
                      _row_frames(engine, audio, grown), audio, fmt, "edited" if span is None else "infilled", headers)


def _row_frames(engine: Engine, audio: DecodedAudio, grown: float = 0.0) -> float:
    """The frames an edit's or infill's rows may hold (its cost estimate before the plan is made): they see the
    regenerated frames and the recording around them (`model.editing.row_windows`), at most MAX_ROWS_S in all, or
    the (grown) recording if that is shorter."""
    frames = engine.frames(round(audio.seconds * engine.sample_rate)) + grown
    return min(frames, engine.frames(round(MAX_ROWS_S * engine.sample_rate)))


async def _recording(runtime: ServiceRuntime, request: Request, upload: UploadFile) -> DecodedAudio:
    """The one uploaded recording, decoded at its own rate (mono)."""
    settings = runtime.settings
    if len((await request.form()).getlist("file")) > 1:  # already parsed: the form is cached on the request
        raise InvalidParameter("send one file per request (the form has several 'file' fields)", param="file")
    check_upload_type(upload.content_type)
    data = await upload.read()
    return await asyncio.to_thread(decode_upload, data, upload.content_type, upload.filename, target_sr=None,
                                   max_seconds=settings.max_audio_seconds,
                                   max_decoded_bytes=settings.max_decoded_bytes)


async def _transcribe(runtime: ServiceRuntime, audio: DecodedAudio) -> str:
    if not recognizer.available():
        raise InvalidParameter("give the transcript: this server has no speech recogniser installed "
                               "(pip install 'speechflow[asr]')", param="transcript")
    transcript = await runtime.loop.process(recognizer.transcribe, audio.wav, audio.sample_rate,
                                            timeout_s=runtime.settings.request_timeout_s)
    if not transcript:
        raise InvalidParameter("the recogniser heard no words in the file; give the transcript", param="transcript")
    return transcript


async def _run(runtime: ServiceRuntime, request: Request, payload: EditInput | InfillRequest, params: TaskParams,
               key: SamplingKey, frames: float, audio: DecodedAudio, fmt: str, name: str,
               headers: dict[str, str]) -> Response:
    queued = submit(runtime, key, payload, params, 1, math.ceil(frames), "file")
    result = await await_result(queued, request.receive, runtime.settings.request_timeout_s)
    data, media_type = await asyncio.to_thread(render_speech, result.output, audio.sample_rate, fmt)
    runtime.metrics.audio_seconds.labels(key.task, "in").inc(audio.seconds)
    runtime.metrics.audio_seconds.labels(key.task, "out").inc(len(result.output) / audio.sample_rate)
    return Response(data, media_type=media_type,
                    headers={**result_headers(f"{name}.{fmt}", params, result, audio.sample_rate, 1), **headers})

