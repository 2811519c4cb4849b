"""Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer bodies and hide client disconnects).

`RequestContextMiddleware` (outermost) gives every response an ``X-Request-ID`` and ``X-Process-Time-Ms`` and
counts task requests by status. `AdmissionMiddleware` refuses what can be refused before the body is read
(401 key, 503 not ready / shutting down, 404 no model for the task, 413 declared size, 415 request type) and then
counts body bytes as they arrive, answering 413 as soon as the limit is passed: a 1 GB upload costs at most the
limit, never its size.
"""

from __future__ import annotations

import hmac
import re
import time
import uuid
from typing import TYPE_CHECKING

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import paths
from .errors import PayloadTooLarge, ServiceError, Unauthorized, UnsupportedMediaType, error_response
from .metrics import Metrics

if TYPE_CHECKING:
    from .runtime import ServiceRuntime

REQUEST_ID_KEY = "speechflow.request_id"  # in the ASGI scope
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
BODY_METHODS = {"POST", "PUT", "PATCH"}


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get("x-request-id", "")
        request_id = incoming if _SAFE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        scope[REQUEST_ID_KEY] = request_id
        start = time.perf_counter()
        status = 499  # stays so if the client goes away before a response starts (nginx's "client closed request")

        async def send_with_context(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                headers["X-Process-Time-Ms"] = f"{1000 * (time.perf_counter() - start):.1f}"
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        finally:
            task = paths.TASK_ROUTES.get(scope["path"])
            if task is not None:
                self.metrics.requests.labels(task, str(status)).inc()
                self.metrics.request_duration.labels(task).observe(time.perf_counter() - start)


class _BodyTooLarge(Exception):
    pass


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, runtime: ServiceRuntime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = self._precheck(scope)
        if error is not None:
            await self._reject(error, scope, receive, send)
            return
        limit = self.runtime.settings.max_upload_bytes
        received, exceeded, started = 0, False, False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge()  # stops the form parser here; nothing more is read
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # whatever the app makes of the aborted body is replaced by the 413 below
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._reject(_too_large(limit), scope, receive, send)

    def _precheck(self, scope: Scope) -> ServiceError | None:
        settings = self.runtime.settings
        headers = Headers(scope=scope)
        path = scope["path"]
        if settings.api_keys and self._needs_key(path) and not self._authorized(headers):
            return Unauthorized()
        if scope["method"] not in BODY_METHODS:
            return None
        task = paths.TASK_ROUTES.get(path)
        if task is not None:
            queued = path in paths.QUEUED_ROUTES
            error = (self.runtime.admission_error() or self.runtime.missing_model(task)
                     or (self.runtime.queue_error() if queued else None))
            if error is not None:
                return error
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_upload_bytes:
            return _too_large(settings.max_upload_bytes)
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if path in paths.UPLOAD_ROUTES and media != "multipart/form-data":
            if path == paths.TTS and media == "application/x-www-form-urlencoded":
                return None  # fine for a built-in voice (curl -d text=... -d voice=...): there is no file to send
            what = "the audio in the 'file' field" if path != paths.TTS else "the text in the 'text' field"
            return UnsupportedMediaType(f"send the request as multipart/form-data with {what}")
        if path in paths.JSON_ROUTES and media and media != "application/json" and not media.endswith("+json"):
            return UnsupportedMediaType("send the request as JSON (Content-Type: application/json)")
        return None

    def _needs_key(self, path: str) -> bool:
        if path in paths.OPEN_PATHS or path.startswith(paths.STATIC):
            return False
        return path != paths.METRICS or self.runtime.settings.protect_metrics

    def _authorized(self, headers: Headers) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        given = token.strip().encode()
        # compare against every key without stopping early, so timing does not reveal which one nearly matched
        keys = self.runtime.settings.api_keys
        matches = [hmac.compare_digest(given, key.get_secret_value().encode()) for key in keys]
        return any(matches)

    async def _reject(self, error: ServiceError, scope: Scope, receive: Receive, send: Send) -> None:
        self.runtime.metrics.rejected.labels(error.code).inc()
        headers = {"Connection": "close"} if scope["method"] in BODY_METHODS else None  # do not wait for a body
        await error_response(error, headers)(scope, receive, send)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")
