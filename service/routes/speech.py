"""Text-to-speech: ``POST /v1/tts`` (form: ``text`` in a built-in ``voice``, or in the voice of an uploaded
``prompt`` with its transcript ``prompt_text``) and the OpenAI-compatible ``POST /v1/audio/speech`` (JSON:
``input`` in a ``voice``). Both become one `SpeechJob` and take the same path (deadline, 429, cancellation,
metrics), whole or streamed.

The checks, in order: the form or JSON schema (422: speed outside 0.25-4, an unknown field or format), the model
name (404, /v1/audio/speech), the text (413 ``text_too_long`` above ``max_text_chars``, 422 when blank;
``prompt_text`` above ``max_prompt_text_chars`` likewise), voice or prompt (422: unknown voice, both or neither, a
prompt without ``prompt_text``), then the uploaded prompt (service/voice_book.py: 415, 400, 413 over 15 s, 422
under 0.5 s), the sampling settings, the stream format, the cost (413) and the queue (429). What only the model can
find out (text with nothing speakable, a transcript that cannot fit its prompt) comes back as 422 naming the
parameter."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from starlette.responses import Response

from model.duration import DurationError
from model.errors import AudioError, ConfigError
from model.text import TextError, normalize_text

from .. import paths
from ..engine import Engine, SamplingKey, TaskParams, TtsInput, tts_cost
from ..errors import InvalidParameter, ModelNotFound, ServiceError, TextTooLong
from ..jobs import await_result, request_params, result_headers, submit
from ..lifecycle import ServiceRuntime
from ..openai_names import OPENAI_SPEECH_MODELS, TTS_MODEL_ID
from ..openapi import AUDIO_RESPONSE
from ..schemas import SpeechRequest, TtsForm
from ..settings import Settings
from ..speech_stream import stream_response
from ..streaming import STREAMED_FORMATS
from ..uploads import render_speech
from ..voice_book import decode_prompt


@dataclass(frozen=True)
class _Names:
    """The request's names for the text and voice parameters (/v1/tts: text, /v1/audio/speech: input)."""

    text: str
    voice: str = "voice"


@dataclass(frozen=True)
class SpeechJob:
    """One TTS request, parsed and checked: what the step loop runs and how to answer."""

    payload: TtsInput
    params: TaskParams
    response_format: str
    stream_format: str | None
    names: _Names
    prompt_seconds: float = 0.0


def router(runtime: ServiceRuntime) -> APIRouter:
    api = APIRouter()

    @api.post(paths.TTS, response_class=Response, responses=AUDIO_RESPONSE, tags=["tts"])
    async def tts(request: Request, form: Annotated[TtsForm, Form()],
                  prompt: Annotated[UploadFile | None, File(description="0.5-15 s of the voice to use (any format "
                                                            "libsndfile reads, any rate), with prompt_text")] = None,
                  ) -> Response:
        """Zero-shot TTS: ``text`` in a built-in ``voice`` or in the voice of an uploaded ``prompt`` whose transcript
        is ``prompt_text``. Returns 16 kHz mono audio. Text longer than the server's max_text_chars: 413
        text_too_long; a prompt over 15 s: 413 audio_too_long, under 0.5 s: 422. 404 without a TTS model."""
        return await _run(runtime, await _parse_form(runtime, form, prompt), request)

    @api.post(paths.SPEECH, response_class=Response, responses=AUDIO_RESPONSE, tags=["tts"])
    async def speech(request: Request, body: SpeechRequest) -> Response:
        """OpenAI-compatible speech: ``input`` in a built-in ``voice`` (unknown: 422 listing the voices). ``model``
        is 'tts' (what /v1/models lists) or one of OpenAI's tts-1, tts-1-hd, gpt-4o-mini-tts (others: 404).
        ``response_format`` mp3 (the default), opus, wav, flac, ogg or pcm, all 16 kHz mono (aac: 422)."""
        response = await _run(runtime, await _parse_json(runtime, body), request)
        if body.instructions is not None:
            response.headers["X-Instructions"] = "ignored"
        return response

    return api


async def _parse_form(runtime: ServiceRuntime, form: TtsForm, prompt: UploadFile | None) -> SpeechJob:
    engine = runtime.serving("tts")
    settings = runtime.settings
    names = _Names("text")
    text = _check_text(settings, form.text, names.text)
    if prompt is not None and form.voice is not None:
        raise InvalidParameter("give either voice or prompt (with prompt_text), not both", param="voice")
    if prompt is None:
        if form.voice is None:
            raise InvalidParameter("give a voice (see /v1/voices), or upload a prompt (0.5-15 s of the voice to "
                                   "use) with its transcript in prompt_text", param="voice")
        if form.prompt_text is not None:
            raise InvalidParameter("prompt_text is the transcript of an uploaded prompt; a built-in voice has "
                                   "its own", param="prompt_text")
        payload = await runtime.voices.tts_input(engine, form.voice, text, form.speed, names.voice)
        prompt_seconds = 0.0
    else:
        if not (form.prompt_text and form.prompt_text.strip()):
            raise InvalidParameter("an uploaded prompt needs prompt_text, the transcript of what it says",
                                   param="prompt_text")
        if len(form.prompt_text) > settings.max_prompt_text_chars:
            raise TextTooLong(f"prompt_text is {len(form.prompt_text)} characters; the limit is "
                              f"{settings.max_prompt_text_chars}", param="prompt_text")
        decoded = await decode_prompt(settings, engine, prompt, "prompt")
        payload = TtsInput(text, prompt=decoded.wav, prompt_text=form.prompt_text, speed=form.speed)
        prompt_seconds = decoded.seconds
    params = request_params(settings, "tts", form.steps, form.solver, form.cfg, form.seed, "vocoder")
    return _job(payload, params, form.response_format, form.stream_format, names, prompt_seconds)


async def _parse_json(runtime: ServiceRuntime, body: SpeechRequest) -> SpeechJob:
    engine = runtime.serving("tts")
    if body.model not in (TTS_MODEL_ID, *OPENAI_SPEECH_MODELS):
        raise ModelNotFound(f"unknown model {body.model!r}; this server's TTS model is {TTS_MODEL_ID!r} (OpenAI's "
                            f"{', '.join(OPENAI_SPEECH_MODELS)} are accepted as its aliases)", param="model")
    names = _Names("input")
    text = _check_text(runtime.settings, body.input, names.text)
    payload = await runtime.voices.tts_input(engine, body.voice_id, text, body.speed, names.voice)
    params = request_params(runtime.settings, "tts", body.steps, body.solver, body.cfg, body.seed, "vocoder")
    return _job(payload, params, body.response_format, body.stream_format, names)


def _check_text(settings: Settings, text: str, param: str) -> str:
    limit = settings.max_text_chars
    if len(text) > limit:
        raise TextTooLong(f"{param} is {len(text)} characters; the limit is {limit}", param=param)
    if not text.strip():
        raise InvalidParameter(f"{param} is empty: give the text to speak", param=param)
    return text


def _job(payload: TtsInput, params: TaskParams, fmt: str, stream_format: str | None, names: _Names,
         prompt_seconds: float = 0.0) -> SpeechJob:
    if stream_format is not None and fmt not in STREAMED_FORMATS:
        raise InvalidParameter(f"{fmt} cannot be streamed (its header needs the total length); stream one of "
                               f"{', '.join(STREAMED_FORMATS)}, or leave stream_format out", param="stream_format")
    return SpeechJob(payload, params, fmt, stream_format, names, prompt_seconds)


async def _run(runtime: ServiceRuntime, job: SpeechJob, request: Request) -> Response:
    engine = runtime.engine
    payload, params, fmt = job.payload, job.params, job.response_format
    timeout_s = runtime.settings.request_timeout_s
    queued = submit(runtime, SamplingKey.of("tts", params), payload, params,
                    *tts_cost(payload.text, _prompt_frames(engine, payload), payload.speed), job.names.text,
                    stream=job.stream_format is not None)
    runtime.metrics.audio_seconds.labels("tts", "in").inc(job.prompt_seconds)
    translate = lambda e: _tts_error(e, payload, job.names)  # noqa: E731
    if job.stream_format is not None:
        return await stream_response(queued, request.receive, translate, timeout_s, fmt, job.stream_format == "sse",
                                     params, engine.sample_rate, len(payload.text))
    result = await await_result(queued, request.receive, timeout_s, translate)
    wav = np.asarray(result.output, dtype=np.float32)
    audio, media_type = await asyncio.to_thread(render_speech, wav, engine.sample_rate, fmt)
    runtime.metrics.audio_seconds.labels("tts", "out").inc(len(wav) / engine.sample_rate)
    headers = result_headers(f"speech.{fmt}", params, result, engine.sample_rate, 1)
    headers["X-Audio-Seconds"] = f"{len(wav) / engine.sample_rate:.3f}"
    return Response(audio, media_type=media_type, headers=headers)


def _prompt_frames(engine: Engine, payload: TtsInput) -> int:
    if payload.prompt is not None:
        return engine.frames(len(payload.prompt))
    return engine.frames(int(engine.voices[str(payload.voice)].seconds * engine.sample_rate))


def _tts_error(error: Exception, request: TtsInput, names: _Names) -> ServiceError | None:
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
