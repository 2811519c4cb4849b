"""The HTTP layer against a fake engine: status codes from real requests, the error envelope, headers, output
audio, metrics and graceful shutdown. Requests run in process (httpx + ASGITransport, lifespan included)."""

import asyncio
import io

import pytest
import soundfile as sf

from bench.fake_engine import FakeEngine
from bench.inprocess import serving, until
from model.audio import encode_audio
from model.defaults import TASK_SAMPLING
from model.solvers import num_steps
from service.app import create_app
from service.settings import Settings
from tests.conftest import speechlike


def wav(seconds: float = 1.0, sr: int = 16000, fmt: str = "wav") -> bytes:
    return encode_audio(speechlike(seconds, seed=1, sr=sr), sr, fmt)


def upload(data: bytes | None = None, content_type: str = "audio/wav", name: str = "in.wav") -> dict:
    return {"file": (name, wav() if data is None else data, content_type)}


def scenario(test, engine: FakeEngine | None = None, wait_ready: bool = True, **settings):
    """Run ``test(client, app, engine)`` against a fresh app with ``settings`` (max_wait 0 unless given)."""
    engine = engine or FakeEngine(fail_seeds=[13])
    app = create_app(Settings(**{"max_wait_ms": 0, **settings}), engine)

    async def main():
        async with serving(app) as client:
            if wait_ready:
                await app.state.runtime.wait_ready()
            try:
                await test(client, app, engine)
            finally:
                engine.release()
                engine.warm_gate.set()

    asyncio.run(main())
    return app


ENHANCE_STEPS = num_steps(TASK_SAMPLING["enhance"].solver, TASK_SAMPLING["enhance"].steps)  # solver steps, defaults


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code", "param"}
    assert body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


def metric(app, name: str, **labels) -> float:
    return app.state.runtime.metrics.registry.get_sample_value(name, labels) or 0.0


# --- results ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_enhance_returns_audio_at_the_inputs_rate_and_length(fmt):
    async def test(client, app, engine):
        r = await client.post("/v1/enhance", files=upload(wav(1.3, 44100)), data={"response_format": fmt,
                                                                                  "seed": "7", "steps": "4"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == f"audio/{fmt}"
        audio, sr = sf.read(io.BytesIO(r.content), always_2d=True)
        assert sr == 44100 and audio.shape == (int(1.3 * 44100), 1)
        assert r.headers["x-seed"] == "7" and r.headers["x-steps"] == "4" and r.headers["x-batch-size"] == "1.0"
        assert r.headers["x-ensemble"] == str(TASK_SAMPLING["enhance"].ensemble)  # the task's default
        assert "queue;dur=" in r.headers["server-timing"] and r.headers["x-request-id"]

    scenario(test)


def test_the_servers_default_ensemble_applies_to_enhance_and_separate_and_a_request_wins():
    async def test(client, app, engine):
        for path, data, expected in [("/v1/enhance", {}, "2"), ("/v1/separate", {}, "2"),
                                     ("/v1/enhance", {"ensemble": "3"}, "3")]:
            r = await client.post(path, files=upload(wav(0.5)), data=data)
            assert r.status_code == 200 and r.headers["x-ensemble"] == expected, (path, r.text)
        r = await client.post("/v1/tts", data={"text": "Hello.", "voice": "alice"})
        assert r.status_code == 200 and r.headers["x-ensemble"] == "1", r.text  # TTS: one draw, whatever the setting

    scenario(test, FakeEngine(["enhance", "separate", "tts"]), default_ensemble=2)


def test_every_ensemble_draw_counts_against_the_request_row_limit():
    """1 s is one window: 3 draws fit max_request_rows=3, 4 do not (413 naming the upload, nothing queued)."""
    async def test(client, app, engine):
        ok = await client.post("/v1/enhance", files=upload(wav(1.0)), data={"ensemble": "3"})
        assert ok.status_code == 200 and ok.headers["x-ensemble"] == "3"
        assert engine.prepared[-1][2].sampling.ensemble == 3
        error = assert_error(await client.post("/v1/enhance", files=upload(wav(1.0)), data={"ensemble": "4"}),
                             413, "request_too_costly")
        assert error["param"] == "file" and "4 generation rows" in error["message"]
        assert len(engine.prepared) == 1

    scenario(test, max_request_rows=3)


def test_separate_returns_one_two_channel_file_and_raw_pcm():
    async def test(client, app, engine):
        r = await client.post("/v1/separate", files=upload(wav(0.8, 8000)))
        audio, sr = sf.read(io.BytesIO(r.content), always_2d=True)
        assert r.status_code == 200 and sr == 8000 and audio.shape == (6400, 2)
        assert r.headers["content-disposition"] == 'attachment; filename="separated.wav"'
        r = await client.post("/v1/separate", files=upload(wav(0.5)), data={"response_format": "pcm"})
        assert r.headers["content-type"] == "audio/L16;rate=16000;channels=2" and len(r.content) == 8000 * 2 * 2

    scenario(test)


def test_raw_pcm_uploads_and_request_ids():
    async def test(client, app, engine):
        pcm = encode_audio(speechlike(0.5, seed=2, sr=8000), 8000, "pcm")
        r = await client.post("/v1/enhance", files=upload(pcm, "audio/L16; rate=8000"),
                              headers={"X-Request-ID": "trace-42"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "trace-42"
        assert sf.info(io.BytesIO(r.content)).frames == 4000
        r = await client.get("/livez", headers={"X-Request-ID": "bad id\twith spaces"})
        assert r.headers["x-request-id"] != "bad id\twith spaces" and len(r.headers["x-request-id"]) == 32

    scenario(test)


def test_concurrent_requests_join_the_live_batch_at_the_next_step():
    async def test(client, app, engine):
        engine.hold()
        first = asyncio.create_task(client.post("/v1/enhance", files=upload(), data={"seed": "1"}))
        await until(lambda: len(engine.steps) == 1)  # the first request's first step is running
        loop = app.state.runtime.loop
        rest = [asyncio.create_task(client.post("/v1/enhance", files=upload(wav(s)), data={"seed": str(k)}))
                for k, s in ((2, 0.5), (3, 1.5), (4, 1.0))]
        await until(lambda: loop.depth() == 3)
        engine.release()
        responses = await asyncio.gather(first, *rest)
        assert [r.status_code for r in responses] == [200] * 4
        assert engine.steps[0].seeds == [1] and sorted(engine.steps[1].seeds) == [1, 2, 3, 4]  # joined mid-way
        assert sorted(engine.steps[1].joined) == [2, 3, 4]  # in arrival order
        steps = ENHANCE_STEPS
        assert len(engine.steps) == steps + 1 and sorted(engine.steps[-1].seeds) == [2, 3, 4]  # the first left
        # rows in the live batch, over each request's steps
        means = [(1 + 4 * (steps - 1)) / steps] + [(4 * (steps - 1) + 3) / steps] * 3
        assert [r.headers["x-batch-size"] for r in responses] == [f"{m:.1f}" for m in means]

    scenario(test)


def test_models_and_tts_without_a_tts_model():
    async def test(client, app, engine):
        models = (await client.get("/v1/models")).json()
        assert [(m["id"], m["endpoint"]) for m in models["data"]] == [("enhance", "/v1/enhance")]
        for method, path in [("POST", "/v1/tts"), ("POST", "/v1/audio/speech"), ("GET", "/v1/voices")]:
            assert_error(await client.request(method, path, json={"input": "hi"}), 404, "model_not_found")
        assert_error(await client.post("/v1/separate", files=upload()), 404, "model_not_found")

    scenario(test, FakeEngine(tasks=["enhance"]))


def test_the_openapi_form_bodies_accept_exactly_what_the_server_accepts():
    # FastAPI would describe a form body as allOf [the form] + the files, open to any field the server then
    # refuses (422); the document now says so, and lists the fields' other accepted names that the server takes
    import jsonschema

    async def test(client, app, engine):
        spec = (await client.get("/openapi.json")).json()
        schemas = spec["components"]["schemas"]

        def body_schema(path: str) -> dict:
            ref = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
            return {**schemas[ref.rsplit("/", 1)[1]], "components": spec["components"]}

        enhance, tts = body_schema("/v1/enhance"), body_schema("/v1/tts")
        assert enhance["additionalProperties"] is False and {"file", "steps", "guidance"} <= set(enhance["properties"])
        validator = jsonschema.validators.Draft202012Validator
        accepted = (({"file": "x", "guidance": 2.0}, enhance), ({"text": "hi", "cfg": 2, "format": "wav"}, tts))
        for form, schema in accepted:
            assert validator(schema).is_valid(form)
        for schema, typo in ((enhance, {"file": "x", "stepz": 4}), (tts, {"text": "hi", "voic": "x"})):
            assert not validator(schema).is_valid(typo)
        for name in ("stepz", "guidance"):  # the server: a typo is a 422 naming it, an accepted other name is fine
            r = await client.post("/v1/enhance", files=upload(), data={name: "2"})
            if name == "stepz":
                assert "stepz" in assert_error(r, 422, "invalid_parameter")["message"]
            else:
                assert r.status_code == 200, r.text

    scenario(test)


def test_500_for_one_failing_request_leaves_its_batch_mates_alone():
    async def test(client, app, engine):
        engine.hold()
        first = asyncio.create_task(client.post("/v1/enhance", files=upload(), data={"seed": "11"}))
        await until(lambda: len(engine.steps) == 1)
        mates = []
        for k, seed in enumerate(("12", "13", "14"), 1):  # queued in this order (decoding may finish out of order)
            mates.append(asyncio.create_task(client.post("/v1/enhance", files=upload(), data={"seed": seed})))
            await until(lambda k=k: app.state.runtime.loop.depth() == k)
        engine.release()
        responses = await asyncio.gather(first, *mates)
        assert [r.status_code for r in responses] == [200, 200, 500, 200]
        assert_error(responses[2], 500, "internal_error")
        # the shared batch failed; it was bisected by request, each half again from t = 0, until the culprit ran
        # alone: (11, 12) ran through, (13, 14) failed, then 13 failed alone and 14 ran through
        assert sorted(engine.steps[1].seeds) == [11, 12, 13, 14]
        assert [sorted(s.seeds) for s in engine.steps[2:] if s.joined] == [[11, 12], [13, 14], [13], [14]]
        assert (await client.post("/v1/enhance", files=upload(), data={"seed": "11"})).content == responses[0].content

    scenario(test)


def test_a_client_that_goes_away_costs_no_compute():
    async def test(client, app, engine):
        engine.hold()
        first = asyncio.create_task(client.post("/v1/enhance", files=upload(), data={"seed": "1"}))
        await until(lambda: len(engine.steps) == 1)
        leaving = asyncio.create_task(client.post("/v1/enhance", files=upload(), data={"seed": "5"}))
        loop = app.state.runtime.loop
        await until(lambda: loop.depth() == 1)
        leaving.cancel()  # the in-process equivalent of a dropped connection
        await until(lambda: loop.depth() == 0)
        engine.release()
        assert (await first).status_code == 200
        assert [s.seeds for s in engine.steps if 5 in s.seeds] == []

    scenario(test)


def test_a_client_that_leaves_mid_generation_frees_its_rows_at_the_next_step():
    async def test(client, app, engine):
        engine.hold()
        first = asyncio.create_task(client.post("/v1/enhance", files=upload(), data={"seed": "1"}))
        await until(engine.blocked.is_set)  # step 1: [1]
        leaving = asyncio.create_task(client.post("/v1/enhance", files=upload(), data={"seed": "5"}))
        await until(lambda: app.state.runtime.loop.depth() == 1)
        engine.step_once()
        await until(engine.blocked.is_set)  # step 2: [1, 5], held
        leaving.cancel()  # its client goes away while its row is generating
        await until(leaving.done)
        engine.release()
        assert (await first).status_code == 200
        assert sorted(engine.steps[1].seeds) == [1, 5]
        assert all(5 not in s.seeds for s in engine.steps[2:])  # gone from the very next step
        assert len(engine.steps) == ENHANCE_STEPS  # the first request's steps; nothing else ran
        assert metric(app, "speechflow_rows_dropped_total", reason="abandoned") == 1

    scenario(test)


# --- metrics and shutdown --------------------------------------------------------------------------------------
def test_metrics_move():
    async def test(client, app, engine):
        for _ in range(2):
            assert (await client.post("/v1/enhance", files=upload(wav(0.5)))).status_code == 200
        await client.post("/v1/separate", files=upload(wav(1.0)))
        await client.post("/v1/enhance", files=upload(), data={"steps": "0"})
        text = (await client.get("/metrics")).text
        for name in ("requests_total", "request_duration_seconds", "queue_wait_seconds", "queue_depth", "batch_size",
                     "batch_frames", "padding_ratio", "inference_seconds", "audio_seconds_total", "rejected_total",
                     "live_rows", "steps_total", "step_seconds", "row_wait_seconds", "scheduler_up"):
            assert f"speechflow_{name}" in text
        assert metric(app, "speechflow_requests_total", task="enhance", status="200") == 2
        assert metric(app, "speechflow_requests_total", task="enhance", status="422") == 1
        assert metric(app, "speechflow_audio_seconds_total", task="enhance", direction="in") == pytest.approx(1.0)
        assert metric(app, "speechflow_audio_seconds_total", task="separate", direction="out") == pytest.approx(2.0)
        assert metric(app, "speechflow_steps_total", task="enhance") == 2 * ENHANCE_STEPS
        assert metric(app, "speechflow_batch_size_count", task="enhance") == 2 * ENHANCE_STEPS
        assert metric(app, "speechflow_row_wait_seconds_count", task="enhance") == 2
        assert metric(app, "speechflow_rejected_total", reason="invalid_parameter") == 1
        assert metric(app, "speechflow_request_duration_seconds_count", task="separate") == 1

    scenario(test)


def test_shutdown_drains_queued_requests_and_refuses_new_ones():
    async def main():
        engine = FakeEngine()
        app = create_app(Settings(max_wait_ms=0), engine)
        runtime = app.state.runtime
        async with serving(app) as client:
            await runtime.wait_ready()
            engine.hold()
            running = asyncio.create_task(client.post("/v1/enhance", files=upload()))
            await until(lambda: len(engine.steps) == 1)
            queued = [asyncio.create_task(client.post("/v1/enhance", files=upload())) for _ in range(3)]
            await until(lambda: runtime.loop.depth() == 3)
            stopping = asyncio.create_task(runtime.stop())  # what the lifespan's shutdown runs
            await until(lambda: runtime.shutting_down)
            assert_error(await client.get("/readyz"), 503, "shutting_down")
            assert_error(await client.post("/v1/enhance", files=upload()), 503, "shutting_down")
            engine.release()
            await stopping
            responses = await asyncio.gather(running, *queued)
            assert [r.status_code for r in responses] == [200] * 4  # every admitted request was answered
            assert len(engine.prepared) == 4 and max(len(s.seeds) for s in engine.steps) == 4

    asyncio.run(main())


def test_enhance_and_separate_answer_in_mp3_and_opus_at_rates_those_codecs_carry():
    async def test(client, app, engine):
        out = {}
        for task in ("enhance", "separate"):
            for fmt in ("mp3", "opus"):
                r = await client.post(f"/v1/{task}", files=upload(wav(1.0, sr=44100)), data={"response_format": fmt})
                assert r.status_code == 200, r.text
                out[task, fmt] = (r.headers["content-type"], *sf.read(io.BytesIO(r.content), always_2d=True))
        return out

    results = {}

    async def collect(client, app, engine):
        results.update(await test(client, app, engine))

    scenario(collect)
    for (task, fmt), (media, audio, sr) in results.items():
        assert media == ("audio/mpeg" if fmt == "mp3" else "audio/ogg; codecs=opus")
        assert sr == (44100 if fmt == "mp3" else 48000)  # opus has no 44.1 kHz: the next rate it codes
        assert audio.shape[1] == (1 if task == "enhance" else 2)
        assert abs(len(audio) / sr - 1.0) < 0.1
