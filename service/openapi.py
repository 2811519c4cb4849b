"""The OpenAPI document as the server behaves: multipart bodies that refuse unknown fields say so.

FastAPI describes a multipart body as ``allOf: [the form model]`` plus the file fields. That lets any other field
through as far as the schema goes, while `StrictForm` answers an unknown field with a 422, so clients generated
from the schema, and fuzzers, could not know. Each such body is flattened into one object with the form's fields
and the files, and ``additionalProperties: false``. A field's other accepted names (``guidance`` for ``cfg``)
are listed beside it, since the server takes them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from pydantic import AliasChoices, BaseModel

from .schemas import ErrorEnvelope

# what the routes declare about their answers
AUDIO_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"audio/wav": {}, "audio/flac": {}, "audio/ogg": {}, "audio/L16": {}, "audio/mpeg": {},
                      "audio/aac": {}, "text/event-stream": {}},
          "description": "the result as an audio file (streamed as it is generated where the request asks for it, "
                         "the default of /v1/audio/speech), or OpenAI's speech events (text/event-stream)"},
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": text} for status, text in {
        400: "bad audio", 401: "missing or wrong API key", 403: "not yours to delete", 404: "no such model or route",
        413: "too large or too long",
        415: "not multipart or not audio", 422: "invalid parameters", 429: "queue full (see Retry-After)",
        503: "not ready or shutting down", 504: "deadline passed"}.items()
}
REF_PREFIX = "#/components/schemas/"


def _other_names(form: type[BaseModel]) -> dict[str, str]:
    """{accepted other name: the name the schema lists} of a form's fields (the first alias choice is listed)."""
    names = {}
    for field in form.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            listed, *others = [c for c in alias.choices if isinstance(c, str)]
            names |= dict.fromkeys(others, listed)
    return names


def close_form_bodies(spec: dict[str, Any], forms: Iterable[type[BaseModel]]) -> None:
    """In place: every component schema that is ``allOf`` one of ``forms`` plus its own properties becomes that
    form's schema with the properties (and the fields' other accepted names) added, closed to any other field."""
    schemas = spec.get("components", {}).get("schemas", {})
    refs = {REF_PREFIX + form.__name__: form for form in forms}
    for name, schema in list(schemas.items()):
        parts = schema.get("allOf", [])
        if len(parts) != 1 or parts[0].get("$ref") not in refs:
            continue
        model = refs[parts[0]["$ref"]]
        form = copy.deepcopy(schemas[model.__name__])
        properties = form.get("properties", {})
        for other, listed in _other_names(model).items():
            properties[other] = {**properties[listed], "description": f"the same as {listed}"}
        form["properties"] = {**properties, **schema.get("properties", {})}
        required = [*form.get("required", []), *schema.get("required", [])]
        if required:
            form["required"] = list(dict.fromkeys(required))
        form["title"] = schema.get("title", name)
        form["additionalProperties"] = False
        schemas[name] = form


def strict_openapi(app: FastAPI, forms: Iterable[type[BaseModel]]) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` that closes the form bodies once, when the document is first built (FastAPI caches it)."""
    build, forms = app.openapi, tuple(forms)

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        spec = build()
        if fresh:
            close_form_bodies(spec, forms)
        return spec

    return openapi
