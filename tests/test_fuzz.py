"""Fuzzing from the OpenAPI schema (schemathesis): every operation gets schema-valid and schema-violating requests,
with and without the API key, and every answer must be a non-5xx that the schema declares (status, content type,
body). A second pass sends schema-valid forms with real audio and known voices, which random bytes never are, so
the fuzzer's parameters reach the engine too. The app is the real one on the fake engine, called in process.

Bounded for CI: ``FUZZ_EXAMPLES`` generated cases per operation (plus schemathesis' own examples and coverage
cases), ``AUDIO_EXAMPLES`` per upload operation, the same cases every run; about 30 s on two cores.
``SPEECHFLOW_FUZZ_EXAMPLES=500`` runs that many of each, freshly drawn, for a deeper look. Regressions for what it
found are at the end."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

import numpy as np
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import positive_data_acceptance
from starlette.types import Receive, Scope, Send

from bench.fake_engine import FakeEngine
from model.audio import encode_audio
from service.app import create_app
from service.settings import Settings
from tests.test_service_app import assert_error, scenario

DEEPER = os.environ.get("SPEECHFLOW_FUZZ_EXAMPLES")
FUZZ_EXAMPLES = int(DEEPER or 40)
AUDIO_EXAMPLES = int(DEEPER or 25)
KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
# a 4xx for a schema-valid request is right here: the schema cannot say "audio" of a file or "known" of a voice
EXCLUDED = [positive_data_acceptance]


def fuzz_settings(examples: int) -> settings:
    # no example database: CI runs are reproducible and leave no .hypothesis/ behind
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                    derandomize=DEEPER is None)


def fuzz_app(data_dir: str) -> FastAPI:
    config = Settings(max_wait_ms=0, data_dir=data_dir, api_keys=[KEY], protect_metrics=True, max_queue=1024)
    return create_app(config, FakeEngine(tasks=("enhance", "separate", "tts")))


class FreshApp:
    """The ASGI app schemathesis calls: each lifespan (schemathesis runs one per test item) builds a new app with
    its own data directory and starts answering once it is warm, so no case sees another test's voices or a
    not-ready 503."""

    def __init__(self) -> None:
        self.app: FastAPI | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            assert self.app is not None, "the lifespan starts before the first request"
            await self.app(scope, receive, send)
            return
        async with AsyncExitStack() as stack:
            while (await receive())["type"] == "lifespan.startup":
                self.app = fuzz_app(stack.enter_context(tempfile.TemporaryDirectory()))
                await stack.enter_async_context(self.app.router.lifespan_context(self.app))
                await self.app.state.runtime.wait_ready()
                await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})


SCHEMA = schemathesis.openapi.from_dict(fuzz_app(tempfile.gettempdir()).openapi())  # builds the app, starts nothing
SCHEMA.app = FreshApp()  # what from_asgi would set, without a request at import time


@SCHEMA.parametrize()
@fuzz_settings(FUZZ_EXAMPLES)
def test_no_input_from_the_schema_is_a_server_error(case):
    case.call_and_validate(headers=AUTH, excluded_checks=EXCLUDED)


def _audio(seconds: float, sr: int, fmt: str, channels: int = 1) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    tone = (0.2 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    return encode_audio(tone if channels == 1 else np.stack([tone] * channels), sr, fmt)


REAL_AUDIO = [_audio(1.0, 16000, "wav"), _audio(0.7, 44100, "flac", channels=2), _audio(2.0, 8000, "ogg")]
VOICES = ["alice", "alloy", "voice_0123456789abcdef"]  # built-in, an OpenAI alias of it, an unknown upload
UPLOAD_FIELDS = {"file", "prompt", "audio_sample"}
AUDIO_OPERATIONS = [("/v1/enhance", "POST"), ("/v1/separate", "POST"), ("/v1/tts", "POST"),
                    ("/v1/audio/speech", "POST"), ("/v1/audio/voices", "POST")]




def _with_real_inputs(case: Any, audio: bytes, voice: str, tame: bool) -> None:
    """Real audio in every upload field; when ``tame``, also the parts of a request the schema cannot describe made
    valid (a known voice and model, consent, a transcript), so that what varies is the rest."""
    body = case.body
    if not isinstance(body, dict):
        return
    for field in UPLOAD_FIELDS & set(body):
        body[field] = audio
    body.pop("prompt", None)  # schemathesis sends an optional upload as a text field; prompts: /v1/audio/voices
    if not tame:
        return
    for field in list(body):
        if body[field] is None or isinstance(body[field], dict | list):
            del body[field]  # a form field holds a string; schemathesis may encode null or an object into one
    path = case.operation.path
    if path in ("/v1/tts", "/v1/audio/speech"):
        body["voice"] = voice
    if path == "/v1/audio/speech":
        body.update(model="tts", input=str(body.get("input") or "Hello."))
    if path == "/v1/audio/voices":
        body.update(consent=True, name=str(body.get("name") or "x").strip()[:64] or "x", transcript="hello there")


@pytest.mark.parametrize(("path", "method"), AUDIO_OPERATIONS, ids=[p for p, _ in AUDIO_OPERATIONS])
def test_schema_valid_forms_with_real_audio_reach_the_engine(path, method):
    statuses: Counter[int] = Counter()

    @fuzz_settings(AUDIO_EXAMPLES)
    @given(case=SCHEMA[path][method].as_strategy(), audio=st.sampled_from(REAL_AUDIO), voice=st.sampled_from(VOICES),
           tame=st.booleans())
    def run(case, audio, voice, tame):
        _with_real_inputs(case, audio, voice, tame)
        response = case.call_and_validate(headers=AUTH, excluded_checks=EXCLUDED)
        statuses[response.status_code] += 1

    run()
    assert statuses[200] > 0, statuses  # the fuzzed parameters got past validation to a result at least once


# --- what the fuzzer found ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize("path", ["/v1/enhance", "/v1/tts", "/v1/audio/speech", "/v1/audio/voices"])
def test_an_undeclared_method_on_a_body_route_is_405_not_a_refused_upload(path, method):
    """Found: PUT /v1/audio/voices answered 415 (the upload check ran before routing); PUT to a task route would
    also have been answered 503 or 429 as if it were queued work."""

    async def test(client, app, engine):
        r = await client.request(method, path, content=b"x", headers={"Content-Type": "text/plain"})
        assert_error(r, 405, "method_not_allowed")
        app.state.runtime.begin_shutdown()
        r = await client.request(method, path, content=b"x", headers={"Content-Type": "text/plain"})
        assert r.status_code == 405  # not 503: shutting down does not change which methods exist

    scenario(test, FakeEngine(tasks=("enhance", "tts")))


def test_a_405_lists_every_method_of_the_path():
    """Found: PUT /v1/audio/voices said ``Allow: POST`` although GET is served there too (two routes, one path)."""

    async def test(client, app, engine):
        r = await client.put("/v1/audio/voices", headers={"Content-Type": "multipart/form-data; boundary=x"})
        assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
        r = await client.post("/v1/models")
        assert r.status_code == 405 and r.headers["allow"] == "GET"

    scenario(test, FakeEngine(tasks=("tts",)))
