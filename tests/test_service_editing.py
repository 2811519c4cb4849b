"""Editing and infilling over HTTP (/v1/audio/edit, /v1/audio/infill) against the shipped bundle: the answer is the
offline pipeline's edit of the same recording (the step loop runs the same rows), the kept samples are the
upload's own at its own rate, and every error names its field."""

import io
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf

from model.audio import resample
from service.app import create_app
from service.settings import Settings
from tests.conftest import assert_same_speech
from tests.test_service_tts import run

VOICE = "espeak-en-029-Mike"  # "It's always sad when the fleas leave, because that means your dog is dead."


@pytest.fixture(scope="module")
def recording(demo_pipeline):
    """(16-bit WAV bytes at 24 kHz, its samples as float, transcript) of a built-in voice's recording."""
    pipe, _ = demo_pipeline
    voice = pipe.voices[VOICE]
    pcm = (resample(voice.wav, 16000, 24000) * 32767).round().astype(np.int16)
    data = io.BytesIO()
    sf.write(data, pcm, 24000, format="WAV", subtype="PCM_16")
    return data.getvalue(), pcm.astype(np.float32) / 32768, voice.text


def assert_error(response, status, param):
    """An error answer with the service's envelope, naming ``param`` (None: no single field)."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["param"] == param, error


def post_edit(client, data, **fields):
    return client.post("/v1/audio/edit", files={"file": ("take.wav", data, "audio/wav")},
                       data={"seed": "5", **fields})


def test_an_edit_over_http_is_the_offline_edit_with_the_upload_s_own_samples_kept(demo_engine, demo_pipeline,
                                                                                   recording):
    pipe, _ = demo_pipeline
    data, samples, transcript = recording
    text = transcript.replace(" sad ", " purple ")

    async def test(client, app):
        return await post_edit(client, data, text=text, transcript=transcript)

    response = run(create_app(Settings(), demo_engine), test)
    assert response.status_code == 200, response.text
    assert response.headers["x-sample-rate"] == "24000" and response.headers["x-seed"] == "5"
    assert unquote(response.headers["x-transcript"]) == transcript and response.headers["x-transcribed"] == "false"
    served, sr = sf.read(io.BytesIO(response.content), dtype="float32")
    assert sr == 24000
    offline, _ = pipe.edit(samples, 24000, text, transcript, seed=5)
    assert_same_speech(served, np.round(offline * 32767) / 32768)  # the WAV answer is 16-bit
    # before and after the regenerated stretch the answer is the upload, sample for sample
    head = np.flatnonzero(served[: len(samples)] != samples[: len(served)])[0]
    tail = np.flatnonzero(served[::-1][: len(samples)] != samples[::-1][: len(served)])[0]
    assert head > 0.3 * sr and tail > 2.0 * sr, (head, tail)


def test_without_a_transcript_the_recogniser_s_is_used(demo_engine, recording):
    from model import recognizer

    if not recognizer.available():
        pytest.skip("no speech recogniser installed (speechflow[asr])")
    data, _, _ = recording

    async def test(client, app):
        return await post_edit(client, data, text="It's always purple when the fleas leave.", steps="2")

    response = run(create_app(Settings(), demo_engine), test)
    heard = unquote(response.headers.get("x-transcript", ""))
    # the recogniser's words for the tiny voice may differ from the built-in transcript; the edit follows them,
    # or says which field to fix when they do not fit the new text at all
    assert response.headers.get("x-transcribed") == "true" or response.status_code == 422, response.text
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert "fleas" in heard.lower(), heard


@pytest.mark.parametrize("fields,status,param", [
    ({"text": "It's always sad when the fleas leave, because that means your dog is dead."}, 422, "text"),
    ({"text": "Hello there.", "transcript": "Hi."}, 422, "transcript"),
    ({"text": "  "}, 422, "text"),
    ({"text": "x" * 1001}, 413, "text"),
    ({"text": "ok", "speed": "9"}, 422, "speed"),
    ({"text": "ok", "typo": "1"}, 422, None),
    ({"text": "ok", "quality": "best"}, 422, "quality"),
    ({"text": "ok", "quality": "fast", "steps": "4"}, 422, "steps"),  # the TTS student samples with 2 steps only
])
def test_edit_errors_name_the_field(demo_engine, recording, fields, status, param):
    data, _, transcript = recording
    fields = {"transcript": transcript, **fields} if "transcript" not in fields else fields

    async def test(client, app):
        return await post_edit(client, data, **fields)

    response = run(create_app(Settings(), demo_engine), test)
    assert_error(response, status, param=param)


def test_edit_needs_a_recording_and_a_tts_model(demo_engine, tmp_path):
    async def test(client, app):
        missing = await client.post("/v1/audio/edit", files={"text": (None, "hi")})
        not_audio = await client.post("/v1/audio/edit", files={"file": ("a.txt", b"hello", "text/plain")},
                                      data={"text": "hi", "transcript": "ho"})
        return missing, not_audio

    missing, not_audio = run(create_app(Settings(), demo_engine), test)
    assert_error(missing, 422, param="file")
    assert_error(not_audio, 415, param="file")


def test_infill_over_http_regenerates_the_span_and_keeps_the_rest(demo_engine, recording):
    data, samples, _ = recording

    async def test(client, app):
        good = await client.post("/v1/audio/infill", files={"file": ("take.wav", data, "audio/wav")},
                                 data={"spans": "[[1.0, 1.3]]", "steps": "4", "seed": "1"})
        bad = [await client.post("/v1/audio/infill", files={"file": ("take.wav", data, "audio/wav")},
                                 data={"spans": spans}) for spans in ("1.0-1.3", "[[2.0, 1.0]]", "[]")]
        return good, bad

    good, bad = run(create_app(Settings(), demo_engine), test)
    assert good.status_code == 200, good.text
    out, sr = sf.read(io.BytesIO(good.content), dtype="float32")
    assert sr == 24000 and len(out) == len(samples)
    np.testing.assert_array_equal(out[: int(0.98 * sr)], samples[: int(0.98 * sr)])
    np.testing.assert_array_equal(out[int(1.32 * sr):], samples[int(1.32 * sr):])
    assert np.abs(out[int(1.05 * sr): int(1.25 * sr)] - samples[int(1.05 * sr): int(1.25 * sr)]).max() > 1e-3
    for response in bad:
        assert_error(response, 422, param="spans")


def test_the_endpoints_are_documented(demo_engine):
    async def test(client, app):
        return (await client.get("/openapi.json")).json()

    spec = run(create_app(Settings(), demo_engine), test)
    edit = spec["paths"]["/v1/audio/edit"]["post"]
    schema = edit["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"file", "text"} <= set(spec["components"]["schemas"][schema["$ref"].split("/")[-1]]["required"])
    assert "/v1/audio/infill" in spec["paths"]



def test_infill_with_a_text_makes_the_span_say_it(demo_engine, demo_pipeline, recording):
    pipe, _ = demo_pipeline
    data, samples, transcript = recording

    async def test(client, app):
        upload = {"file": ("take.wav", data, "audio/wav")}
        good = await client.post("/v1/audio/infill", files=upload,
                                 data={"spans": "[[1.0, 1.4]]", "text": "purple elephants", "transcript": transcript,
                                       "seed": "4"})
        two = await client.post("/v1/audio/infill", files=upload,
                                data={"spans": "[[1.0, 1.4], [2, 3]]", "text": "purple", "transcript": transcript})
        return good, two

    good, two = run(create_app(Settings(), demo_engine), test)
    assert good.status_code == 200, good.text
    served, sr = sf.read(io.BytesIO(good.content), dtype="float32")
    offline, _ = pipe.edit(samples, 24000, "purple elephants", transcript, span=(1.0, 1.4), seed=4)
    assert sr == 24000 and good.headers["content-disposition"] == 'attachment; filename="infilled.wav"'
    assert_same_speech(served, np.round(offline * 32767) / 32768)
    assert_error(two, 422, "spans")


def test_a_long_recording_costs_only_what_its_edit_regenerates(demo_engine, recording):
    _, samples, _ = recording
    long = np.tile(samples, 8)  # 42 s: 4,200 frames, over this server's bound on a request's frames
    data = io.BytesIO()
    sf.write(data, long, 24000, format="WAV", subtype="PCM_16")

    async def test(client, app):
        return await client.post("/v1/audio/infill", files={"file": ("long.wav", data.getvalue(), "audio/wav")},
                                 data={"spans": "[[20.0, 20.3]]", "steps": "2", "seed": "0"})

    response = run(create_app(Settings(max_request_frames=3500), demo_engine), test)
    assert response.status_code == 200, response.text
    assert response.headers["x-rows"] == "1"
    out, _ = sf.read(io.BytesIO(response.content), dtype="float32")
    assert len(out) == len(long)
