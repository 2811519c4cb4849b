"""Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer bodies and hide client disconnects).

`RequestContextMiddleware` (outermost) gives every response an ``X-Request-ID`` and ``X-Process-Time-Ms`` and
counts task requests by status. `AdmissionMiddleware` refuses what can be refused before the body is read
(401 key, 503 not ready / shutting down, 404 no model for the task, 429 queue full, 413 declared size, 415 request
type) and then counts body bytes as they arrive, answering 413 as soon as the limit is passed: a 1 GB upload costs
at most the limit, never its size.

A refusal the client should retry (429, 503) is decided before the body is read, but answered after the body has
been read and thrown away (at most the upload limit, for at most ``DRAIN_TIMEOUT_S``): clients such as httpx write
the whole request before they read, and a server that closes while their body is still arriving resets the
connection, so the client saw a broken connection instead of the 429 (found by the soak test: ~20 % of the requests
refused in a burst). A client that sends ``Expect: 100-continue`` is answered at once and never sends the body.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from .voices import key_owner, request_owner

if TYPE_CHECKING:
    from .lifecycle import ServiceRuntime

REQUEST_ID_KEY = "speechflow.request_id"  # in the ASGI scope
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
BODY_METHODS = {"POST", "PUT", "PATCH"}
RETRYABLE = {429, 503}
DRAIN_TIMEOUT_S = 10.0


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
        # who the caller is, for the voices they uploaded; only the hash of a key that passed _precheck
        owner = key_owner(_bearer_token(Headers(scope=scope))) if self.runtime.settings.api_keys else ""
        reset = request_owner.set(owner)
        try:
            await self._admitted(scope, receive, send)
        finally:
            request_owner.reset(reset)

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
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
        # every route with a body takes POST only: the router answers 405 to PUT and PATCH, which must not be
        # refused first as if they were malformed uploads (415) or queued work (429, 503)
        posted = scope["method"] == "POST"
        task = paths.TASK_ROUTES.get(path) if posted else None
        if task is not None:
            queued = path in paths.QUEUED_ROUTES
            error = (self.runtime.admission_error() or self.runtime.missing_model(task)
                     or (self.runtime.queue_error() if queued else None))
            if error is not None:
                return error
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_upload_bytes:
            return _too_large(settings.max_upload_bytes)
        if not posted:
            return None
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
        token = _bearer_token(headers)
        if token is None:
            return False
        given = token.encode()
        # compare against every key without stopping early, so timing does not reveal which one nearly matched
        keys = self.runtime.settings.api_keys
        matches = [hmac.compare_digest(given, key.get_secret_value().encode()) for key in keys]
        return any(matches)

    async def _reject(self, error: ServiceError, scope: Scope, receive: Receive, send: Send) -> None:
        self.runtime.metrics.rejected.labels(error.code).inc()
        has_body = scope["method"] in BODY_METHODS
        if has_body and error.status in RETRYABLE and self._drainable(Headers(scope=scope)):
            with contextlib.suppress(asyncio.TimeoutError):  # a client this slow gets its answer now (or a reset)
                await asyncio.wait_for(self._drain(receive), DRAIN_TIMEOUT_S)
        headers = {"Connection": "close"} if has_body else None  # do not wait for (the rest of) a body
        await error_response(error, headers)(scope, receive, send)

    def _drainable(self, headers: Headers) -> bool:
        if headers.get("expect", "").lower() == "100-continue":
            return False  # the client waits for our word before it sends the body: it will never send it
        declared = headers.get("content-length")
        return declared is None or (declared.isdigit() and int(declared) <= self.runtime.settings.max_upload_bytes)

    async def _drain(self, receive: Receive) -> None:
        """Read and discard the request body, up to the upload limit."""
        left = self.runtime.settings.max_upload_bytes
        while left >= 0:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
            left -= len(message.get("body", b""))


def _bearer_token(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes")
