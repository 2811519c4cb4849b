"""The FastAPI app, built by `create_app`: the runtime, the middleware, one router per resource (service/routes/),
the error envelope and the demo page. No module-level state: tests build as many apps as they like, each with its
own engine, step loop and metrics registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from .engine import Engine
from .errors import ServiceError, error_body, error_response
from .lifecycle import ServiceRuntime
from .middleware import AdmissionMiddleware, RequestContextMiddleware
from .openapi import ERROR_RESPONSES, strict_openapi
from .routes import editing, models, speech, tasks, voices
from .schemas import EditForm, InfillForm, TaskForm, TtsForm, VoiceForm
from .settings import Settings

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
    app.include_router(models.probes(runtime))
    for resource in (tasks, speech, editing, voices, models):
        app.include_router(resource.router(runtime), dependencies=[Depends(_bearer)], responses=ERROR_RESPONSES)
    _demo(app)
    app.openapi = strict_openapi(app, (TaskForm, TtsForm, VoiceForm, EditForm, InfillForm))  # type: ignore[method-assign]
    return app


def _demo(app: FastAPI) -> None:
    """The demo page at / and its script and style under /static/ (no API key needed to load them)."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def demo() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")


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
        fields = [_field(e) for e in errors]
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


def _field(error: dict[str, Any]) -> str:
    """The field a validation error is about ("" for the body as a whole)."""
    parts = [p for p in error["loc"] if p not in ("body", "query", "path")]
    if error["type"] == "json_invalid" and not all(isinstance(p, str) for p in parts):
        return ""  # the JSON body itself: its loc is a character position, not a field
    return ".".join(str(p) for p in parts)


def _validation_text(error: dict[str, Any]) -> str:
    if error["type"] == "json_invalid":
        what = "the body" if not _field(error) else "it"  # a JSON body, or a form field holding JSON
        return f"{what} is not valid JSON ({error.get('ctx', {}).get('error', 'decode error')})"
    if error["type"] == "missing" and tuple(error["loc"]) == ("body",):
        return "the request has no body"
    return error["msg"].removeprefix("Value error, ")
