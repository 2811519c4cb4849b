"""TTS over HTTP: /v1/voices, /v1/tts (multipart: a voice or an uploaded prompt) and the OpenAI-compatible
/v1/audio/speech, against a real debug-size TTS bundle (fine-tuned for a few steps on espeak-ng speech, as in
tests/test_tts.py); scheduling details and the demo page's TTS panel against the fake engine."""

import asyncio
import base64
import io
import warnings
from dataclasses import asdict

import numpy as np
import pytest
import soundfile as sf

from bench.fake_engine import FAKE_VOICES, FakeEngine
from bench.inprocess import serving, until
from model.audio import encode_audio, resample
from model.bundle import write_bundle
from model.defaults import TASK_SAMPLING
from service.app import create_app
from service.engine import PipelineEngine, VoiceInfo
from service.openai_names import OPENAI_VOICES
from service.settings import Settings
from tests.conftest import TTS_SENTENCES, speechlike, write_aligned_corpus, write_tts_bundle
from tests.test_service_app import assert_error, metric

SENTENCES = TTS_SENTENCES[:3]
QUICK = {"steps": "2", "solver": "euler"}  # 2 network evaluations: the debug model is random anyway


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    write_aligned_corpus(root, SENTENCES)
    return root


@pytest.fixture(scope="module")
def tts_bundle(speech_dir, tmp_path_factory):
    return write_tts_bundle(tmp_path_factory.mktemp("ttsbundle"), speech_dir / "train.jsonl", SENTENCES[0], steps=2)


@pytest.fixture(scope="module")
def engine(tts_bundle):
    """One loaded engine shared by the apps of this module (each app still warms it up)."""
    return PipelineEngine.load(tts_bundle, device="cpu")


def run(app, test):
    async def main():
        async with serving(app) as client:
            await app.state.runtime.wait_ready()
            return await test(client, app)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random duration model finds every prompt implausibly long
        return asyncio.run(main())


def decode(response, fmt: str = "wav") -> tuple[np.ndarray, int]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == f"audio/{fmt}"
    assert response.headers["content-disposition"] == f'attachment; filename="speech.{fmt}"'
    return sf.read(io.BytesIO(response.content), dtype="float32", always_2d=True)


# --- served by the real bundle ---------------------------------------------------------------------------------
@pytest.mark.parametrize("processing", ["engine", "worker"])
def test_voices_and_tts_with_a_voice_as_the_offline_pipeline_makes_it(tts_bundle, processing):
    app = create_app(Settings(bundle=str(tts_bundle), device="cpu", max_wait_ms=0, processing=processing))

    async def test(client, app):
        models = (await client.get("/v1/models")).json()
        assert [(m["id"], m["endpoint"]) for m in models["data"]] == [("tts", "/v1/tts")]
        assert (await client.get("/v1/voices")).json() == {"voices": [
            {"id": "anna", "transcript": SENTENCES[0], "aliases": list(OPENAI_VOICES), "source": "builtin"}]}
        return await client.post("/v1/tts", data={"text": "Good morning to you.", "voice": "anna", "seed": "3",
                                                  **QUICK})

    r = run(app, test)
    audio, sr = decode(r)
    assert sr == 16000 and audio.shape[1] == 1 and 0.3 < len(audio) / sr < 8  # a few words: not nothing, not minutes
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert (r.headers["x-seed"], r.headers["x-steps"], r.headers["x-solver"]) == ("3", "2", "euler")
    assert r.headers["x-sample-rate"] == "16000" and r.headers["x-channels"] == "1"
    assert r.headers["x-batch-size"] == "1.0"
    assert "inference;dur=" in r.headers["server-timing"]
    assert float(r.headers["x-audio-seconds"]) == pytest.approx(len(audio) / sr, abs=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = app.state.runtime.engine.pipeline
        default_guidance = TASK_SAMPLING["tts"].guidance  # the request named none
        offline, _ = pipe.tts("Good morning to you.", voice="anna", steps=2, solver="euler", guidance=default_guidance,
                              seed=3)
    expected = sf.read(io.BytesIO(encode_audio(offline, 16000, "wav")), dtype="float32")[0]
    # the service adds nothing to the pipeline's result (a worker vocodes single-threaded: a 16-bit step of rounding)
    np.testing.assert_allclose(audio[:, 0], expected, atol=0 if processing == "engine" else 1.5 / 32768, rtol=0)


def test_tts_requests_joined_mid_way_sound_as_they_do_alone(engine):
    """Two TTS requests in one live batch, the second (two chunks) joining after two steps: each equals the offline
    pipeline's audio for it alone (1e-4 of the peak: Griffin-Lim amplifies float rounding in the features)."""
    import copy

    import torch

    from model.defaults import Sampling
    from model.generation import LiveBatch
    from model.pipeline import SpeechFlowPipeline

    served = engine.pipeline
    model = copy.deepcopy(served.model("tts"))
    torch.nn.init.normal_(model.net.out_proj.weight, std=0.1)  # velocities that matter (2 training steps: tiny)
    pipe = SpeechFlowPipeline({"tts": model}, durations=served.durations, voices=served.voices,
                              aligner=served.aligner)
    s = Sampling(steps=6, guidance=2.0, solver="euler")
    texts = ["Good morning to you.", "Hello there. How are you all today?"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plans = [pipe.plan_tts(t, sampling=s, voice="anna", seed=5 + i) for i, t in enumerate(texts)]
        assert [len(p.rows) for p in plans] == [1, 2]
        live = LiveBatch(model, s)
        live.join(plans[0].rows)
        live.step()
        live.step()
        live.join(plans[1].rows)
        while len(live):
            live.step()
        # every chunk of both requests through the vocoder in one padded batch, as the service does
        pieces = iter(pipe.pieces([(p, k) for p in plans for k in range(len(p.rows))]))
        for i, (plan, text) in enumerate(zip(plans, texts, strict=True)):
            together = plan.assemble([next(pieces) for _ in plan.rows])
            alone, _ = pipe.tts(text, voice="anna", **asdict(s), seed=5 + i)  # every field, not the defaults
            # the random output layer makes loud audio: the tolerance is relative to its peak
            np.testing.assert_allclose(together, alone, atol=1e-4 * max(1.0, float(np.abs(alone).max())))


def test_tts_with_an_uploaded_prompt_and_its_transcript(engine, speech_dir):
    prompt, _ = sf.read(speech_dir / "u1.wav", dtype="float32")
    ogg = encode_audio(resample(prompt, 16000, 22050), 22050, "ogg")  # any format and rate, decoded like /v1/enhance

    async def test(client, app):
        files = {"prompt": ("prompt.ogg", ogg, "audio/ogg")}
        short = await client.post("/v1/tts", files=files, data={"text": "Hello.", "prompt_text": SENTENCES[1],
                                                                "response_format": "flac", **QUICK})
        long = await client.post("/v1/tts", files=files, data={"text": "Hello there, how are you all today?",
                                                               "prompt_text": SENTENCES[1], "format": "flac",
                                                               "guidance": "1.5", "speed": "0.8", **QUICK})
        return short, long

    short, long = run(create_app(Settings(max_wait_ms=0), engine), test)
    (a, sr), (b, _) = decode(short, "flac"), decode(long, "flac")
    assert sr == 16000 and 0.1 < len(a) / sr < len(b) / sr < 10  # more text (and slower): longer speech


def test_openai_speech_json_in_each_format(engine):
    async def test(client, app):
        body = {"model": "tts", "input": "Good morning.", "voice": "anna", "steps": 2, "solver": "euler", "seed": 1}
        out = {fmt: await client.post("/v1/audio/speech", json={**body, "response_format": fmt})
               for fmt in ("wav", "flac", "ogg", "pcm", "mp3", "opus")}
        out["tts-1"] = await client.post("/v1/audio/speech", json={**body, "model": "tts-1", "speed": 2.0,
                                                                   "response_format": "wav"})
        unnamed = {k: v for k, v in body.items() if k != "voice"}
        out["default"] = await client.post("/v1/audio/speech", json=body)
        out["alloy"] = await client.post("/v1/audio/speech", json={**unnamed, "voice": "alloy", "instructions": "x"})
        out["object"] = await client.post("/v1/audio/speech", json={**unnamed, "voice": {"id": "anna"}})
        out["voices"] = await client.get("/v1/voices")
        return out

    out = run(create_app(Settings(max_wait_ms=0), engine), test)
    lengths = {fmt: len(decode(out[fmt], fmt)[0]) for fmt in ("wav", "flac", "ogg")}
    pcm = out["pcm"]
    assert pcm.status_code == 200 and pcm.headers["content-type"] == "audio/L16;rate=16000;channels=1"
    assert lengths["wav"] == lengths["flac"] == len(pcm.content) // 2 and abs(lengths["ogg"] - lengths["wav"]) < 2000
    fast, _ = decode(out["tts-1"])  # OpenAI's model name is an alias; speed 2 speaks faster
    assert len(fast) < lengths["wav"]
    for fmt, media in (("mp3", "audio/mpeg"), ("opus", "audio/ogg; codecs=opus")):
        assert out[fmt].headers["content-type"] == media
        audio, sr = sf.read(io.BytesIO(out[fmt].content))
        assert sr == 16000 and abs(len(audio) - lengths["wav"]) < 2400
    assert out["default"].headers["content-type"] == "audio/mpeg"  # OpenAI's default when none is named
    voices = out["voices"].json()["voices"]
    assert [v for v in voices if "alloy" in v["aliases"]], voices  # OpenAI's names, listed as aliases
    assert out["alloy"].status_code == 200 and out["alloy"].headers["x-instructions"] == "ignored"
    assert out["object"].content == out["default"].content  # {"id": ...} is the same voice, same seed


def test_bad_input_is_a_clear_4xx_never_a_500(engine, speech_dir):
    prompt = (speech_dir / "u1.wav").read_bytes()

    def upload(data: bytes = prompt) -> dict:
        return {"prompt": ("p.wav", data, "audio/wav")}

    async def test(client, app):
        tts, speech = "/v1/tts", "/v1/audio/speech"
        anna = {"voice": "anna", **QUICK}
        ok = {"input": "Hi.", "voice": "anna", "steps": 2}
        # text: blank, missing, too long (413), nothing to speak (found by the pipeline's frontend)
        assert assert_error(await client.post(tts, data={"text": "   ", **anna}), 422, "invalid_parameter")[
            "param"] == "text"
        assert assert_error(await client.post(tts, data=anna), 422, "invalid_parameter")["param"] == "text"
        assert assert_error(await client.post(speech, json={**ok, "input": ""}), 422, "invalid_parameter")[
            "param"] == "input"
        error = assert_error(await client.post(tts, data={"text": "a" * 41, **anna}), 413, "text_too_long")
        assert error["param"] == "text" and "limit is 40" in error["message"]
        assert assert_error(await client.post(speech, json={**ok, "input": "b" * 41}), 413, "text_too_long")[
            "param"] == "input"
        error = assert_error(await client.post(tts, data={"text": "🙂 🙂", **anna}), 422, "invalid_parameter")
        assert error["param"] == "text" and "nothing to speak" in error["message"]
        # voice: unknown (the message lists the voices), neither voice nor prompt, both
        for path, body in [(tts, {"data": {"text": "Hi.", "voice": "bob"}}),
                           (speech, {"json": {**ok, "voice": "bob"}})]:
            error = assert_error(await client.post(path, **body), 422, "invalid_parameter")
            assert error["param"] == "voice" and "'bob'" in error["message"] and "anna" in error["message"]
        assert assert_error(await client.post(tts, data={"text": "Hi."}), 422, "invalid_parameter")["param"] == "voice"
        assert_error(await client.post(tts, files=upload(), data={"text": "Hi.", "voice": "anna",
                                                                  "prompt_text": SENTENCES[1]}), 422,
                     "invalid_parameter")
        # prompt: without its transcript, too short (422), too long (413), not audio (400), a transcript that
        # cannot fit it (found by the duration model)
        assert assert_error(await client.post(tts, files=upload(), data={"text": "Hi."}), 422, "invalid_parameter")[
            "param"] == "prompt_text"
        short = encode_audio(speechlike(0.3, seed=1), 16000, "wav")
        error = assert_error(await client.post(tts, files=upload(short), data={"text": "Hi.", "prompt_text": "hi"}),
                             422, "invalid_parameter")
        assert error["param"] == "prompt" and "0.30 s" in error["message"]
        long = encode_audio(speechlike(16.0, seed=1, sr=8000), 8000, "wav")
        error = assert_error(await client.post(tts, files=upload(long), data={"text": "Hi.", "prompt_text": "hi"}),
                             413, "audio_too_long")
        assert error["param"] == "prompt" and "limit is 15 s" in error["message"]
        error = assert_error(await client.post(tts, files=upload(b"RIFF junk"), data={"text": "Hi.",
                                                                                      "prompt_text": "hi"}),
                             400, "invalid_audio")
        assert error["param"] == "prompt"
        tiny, transcript = encode_audio(speechlike(0.55, seed=2), 16000, "wav"), " ".join(SENTENCES * 2)
        error = assert_error(await client.post(tts, files=upload(tiny), data={"text": "Hi.",
                                                                              "prompt_text": transcript}),
                             422, "invalid_parameter")
        assert error["param"] == "prompt_text" and "cannot hold" in error["message"]
        # parameters: speed, format, model, unknown fields, not JSON
        for speed in ("0.1", "5"):
            assert assert_error(await client.post(tts, data={"text": "Hi.", "speed": speed, **anna}), 422,
                                "invalid_parameter")["param"] == "speed"
            assert assert_error(await client.post(speech, json={**ok, "speed": float(speed)}), 422,
                                "invalid_parameter")["param"] == "speed"
        for fmt in ("aac", "webm"):
            error = assert_error(await client.post(speech, json={**ok, "response_format": fmt}), 422,
                                 "invalid_parameter")
            assert error["param"] == "response_format" and "wav, flac, ogg, pcm, mp3, opus" in error["message"]
        assert assert_error(await client.post(tts, data={"text": "Hi.", "response_format": "aac", **anna}), 422,
                            "invalid_parameter")["param"] == "response_format"
        error = assert_error(await client.post(speech, json={**ok, "model": "whisper-1"}), 404, "model_not_found")
        assert error["param"] == "model"
        assert_error(await client.post(tts, data={"text": "Hi.", "sped": "2", **anna}), 422, "invalid_parameter")
        assert_error(await client.post(speech, json={**ok, "instruction": "cheerful"}), 422, "invalid_parameter")
        assert_error(await client.post(speech, content=b"input=Hi.", headers={"Content-Type": "text/plain"}), 415,
                     "unsupported_media_type")
        # the same request, well formed, works (urlencoded is fine for a voice: nothing to upload)
        assert (await client.post(tts, data={"text": "Hi.", **anna})).status_code == 200
        assert metric(app, "speechflow_requests_total", task="tts", status="500") == 0

    run(create_app(Settings(max_wait_ms=0, max_text_chars=40), engine), test)


def test_metrics_count_tts_requests(engine):
    async def test(client, app):
        for _ in range(2):
            r = await client.post("/v1/audio/speech", json={"input": "Hi there.", "voice": "anna", "steps": 2,
                                                            "solver": "midpoint"})  # one step
            assert r.status_code == 200
        await client.post("/v1/tts", data={"text": "Hi.", "voice": "nobody"})
        return (await client.get("/metrics")).text

    app = create_app(Settings(max_wait_ms=0, default_steps=2), engine)
    text = run(app, test)
    assert 'speechflow_requests_total{status="200",task="tts"} 2.0' in text
    assert metric(app, "speechflow_requests_total", task="tts", status="422") == 1
    assert metric(app, "speechflow_batch_size_count", task="tts") == 2  # the refused one never reached a batch
    assert metric(app, "speechflow_audio_seconds_total", task="tts", direction="out") > 0.2
    assert metric(app, "speechflow_inference_seconds_count", stage="step") >= 2
    assert metric(app, "speechflow_inference_seconds_count", stage="prepare") >= 1
    assert metric(app, "speechflow_inference_seconds_count", stage="postprocess") >= 2
    assert metric(app, "speechflow_rejected_total", reason="invalid_parameter") == 1


def test_a_bundle_without_tts_answers_404_on_all_three(tmp_path, debug_model):
    debug_model.save_pretrained(tmp_path / "pre")
    bundle = write_bundle(tmp_path / "b", {"enhance": tmp_path / "pre"})

    async def test(client, app):
        for method, path, body in [("GET", "/v1/voices", {}), ("POST", "/v1/audio/speech",
                                                               {"json": {"input": "Hi.", "voice": "anna"}}),
                                   ("POST", "/v1/tts", {"data": {"text": "Hi.", "voice": "anna"}})]:
            error = assert_error(await client.request(method, path, **body), 404, "model_not_found")
            assert "'tts'" in error["message"] and error["param"] == "model"

    run(create_app(Settings(bundle=str(bundle), device="cpu")), test)


# --- scheduling and the demo page, against the fake engine -------------------------------------------------------
def fake_scenario(test, **settings):
    engine = FakeEngine(tasks=("enhance", "tts"), voices={**FAKE_VOICES, "bob": VoiceInfo("bob", "Hi, I am Bob.", 2.5)},
                        fail_seeds=[13])
    app = create_app(Settings(**{"max_wait_ms": 0, **settings}), engine)

    async def main():
        async with serving(app) as client:
            await app.state.runtime.wait_ready()
            try:
                await test(client, app, engine)
            finally:
                engine.release()

    asyncio.run(main())


def speak(client, text: str = "Hello there.", **extra):
    return asyncio.create_task(client.post("/v1/audio/speech", json={"input": text, "voice": "alice",
                                                                     "response_format": "wav", **extra}))


def test_tts_requests_of_different_clients_share_the_live_batch_with_429_when_full():
    async def test(client, app, engine):
        engine.hold()
        first = speak(client)
        await until(lambda: len(engine.steps) == 1)
        queued = [speak(client, "Hi. Bye."), speak(client, "Good day.")]
        await until(lambda: app.state.runtime.loop.depth() == 2)
        r = await client.post("/v1/tts", data={"text": "Hi.", "voice": "alice"})
        assert_error(r, 429, "queue_full")
        assert int(r.headers["retry-after"]) >= 1
        engine.release()
        responses = await asyncio.gather(first, *queued)
        assert [r.status_code for r in responses] == [200] * 3
        # "Hi. Bye." is two chunks ("Hi.", "Bye.") joined (the fake's cross-fade is 0 samples)
        assert [len(decode(r)[0]) for r in responses] == [int(16000 * 0.05 * n) for n in (12, 3 + 4, 9)]
        # one live batch: the first request's chunk, then both chunks of "Hi. Bye." and "Good day." beside it
        assert max(len(s.seeds) for s in engine.steps) == 4 and all(s.task == "tts" for s in engine.steps)
        assert [r.headers["x-rows"] for r in responses] == ["1", "2", "1"]
        assert all(float(r.headers["x-first-chunk-ms"]) >= 0 for r in responses)
        assert engine.prepared[0][1].voice == "alice"

    fake_scenario(test, max_queue=2)


def test_one_failing_tts_request_fails_alone():
    async def test(client, app, engine):
        engine.hold()
        first = speak(client)
        await until(lambda: len(engine.steps) == 1)
        mates = [speak(client, "One."), speak(client, "Three.", voice="bob"), speak(client, "Two.", seed=13)]
        await until(lambda: app.state.runtime.loop.depth() == 3)
        del engine.voices["bob"]  # gone after the service's checks: the engine fails that request, and only it
        engine.release()
        first, one, three, two = await asyncio.gather(first, *mates)
        assert [r.status_code for r in (first, one)] == [200] * 2
        error = assert_error(three, 422, "invalid_parameter")
        assert error["param"] == "voice" and "'bob'" in error["message"]
        assert_error(two, 500, "internal_error")  # a poisoned step: retried alone, then it fails by itself

    fake_scenario(test)


@pytest.fixture
def tts_page(tmp_path):
    """(base URL, fake engine, headless Chromium) for the demo page of a server whose bundle has TTS."""
    from tests.page_harness import headless_chromium, running_server

    engine = FakeEngine(tasks=("enhance", "separate", "tts"))
    with headless_chromium(tmp_path / "profile") as driver, running_server(engine) as url:
        yield url, engine, driver


def test_the_demo_pages_tts_panel_speaks_through_v1_audio_speech(tts_page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, engine, browser = tts_page
    wait = WebDriverWait(browser, 10)
    browser.get(url)
    text = browser.find_element(By.ID, "tts-text")
    wait.until(lambda _: text.is_enabled())  # /v1/models listed tts and /v1/voices its voices
    voices = Select(browser.find_element(By.ID, "tts-voice"))
    assert [o.get_attribute("value") for o in voices.options] == ["alice"]

    browser.find_element(By.ID, "tts-stream").click()  # streaming is the default; this test asks for a whole file
    text.send_keys("   ")  # passes the page's "required", not the server: its 422 is shown by the text box
    browser.find_element(By.ID, "tts-submit").click()
    message = wait.until(ready.visibility_of_element_located((By.ID, "tts-text-error")))
    assert "input is empty" in message.text and engine.prepared == []
    error = browser.find_element(By.ID, "tts-error")

    text.clear()
    text.send_keys("Hello from the page.")
    Select(browser.find_element(By.ID, "tts-format")).select_by_visible_text("flac")
    browser.find_element(By.ID, "tts-submit").click()
    link = wait.until(ready.presence_of_element_located((By.ID, "tts-download")))
    assert link.get_attribute("download") == "speech.flac" and not error.is_displayed()
    timings = browser.find_element(By.CSS_SELECTOR, "#tts-result .timings").text
    default_steps = f"Steps\n{TASK_SAMPLING['tts'].steps}"
    assert all(label in timings for label in ("Queue wait", "Batch size\n1.0", default_steps)), timings
    downloaded = browser.execute_async_script(FETCH_TTS_DOWNLOAD)
    audio, rate = sf.read(io.BytesIO(base64.b64decode(downloaded)), dtype="float32")
    assert rate == 16000 and len(audio) == int(16000 * 0.05 * len("Hello from the page."))
    [(task, request, _)] = engine.prepared
    assert task == "tts" and (request.text, request.voice) == ("Hello from the page.", "alice")


FETCH_TTS_DOWNLOAD = """
const done = arguments[arguments.length - 1];
fetch(document.getElementById("tts-download").href).then((r) => r.arrayBuffer()).then((buffer) => {
  done(btoa(String.fromCharCode(...new Uint8Array(buffer))));
}).catch((error) => done("failed: " + error));
"""
