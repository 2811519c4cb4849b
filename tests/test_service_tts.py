"""TTS over HTTP: /v1/voices, /v1/tts (multipart: a voice or an uploaded prompt) and the OpenAI-compatible
/v1/audio/speech, against the shipped bundle (checkpoints/demo: the trained tiny TTS model, its voices, prompt
aligner and Vocos vocoder), whose answers are speech, so that a request taking the wrong path sounds different;
scheduling details and the demo page's TTS panel against the fake engine."""

import asyncio
import base64
import difflib
import io
import json
import warnings

import numpy as np
import pytest
import soundfile as sf

from bench.fake_engine import FAKE_VOICES, FakeEngine
from bench.inprocess import serving, until
from model.audio import encode_audio, resample
from model.bundle import write_bundle
from model.defaults import TASK_SAMPLING, Sampling
from service.app import create_app
from service.engine import VoiceInfo
from service.openai_names import OPENAI_VOICES
from service.settings import Settings
from service.uploads import decode_upload
from tests.conftest import DEMO_BUNDLE, TTS_SENTENCES, assert_same_speech, speechlike, write_aligned_corpus
from tests.test_service_app import assert_error, metric
from tests.test_shipped_bundle import check_speech_like

SENTENCES = TTS_SENTENCES[:3]
QUICK = {"steps": "1", "solver": "euler", "guidance": "1"}  # one network pass: for answers whose sound is not the point
VOICE = "espeak-en-gb-x-gbclan-Paul"  # the shipped voice with the shortest prompt (3 s): the cheapest rows
# A request served alone and the offline pipeline run the same rows through the same code: bit for bit on the
# engine thread. With processing="worker" the vocoder runs on the worker thread, whose torch is single-threaded
# (service.placement); where the engine thread's is not, the vocoder's sums round differently: one 16-bit step.
SAME_PATH = {"engine": 0.0, "worker": 1.5 / 32768}


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech")
    write_aligned_corpus(root, SENTENCES)
    return root


def run(app, test):
    async def main():
        async with serving(app) as client:
            await app.state.runtime.wait_ready()
            return await test(client, app)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return asyncio.run(main())


def decode(response, fmt: str = "wav") -> tuple[np.ndarray, int]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == f"audio/{fmt}"
    assert response.headers["content-disposition"] == f'attachment; filename="speech.{fmt}"'
    return sf.read(io.BytesIO(response.content), dtype="float32", always_2d=True)


def as_served(audio: np.ndarray) -> np.ndarray:
    """A float waveform as a 16-bit WAV answer carries it."""
    return sf.read(io.BytesIO(encode_audio(audio, 16000, "wav")), dtype="float32")[0]


def words(text: str) -> int:
    return len(text.split())


# --- served by the shipped bundle --------------------------------------------------------------------------------
MORNING = "Good morning to you, and welcome home."


@pytest.fixture(scope="module")
def offline_morning(demo_pipeline):
    """What the offline pipeline makes of MORNING in VOICE with seed 3 and the task's default sampling."""
    pipe, _ = demo_pipeline
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audio, _ = pipe.tts(MORNING, voice=VOICE, seed=3)
    return as_served(audio)


@pytest.mark.parametrize("processing", ["engine", "worker"])
def test_voices_and_tts_with_a_voice_as_the_offline_pipeline_makes_it(demo_engine, offline_morning, tmp_path,
                                                                     processing):
    app = create_app(Settings(max_wait_ms=0, processing=processing, data_dir=str(tmp_path)), demo_engine)

    async def test(client, app):
        models = (await client.get("/v1/models")).json()
        assert ("tts", "/v1/tts") in [(m["id"], m["endpoint"]) for m in models["data"]]
        voices = (await client.get("/v1/voices")).json()["voices"]
        r = await client.post("/v1/tts", data={"text": MORNING, "voice": VOICE, "seed": "3"})
        return voices, r

    voices, r = run(app, test)
    # the bundle's voices with their prompts' transcripts, OpenAI's names dealt to them round robin in id order
    shipped = sorted(p.stem for p in (DEMO_BUNDLE / "tts" / "voices").glob("*.json"))
    assert voices == [{"id": name, "transcript": json.loads((DEMO_BUNDLE / "tts" / "voices" / f"{name}.json")
                                                            .read_text())["text"],
                       "aliases": list(OPENAI_VOICES[i :: len(shipped)]), "source": "builtin"}
                      for i, name in enumerate(shipped)]
    audio, sr = decode(r)
    assert sr == 16000 and audio.shape[1] == 1
    check_speech_like(audio[:, 0], sr, words(MORNING))  # speech over the whole answer, not noise nor silence
    default = TASK_SAMPLING["tts"]  # the request named no sampling settings
    assert (r.headers["x-seed"], r.headers["x-steps"], r.headers["x-solver"]) == ("3", str(default.steps),
                                                                                  default.solver)
    assert r.headers["x-sample-rate"] == "16000" and r.headers["x-channels"] == "1"
    assert r.headers["x-batch-size"] == "1.0"
    assert "inference;dur=" in r.headers["server-timing"]
    assert float(r.headers["x-audio-seconds"]) == pytest.approx(len(audio) / sr, abs=1e-3)
    # the service adds nothing to the pipeline's result
    np.testing.assert_allclose(audio[:, 0], offline_morning, atol=SAME_PATH[processing], rtol=0)


def test_the_speech_the_service_is_compared_with_says_its_text(offline_morning):
    """The offline audio the service must reproduce is the text spoken (the recogniser reads it back), so the
    equality above is about speech, not about two copies of the same noise."""
    from model import recognizer

    if not recognizer.available():
        pytest.skip("no speech recogniser installed (speechflow[asr])")
    heard = recognizer.transcribe(offline_morning).split()
    said = recognizer.normalize_transcript(MORNING).split()
    # the tiny model may blur a word (its evaluation's WER is far from 0: bundle.json); all but two of the seven
    # words must come through, in order (noise or silence gives none of them)
    matched = sum(block.size for block in difflib.SequenceMatcher(None, heard, said).get_matching_blocks())
    assert matched >= len(said) - 2, (heard, said)


def test_tts_requests_joined_mid_way_sound_as_they_do_alone(demo_pipeline):
    """Two TTS requests with their own sampling settings in one live batch, the second (two chunks) joining after
    two steps of the first: each equals the offline pipeline's audio for it alone, up to float rounding
    (`tests.conftest.TTS_ROUNDING`)."""
    from model.generation import LiveBatch

    pipe, _ = demo_pipeline
    texts = ["Good morning to you.", "Hello there. How are you all today?"]
    # the default (4 steps on the swayed grid, guided) beside 3 unguided steps on the uniform grid: the rows differ
    # in NFE, time grid and guidance (the unguided rows take no unconditional pass)
    samplings = [TASK_SAMPLING["tts"], Sampling(steps=3, guidance=1.0, solver="euler")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plans = [pipe.plan_tts(t, sampling=s, voice=VOICE, seed=5 + i)
                 for i, (t, s) in enumerate(zip(texts, samplings, strict=True))]
        assert [len(p.rows) for p in plans] == [1, 2]
        live = LiveBatch(pipe.model("tts"), "euler")
        live.join(plans[0].rows)
        live.step()
        live.step()
        live.join(plans[1].rows)
        sizes = []
        while len(live):
            sizes.append(len(live))
            live.step()
        assert sizes == [3, 3, 2]  # the first request's last two steps ran beside the second's rows
        # every chunk of both requests through the vocoder in one padded batch, as the service does
        pieces = iter(pipe.pieces([(p, k) for p in plans for k in range(len(p.rows))]))
        for i, (plan, text, s) in enumerate(zip(plans, texts, samplings, strict=True)):
            together = plan.assemble([next(pieces) for _ in plan.rows])
            alone, _ = pipe.tts(text, voice=VOICE, **s.settings(), seed=5 + i)  # every field, not the defaults
            assert_same_speech(together, alone)
            check_speech_like(together, 16000, words(text))


def test_tts_with_an_uploaded_prompt_and_its_transcript(demo_engine, demo_pipeline, speech_dir):
    prompt, _ = sf.read(speech_dir / "u1.wav", dtype="float32")  # espeak-ng's en-us voice saying SENTENCES[1]
    ogg = encode_audio(resample(prompt, 16000, 22050), 22050, "ogg")  # any format and rate, decoded like /v1/enhance
    text = "Hello there, how are you all today?"

    async def test(client, app):
        files = {"prompt": ("prompt.ogg", ogg, "audio/ogg")}
        short = await client.post("/v1/tts", files=files, data={"text": "Hello.", "prompt_text": SENTENCES[1],
                                                                "response_format": "flac", **QUICK})
        long = await client.post("/v1/tts", files=files, data={"text": text, "prompt_text": SENTENCES[1],
                                                               "format": "flac", "guidance": "2", "speed": "0.8",
                                                               "seed": "4"})
        return short, long

    short, long = run(create_app(Settings(max_wait_ms=0), demo_engine), test)
    (a, sr), (b, _) = decode(short, "flac"), decode(long, "flac")
    assert sr == 16000 and 0.1 < len(a) / sr < len(b) / sr < 10  # more text (and slower): longer speech
    check_speech_like(b[:, 0], sr, words(text))
    # the prompt conditions the model as it does offline: the same upload, decoded as the service decodes it
    pipe, _ = demo_pipeline
    decoded = decode_upload(ogg, "audio/ogg", "prompt.ogg", target_sr=16000, max_seconds=15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        offline, _ = pipe.tts(text, prompt_wav=decoded.wav, prompt_sr=16000, prompt_text=SENTENCES[1], speed=0.8,
                              guidance=2.0, seed=4)
    np.testing.assert_allclose(b[:, 0], as_served(offline), atol=SAME_PATH["engine"], rtol=0)


def test_openai_speech_json_in_each_format(demo_engine):
    async def test(client, app):
        # one unguided step (an eighth of the default's network passes): the formats are the point, and the answer
        # is still speech (checked below)
        body = {"model": "tts", "input": "Good morning.", "voice": VOICE, "seed": 1, "steps": 1, "cfg": 1.0}
        out = {fmt: await client.post("/v1/audio/speech", json={**body, "response_format": fmt})
               for fmt in ("wav", "flac", "ogg", "pcm", "mp3", "opus")}
        out["tts-1"] = await client.post("/v1/audio/speech", json={**body, "model": "tts-1", "speed": 2.0,
                                                                   "response_format": "wav"})
        unnamed = {k: v for k, v in body.items() if k != "voice"}
        out["default"] = await client.post("/v1/audio/speech", json=body)
        alias = OPENAI_VOICES[sorted(app.state.runtime.engine.voices).index(VOICE)]  # the first alias of VOICE
        out["alias"] = await client.post("/v1/audio/speech", json={**unnamed, "voice": alias, "instructions": "x"})
        out["object"] = await client.post("/v1/audio/speech", json={**unnamed, "voice": {"id": VOICE}})
        out["voices"] = await client.get("/v1/voices")
        return out

    out = run(create_app(Settings(max_wait_ms=0), demo_engine), test)
    wav, rate = decode(out["wav"])
    assert int(out["wav"].headers["x-sample-rate"]) == rate and wav.shape[1] == 1  # the others must match it
    check_speech_like(wav[:, 0], rate, words("Good morning."))
    lengths = {fmt: len(decode(out[fmt], fmt)[0]) for fmt in ("wav", "flac", "ogg")}
    pcm = out["pcm"]
    assert pcm.status_code == 200 and pcm.headers["content-type"] == f"audio/L16;rate={rate};channels=1"
    assert lengths["wav"] == lengths["flac"] == len(pcm.content) // 2 and abs(lengths["ogg"] - lengths["wav"]) < 2000
    # the lossless formats carry the same samples
    assert out["pcm"].content == np.round(wav[:, 0] * 32768).astype("<i2").tobytes()
    fast, _ = decode(out["tts-1"])  # OpenAI's model name is an alias; speed 2 speaks faster
    assert len(fast) < lengths["wav"]
    for fmt, media in (("mp3", "audio/mpeg"), ("opus", "audio/ogg; codecs=opus")):
        assert out[fmt].headers["content-type"] == media
        audio, sr = sf.read(io.BytesIO(out[fmt].content))
        assert sr == rate and abs(len(audio) - lengths["wav"]) < 0.15 * rate
    assert out["default"].headers["content-type"] == "audio/mpeg"  # OpenAI's default when none is named
    voices = out["voices"].json()["voices"]
    assert [v for v in voices if "alloy" in v["aliases"]], voices  # OpenAI's names, listed as aliases
    assert out["alias"].status_code == 200 and out["alias"].headers["x-instructions"] == "ignored"
    # OpenAI's name and {"id": ...} are the same voice: with the same seed, the same speech
    assert out["alias"].content == out["object"].content == out["default"].content


def test_bad_input_is_a_clear_4xx_never_a_500(demo_engine, speech_dir):
    prompt = (speech_dir / "u1.wav").read_bytes()

    def upload(data: bytes = prompt) -> dict:
        return {"prompt": ("p.wav", data, "audio/wav")}

    async def test(client, app):
        tts, speech = "/v1/tts", "/v1/audio/speech"
        voiced = {"voice": VOICE, **QUICK}
        ok = {"input": "Hi.", "voice": VOICE, "steps": 2}
        # text: blank, missing, too long (413), nothing to speak (found by the pipeline's frontend)
        assert assert_error(await client.post(tts, data={"text": "   ", **voiced}), 422, "invalid_parameter")[
            "param"] == "text"
        assert assert_error(await client.post(tts, data=voiced), 422, "invalid_parameter")["param"] == "text"
        assert assert_error(await client.post(speech, json={**ok, "input": ""}), 422, "invalid_parameter")[
            "param"] == "input"
        error = assert_error(await client.post(tts, data={"text": "a" * 41, **voiced}), 413, "text_too_long")
        assert error["param"] == "text" and "limit is 40" in error["message"]
        assert assert_error(await client.post(speech, json={**ok, "input": "b" * 41}), 413, "text_too_long")[
            "param"] == "input"
        error = assert_error(await client.post(tts, data={"text": "🙂 🙂", **voiced}), 422, "invalid_parameter")
        assert error["param"] == "text" and "nothing to speak" in error["message"]
        # voice: unknown (the message lists the voices), neither voice nor prompt, both
        for path, body in [(tts, {"data": {"text": "Hi.", "voice": "bob"}}),
                           (speech, {"json": {**ok, "voice": "bob"}})]:
            error = assert_error(await client.post(path, **body), 422, "invalid_parameter")
            assert error["param"] == "voice" and "'bob'" in error["message"] and VOICE in error["message"]
        assert assert_error(await client.post(tts, data={"text": "Hi."}), 422, "invalid_parameter")["param"] == "voice"
        assert_error(await client.post(tts, files=upload(), data={"text": "Hi.", "voice": VOICE,
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
            assert assert_error(await client.post(tts, data={"text": "Hi.", "speed": speed, **voiced}), 422,
                                "invalid_parameter")["param"] == "speed"
            assert assert_error(await client.post(speech, json={**ok, "speed": float(speed)}), 422,
                                "invalid_parameter")["param"] == "speed"
        error = assert_error(await client.post(speech, json={**ok, "response_format": "webm"}), 422,
                             "invalid_parameter")
        assert error["param"] == "response_format" and "wav, flac, ogg, pcm, mp3, opus, aac" in error["message"]
        assert assert_error(await client.post(tts, data={"text": "Hi.", "response_format": "aac", **voiced}), 422,
                            "invalid_parameter")["param"] == "response_format"
        error = assert_error(await client.post(speech, json={**ok, "model": "whisper-1"}), 404, "model_not_found")
        assert error["param"] == "model"
        assert_error(await client.post(tts, data={"text": "Hi.", "sped": "2", **voiced}), 422, "invalid_parameter")
        assert_error(await client.post(speech, json={**ok, "instruction": "cheerful"}), 422, "invalid_parameter")
        assert_error(await client.post(speech, content=b"input=Hi.", headers={"Content-Type": "text/plain"}), 415,
                     "unsupported_media_type")
        # the same request, well formed, works (urlencoded is fine for a voice: nothing to upload)
        assert (await client.post(tts, data={"text": "Hi.", **voiced})).status_code == 200
        assert metric(app, "speechflow_requests_total", task="tts", status="500") == 0

    run(create_app(Settings(max_wait_ms=0, max_text_chars=40), demo_engine), test)


def test_metrics_count_tts_requests(demo_engine):
    async def test(client, app):
        for _ in range(2):
            r = await client.post("/v1/audio/speech", json={"input": "Hi there.", "voice": VOICE, "steps": 2,
                                                            "solver": "midpoint"})  # one step
            assert r.status_code == 200
        await client.post("/v1/tts", data={"text": "Hi.", "voice": "nobody"})
        return (await client.get("/metrics")).text

    app = create_app(Settings(max_wait_ms=0, default_steps=2), demo_engine)
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
        assert [len(decode(r)[0]) for r in responses] == [int(24000 * 0.05 * n) for n in (12, 3 + 4, 9)]
        # one live batch: the first request's chunk, then both chunks of "Hi. Bye." and "Good day." beside it
        assert max(len(s.seeds) for s in engine.steps) == 3 and all(s.task == "tts" for s in engine.steps)
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
    assert rate == 24000 and len(audio) == int(24000 * 0.05 * len("Hello from the page."))
    [(task, request, _)] = engine.prepared
    assert task == "tts" and (request.text, request.voice) == ("Hello from the page.", "alice")


FETCH_TTS_DOWNLOAD = """
const done = arguments[arguments.length - 1];
fetch(document.getElementById("tts-download").href).then((r) => r.arrayBuffer()).then((buffer) => {
  done(btoa(String.fromCharCode(...new Uint8Array(buffer))));
}).catch((error) => done("failed: " + error));
"""
