"""Errors the service answers with, and the one JSON envelope they all take:
``{"error": {"message", "type", "code", "param"}}`` (OpenAI style, so existing clients can read it).

``code`` is stable and machine-readable; it is also the ``reason`` label of ``speechflow_rejected_total``.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.responses import JSONResponse


class ServiceError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.code, self.param)


class BadAudio(ServiceError):
    status, type, code = 400, "invalid_request_error", "invalid_audio"


class Unauthorized(ServiceError):
    status, type, code = 401, "authentication_error", "invalid_api_key"

    def __init__(self, message: str = "missing or invalid API key (send 'Authorization: Bearer <key>')") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError):
    status, type, code = 403, "permission_error", "forbidden"


class NotFound(ServiceError):
    status, type, code = 404, "not_found_error", "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class PayloadTooLarge(ServiceError):
    status, type, code = 413, "invalid_request_error", "request_too_large"


class AudioTooLong(ServiceError):
    status, type, code = 413, "invalid_request_error", "audio_too_long"


class AudioTooLarge(ServiceError):
    """The upload's header declares more decoded samples (samples x channels) than the server decodes."""

    status, type, code = 413, "invalid_request_error", "audio_too_large"


class TextTooLong(ServiceError):
    status, type, code = 413, "invalid_request_error", "text_too_long"


class RequestTooCostly(ServiceError):
    """Refused before any work: the request alone needs more rows, frames or compute time than the server allows."""

    status, type, code = 413, "invalid_request_error", "request_too_costly"


class UnsupportedMediaType(ServiceError):
    status, type, code = 415, "invalid_request_error", "unsupported_media_type"


class InvalidParameter(ServiceError):
    status, type, code = 422, "invalid_request_error", "invalid_parameter"


class QueueFull(ServiceError):
    status, type, code = 429, "rate_limit_error", "queue_full"

    def __init__(self, retry_after_s: float) -> None:
        seconds = max(1, math.ceil(retry_after_s))
        super().__init__(f"the server is busy; retry in {seconds} s", headers={"Retry-After": str(seconds)})


class NotReady(ServiceError):
    status, type, code = 503, "service_unavailable", "not_ready"

    def __init__(self, message: str = "the model is still loading or warming up") -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class ShuttingDown(ServiceError):
    status, type, code = 503, "service_unavailable", "shutting_down"

    def __init__(self, message: str = "the server is shutting down and takes no new work") -> None:
        super().__init__(message)


class VoicesUnavailable(ServiceError):
    """The uploaded voices' store cannot be reached (an unwritable data directory, a database that is down): a
    server fault, said so. Nothing is half-stored, and the next request tries the store again."""

    status, type, code = 503, "service_unavailable", "voices_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class DeadlineExceeded(ServiceError):
    status, type, code = 504, "timeout_error", "deadline_exceeded"


class NotImplementedYet(ServiceError):
    status, type, code = 501, "not_implemented", "not_implemented"


def error_body(message: str, type_: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def error_response(error: ServiceError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers={**error.headers, **(headers or {})})
