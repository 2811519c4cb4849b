"""The HTTP layer's refusals against a fake engine: every 4xx/5xx status the service answers before or instead of
running a request, each in the JSON error envelope naming the parameter."""

import asyncio

import pytest

from bench.fake_engine import FakeEngine
from bench.inprocess import until
from tests.test_service_app import assert_error, metric, scenario, upload, wav


def test_unknown_routes_and_methods_use_the_envelope():
    async def test(client, app, engine):
        assert_error(await client.get("/v1/nope"), 404, "not_found")
        assert_error(await client.get("/v1/enhance"), 405, "method_not_allowed")
        assert (await client.get("/docs")).status_code == 200
        assert "/v1/enhance" in (await client.get("/openapi.json")).json()["paths"]

    scenario(test)


# --- refusals, each from a real request ------------------------------------------------------------------------
def test_400_for_audio_that_does_not_decode():
    async def test(client, app, engine):
        error = assert_error(await client.post("/v1/enhance", files=upload(b"RIFF not really a wav")), 400,
                             "invalid_audio")
        assert error["param"] == "file"
        assert_error(await client.post("/v1/enhance", files=upload(b"")), 400, "invalid_audio")
        assert_error(await client.post("/v1/enhance", files=upload(wav(0.005))), 400, "invalid_audio")  # < 1 frame
        assert engine.prepared == [] and engine.steps == []

    scenario(test)


def test_401_without_the_right_key_and_open_probes():
    async def test(client, app, engine):
        r = await client.post("/v1/enhance", files=upload())
        assert_error(r, 401, "invalid_api_key")
        assert r.headers["www-authenticate"] == "Bearer"
        assert_error(await client.post("/v1/enhance", files=upload(), headers={"Authorization": "Bearer nope"}),
                     401, "invalid_api_key")
        assert_error(await client.get("/v1/models", headers={"Authorization": "Basic k2"}), 401, "invalid_api_key")
        assert (await client.post("/v1/enhance", files=upload(), headers={"Authorization": "Bearer k2"})).is_success
        assert (await client.get("/livez")).is_success and (await client.get("/readyz")).is_success
        assert_error(await client.get("/metrics"), 401, "invalid_api_key")  # protect_metrics
        assert (await client.get("/metrics", headers={"Authorization": "Bearer k1"})).is_success

    scenario(test, api_keys="k1, k2", protect_metrics=True)


def test_413_for_a_declared_size_over_the_limit_without_reading_the_body():
    async def test(client, app, engine):
        r = await client.post("/v1/enhance", files=upload(wav(1.0)))  # ~32 KB
        assert_error(r, 413, "request_too_large")
        assert r.headers["connection"] == "close"

    scenario(test, max_upload_bytes=10_000)


def test_413_while_a_body_of_unknown_size_streams_in():
    pulled = []

    async def endless():
        yield (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n'
               b"Content-Type: audio/wav\r\n\r\n")
        for i in range(100_000):  # a file part that would go on for 1.6 GB
            pulled.append(i)
            yield b"x" * 16384

    async def test(client, app, engine):
        r = await client.post("/v1/enhance", content=endless(),
                              headers={"Content-Type": "multipart/form-data; boundary=xyz"})
        assert_error(r, 413, "request_too_large")
        assert len(pulled) <= 100_000 // 16384 + 2  # stopped right after the limit

    scenario(test, max_upload_bytes=100_000)


def test_413_for_audio_longer_than_the_limit():
    async def test(client, app, engine):
        error = assert_error(await client.post("/v1/enhance", files=upload(wav(2.0))), 413, "audio_too_long")
        assert "2.0 s" in error["message"]

    scenario(test, max_audio_seconds=1.5)


def test_415_for_non_audio_uploads_and_non_multipart_requests():
    async def test(client, app, engine):
        assert_error(await client.post("/v1/enhance", files=upload(b"hello", "text/plain", "a.txt")), 415,
                     "unsupported_media_type")
        assert_error(await client.post("/v1/enhance", json={"file": "/etc/passwd"}), 415, "unsupported_media_type")

    scenario(test)


@pytest.mark.parametrize(("form", "param"), [({"steps": "0"}, "steps"), ({"steps": "129"}, "steps"),
                                             ({"solver": "magic"}, "solver"), ({"response_format": "aac"},
                                                                               "response_format"),
                                             ({"seed": "-1"}, "seed"), ({"guidance": "x"}, "guidance"),
                                             ({"ensemble": "0"}, "ensemble"), ({"ensemble": "17"}, "ensemble"),
                                             ({"stepz": "4"}, None)])
def test_422_for_invalid_parameters(form, param):
    async def test(client, app, engine):
        error = assert_error(await client.post("/v1/enhance", files=upload(), data=form), 422, "invalid_parameter")
        assert error["param"] == param

    scenario(test)


def test_422_for_a_missing_file():
    async def test(client, app, engine):
        error = assert_error(await client.post("/v1/enhance", data={"steps": "4"},
                                               files={"other": ("x", b"y", "audio/wav")}), 422, "invalid_parameter")
        assert error["param"] == "file"

    scenario(test)


def test_429_when_the_queue_is_full():
    async def test(client, app, engine):
        engine.hold()
        running = asyncio.create_task(client.post("/v1/enhance", files=upload()))
        await until(lambda: len(engine.steps) == 1)
        queued = asyncio.create_task(client.post("/v1/enhance", files=upload()))
        await until(lambda: app.state.runtime.loop.depth() == 1)
        r = await client.post("/v1/enhance", files=upload())
        assert_error(r, 429, "queue_full")
        assert int(r.headers["retry-after"]) >= 1
        engine.release()
        assert [x.status_code for x in await asyncio.gather(running, queued)] == [200, 200]
        assert metric(app, "speechflow_rejected_total", reason="queue_full") == 1

    scenario(test, max_queue=1)


def test_503_until_warm():
    engine = FakeEngine()
    engine.warm_gate.clear()

    async def test(client, app, engine):
        assert_error(await client.get("/readyz"), 503, "not_ready")
        assert (await client.get("/livez")).is_success
        assert_error(await client.post("/v1/enhance", files=upload()), 503, "not_ready")
        engine.warm_gate.set()
        await app.state.runtime.wait_ready()
        assert (await client.get("/readyz")).json() == {"status": "ready"}

    scenario(test, engine, wait_ready=False)


def test_504_when_the_deadline_passes():
    async def test(client, app, engine):
        engine.hold()  # nothing finishes until the test releases it
        assert_error(await client.post("/v1/enhance", files=upload()), 504, "deadline_exceeded")

    scenario(test, request_timeout_s=0.05)
