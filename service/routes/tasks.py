"""``POST /v1/enhance`` and ``POST /v1/separate``: one uploaded recording in, its enhanced or separated audio out,
at the upload's rate and length. The checks, in order: the form (422), one ``file`` (422), its type (415), its
decoding (400) and length (413), then the request's cost (413) and the queue (429, 503)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from starlette.responses import Response

from .. import paths
from ..engine import SamplingKey, TaskParams
from ..errors import InvalidParameter
from ..jobs import await_result, request_params, result_headers, submit, window_count
from ..lifecycle import ServiceRuntime
from ..openapi import AUDIO_RESPONSE
from ..schemas import TaskForm
from ..uploads import DecodedAudio, check_upload_type, decode_upload, render_audio

OUTPUT_NAMES = {"enhance": "enhanced", "separate": "separated"}


@dataclass(frozen=True)
class TaskJob:
    """One enhancement or separation request, parsed and checked: what the step loop runs and how to answer."""

    task: str
    audio: DecodedAudio
    params: TaskParams
    response_format: str


def router(runtime: ServiceRuntime) -> APIRouter:
    api = APIRouter()

    @api.post(paths.ENHANCE, response_class=Response, responses=AUDIO_RESPONSE, tags=["tasks"])
    async def enhance(request: Request, file: Annotated[UploadFile, File(description="noisy speech, any format "
                                                                      "libsndfile reads, any rate")],
                      form: Annotated[TaskForm, Form()]) -> Response:
        """Noisy speech in, clean speech out (at the input's rate and length)."""
        return await _run(runtime, await _parse(runtime, "enhance", file, form, request), request)

    @api.post(paths.SEPARATE, response_class=Response, responses=AUDIO_RESPONSE, tags=["tasks"])
    async def separate(request: Request, file: Annotated[UploadFile, File(description="a two-talker mixture")],
                       form: Annotated[TaskForm, Form()]) -> Response:
        """A two-talker mixture in; one audio file with two channels (speaker 1, speaker 2) out."""
        return await _run(runtime, await _parse(runtime, "separate", file, form, request), request)

    return api


async def _parse(runtime: ServiceRuntime, task: str, upload: UploadFile, form: TaskForm,
                 request: Request) -> TaskJob:
    engine = runtime.serving(task)
    settings = runtime.settings
    params = request_params(settings, engine, task, form.steps, form.solver, form.guidance, form.seed,
                            form.reconstruction, form.ensemble, form.quality)
    if len((await request.form()).getlist("file")) > 1:  # already parsed: the form is cached on the request
        raise InvalidParameter("send one file per request (the form has several 'file' fields)", param="file")
    check_upload_type(upload.content_type)
    data = await upload.read()
    decoded = await asyncio.to_thread(decode_upload, data, upload.content_type, upload.filename,
                                      target_sr=engine.sample_rate, max_seconds=settings.max_audio_seconds,
                                      max_decoded_bytes=settings.max_decoded_bytes)
    return TaskJob(task, decoded, params, form.response_format)


async def _run(runtime: ServiceRuntime, job: TaskJob, request: Request) -> Response:
    engine = runtime.engine
    frames = engine.frames(len(job.audio.wav))
    draws = job.params.sampling.ensemble  # every draw of every window is a row
    queued = submit(runtime, SamplingKey.of(job.task, job.params), job.audio.wav, job.params,
                    draws * window_count(frames), draws * frames, "file")
    result = await await_result(queued, request.receive, runtime.settings.request_timeout_s)
    audio, media_type = await asyncio.to_thread(render_audio, result.output, engine.sample_rate, job.audio,
                                                job.response_format)
    channels = 1 if result.output.ndim == 1 else result.output.shape[0]
    runtime.metrics.audio_seconds.labels(job.task, "in").inc(job.audio.seconds)
    runtime.metrics.audio_seconds.labels(job.task, "out").inc(job.audio.seconds * channels)
    filename = f"{OUTPUT_NAMES[job.task]}.{job.response_format}"
    return Response(audio, media_type=media_type,
                    headers=result_headers(filename, job.params, result, job.audio.sample_rate, channels))
