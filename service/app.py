"""The FastAPI app, built by `create_app` (no module-level state: tests build as many apps as they like, each
with its own engine, batcher and metrics registry)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from . import paths
from .engine import Engine
from .errors import ServiceError, error_body, error_response
from .middleware import AdmissionMiddleware, RequestContextMiddleware
from .openapi import strict_openapi
from .runtime import ServiceRuntime
from .schemas import (
    ErrorEnvelope,
    Health,
    ModelList,
    SpeechRequest,
    StoredVoiceCard,
    StoredVoiceList,
    TaskForm,
    TtsForm,
    VoiceDeleted,
    VoiceForm,
    VoiceList,
)
from .settings import Settings

log = logging.getLogger(__name__)

AUDIO_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"audio/wav": {}, "audio/flac": {}, "audio/ogg": {}, "audio/L16": {}, "audio/mpeg": {},
                      "text/event-stream": {}},
          "description": "the result as an audio file"},
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": text} for status, text in {
        400: "bad audio", 401: "missing or wrong API key", 403: "not yours to delete", 404: "no such model or route",
        413: "too large or too long",
        415: "not multipart or not audio", 422: "invalid parameters", 429: "queue full (see Retry-After)",
        503: "not ready or shutting down", 504: "deadline passed"}.items()
}
_STATUS_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
STATIC_DIR = Path(__file__).parent / "static"  # the demo page: plain HTML/JS/CSS, no build step
_bearer = HTTPBearer(auto_error=False, description="API key, when the server has any (SPEECHFLOW_API_KEYS)")


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """The service; without ``engine`` the bundle named in ``settings`` is loaded at startup."""
    runtime = ServiceRuntime(settings or Settings(), engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title="SpeechFlow", version="0.1.0", lifespan=lifespan,
                  description="Speech enhancement, two-speaker separation and zero-shot text-to-speech with a "
                              "flow-matching model. Errors are JSON: {\"error\": {\"message\", \"type\", \"code\", "
                              "\"param\"}}.")
    app.state.runtime = runtime
    app.add_middleware(AdmissionMiddleware, runtime=runtime)
    app.add_middleware(RequestContextMiddleware, metrics=runtime.metrics)  # added last = outermost
    _add_error_handlers(app, runtime)
    app.include_router(_probes(runtime))
    app.include_router(_api(runtime), dependencies=[Depends(_bearer)], responses=ERROR_RESPONSES)
    _demo(app)
    app.openapi = strict_openapi(app, (TaskForm, TtsForm, VoiceForm))  # type: ignore[method-assign]
    return app


def _api(runtime: ServiceRuntime) -> APIRouter:
    router = APIRouter()

    @router.post(paths.ENHANCE, response_class=Response, responses=AUDIO_RESPONSE, tags=["tasks"])
    async def enhance(request: Request, file: Annotated[UploadFile, File(description="noisy speech, any format "
                                                                         "libsndfile reads, any rate")],
                      form: Annotated[TaskForm, Form()]) -> Response:
        """Noisy speech in, clean speech out (at the input's rate and length)."""
        return await runtime.process("enhance", file, form, request)

    @router.post(paths.SEPARATE, response_class=Response, responses=AUDIO_RESPONSE, tags=["tasks"])
    async def separate(request: Request, file: Annotated[UploadFile, File(description="a two-talker mixture")],
                       form: Annotated[TaskForm, Form()]) -> Response:
        """A two-talker mixture in; one audio file with two channels (speaker 1, speaker 2) out."""
        return await runtime.process("separate", file, form, request)

    @router.post(paths.TTS, response_class=Response, responses=AUDIO_RESPONSE, tags=["tts"])
    async def tts(request: Request, form: Annotated[TtsForm, Form()],
                  prompt: Annotated[UploadFile | None, File(description="0.5-15 s of the voice to use (any format "
                                                            "libsndfile reads, any rate), with prompt_text")] = None,
                  ) -> Response:
        """Zero-shot TTS: ``text`` in a built-in ``voice`` or in the voice of an uploaded ``prompt`` whose transcript
        is ``prompt_text``. Returns 16 kHz mono audio. Text longer than the server's max_text_chars: 413
        text_too_long; a prompt over 15 s: 413 audio_too_long, under 0.5 s: 422. 404 without a TTS model."""
        return await runtime.tts(form, prompt, request)

    @router.post(paths.SPEECH, response_class=Response, responses=AUDIO_RESPONSE, tags=["tts"])
    async def speech(request: Request, body: SpeechRequest) -> Response:
        """OpenAI-compatible speech: ``input`` in a built-in ``voice`` (unknown: 422 listing the voices). ``model``
        is 'tts' (what /v1/models lists) or one of OpenAI's tts-1, tts-1-hd, gpt-4o-mini-tts (others: 404).
        ``response_format`` wav, flac, ogg or pcm, all 16 kHz mono (mp3, opus, aac: 422)."""
        return await runtime.speech(body, request)

    @router.get(paths.VOICES, response_model=VoiceList, tags=["tts"])
    async def voices() -> VoiceList:
        """Every voice the ``voice`` parameter takes: the built-in ones (with the OpenAI names that are aliases of
        them) and the uploaded ones, with what their prompts say."""
        return runtime.voice_list()

    @router.post(paths.AUDIO_VOICES, response_model=StoredVoiceCard, tags=["tts"])
    async def create_voice(form: Annotated[VoiceForm, Form()],
                           audio_sample: Annotated[UploadFile, File(description="0.5-15 s of the voice, any format "
                                                                    "libsndfile reads")]) -> StoredVoiceCard:
        """Store a voice (kept across restarts) to use by its id wherever a voice is taken. ``consent`` must be
        true. Without ``transcript`` the server transcribes the sample and says so (``transcribed``)."""
        return await runtime.voice_api.create(form, audio_sample)

    @router.get(paths.AUDIO_VOICES, response_model=StoredVoiceList, tags=["tts"])
    async def list_voices() -> StoredVoiceList:
        """The uploaded voices."""
        return await runtime.voice_api.list()

    @router.delete(paths.AUDIO_VOICES + "/{voice_id}", response_model=VoiceDeleted, tags=["tts"])
    async def delete_voice(voice_id: str) -> VoiceDeleted:
        """Delete an uploaded voice (with API keys: only the key that created it may)."""
        return await runtime.voice_api.delete(voice_id)

    @router.get(paths.MODELS, response_model=ModelList, tags=["service"])
    async def models() -> ModelList:
        """The bundle's models and the endpoints that serve them."""
        return runtime.model_list()

    @router.get(paths.METRICS, tags=["service"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics (behind the API key only when protect_metrics is set)."""
        body, media_type = runtime.metrics.render()
        return Response(body, media_type=media_type)

    return router


def _demo(app: FastAPI) -> None:
    """The demo page at / and its script and style under /static/ (no API key needed to load them)."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def demo() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")


def _probes(runtime: ServiceRuntime) -> APIRouter:
    router = APIRouter(tags=["service"])

    @router.get(paths.LIVEZ, response_model=Health)
    async def livez() -> Health:
        """The process answers (no model work)."""
        return Health(status="ok")

    @router.get(paths.READYZ, response_model=Health, responses={503: {"model": ErrorEnvelope}})
    async def readyz() -> Health:
        """200 once the model is loaded and warm; 503 before that and while shutting down."""
        error = runtime.admission_error()
        if error is not None:
            raise error
        return Health(status="ready")

    return router


def _add_error_handlers(app: FastAPI, runtime: ServiceRuntime) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        if exc.status != 500:  # a failure of ours is not a refusal; requests_total{status="500"} counts it
            runtime.metrics.rejected.labels(exc.code).inc()
        return error_response(exc)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the exception after this answer; the client gets the envelope, not a text page
        return JSONResponse(error_body("internal server error", "server_error", "internal_error"), 500)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        runtime.metrics.rejected.labels("invalid_parameter").inc()
        errors = exc.errors()
        fields = ["" if e["type"] == "json_invalid" else ".".join(str(p) for p in e["loc"]
                                                                  if p not in ("body", "query", "path"))
                  for e in errors]
        texts = [_validation_text(e) for e in errors]
        message = "; ".join(f"{f}: {t}" if f else t for f, t in zip(fields, texts, strict=True))
        # the parameter is the field itself, not the union member or list index pydantic adds (voice.str -> voice)
        param = fields[0].split(".")[0] if fields and fields[0] else None
        return JSONResponse(error_body(message, "invalid_request_error", "invalid_parameter", param), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names the methods of the first route on the path only
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return JSONResponse(error_body(str(exc.detail), kind, code), exc.status_code, headers=headers)


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route takes on this path (GET and POST /v1/audio/voices are two routes): asked of the
    routes themselves, method by method, as included routers do not expose theirs."""
    scope = request.scope
    return [m for m in HTTP_METHODS if any(route.matches({**scope, "method": m})[0] == Match.FULL
                                           for route in app.router.routes)]


def _validation_text(error: dict[str, Any]) -> str:
    if error["type"] == "json_invalid":  # its loc is a character position, not a field
        return f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'decode error')})"
    if error["type"] == "missing" and tuple(error["loc"]) == ("body",):
        return "the request has no body"
    return error["msg"].removeprefix("Value error, ")
