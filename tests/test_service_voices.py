"""Uploaded voices: POST/GET/DELETE /v1/audio/voices, kept in SQLite + WAV files across restarts, usable wherever a
voice is taken, scoped by API key; the rules against the fake engine, the whole path against the shipped bundle
(pocketsphinx transcribing a sample that comes without a transcript)."""

import asyncio
import io
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import soundfile as sf

from bench.fake_engine import FakeEngine
from bench.inprocess import serving
from model.audio import encode_audio
from service.app import create_app
from service.settings import Settings
from tests.test_service_app import assert_error, scenario
from tests.test_shipped_bundle import BUNDLE

VOICES = "/v1/audio/voices"


def sample(seconds: float = 2.0) -> bytes:
    t = np.arange(int(16000 * seconds)) / 16000
    return encode_audio((0.2 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 16000, "wav")


def upload(client, data: bytes | None = None, key: str | None = None, **form):
    fields = {"name": "Me", "consent": "true", "transcript": "hello there my friend", **form}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return client.post(VOICES, data=fields, files={"audio_sample": ("me.wav", data or sample(), "audio/wav")},
                       headers=headers)


def test_an_uploaded_voice_is_listed_usable_everywhere_and_deleted(tmp_path):
    async def test(client, app, engine):
        r = await upload(client)
        assert r.status_code == 200, r.text
        voice = r.json()
        assert voice["id"].startswith("voice_") and voice["transcribed"] is False and voice["seconds"] == 2.0
        listed = (await client.get(VOICES)).json()["data"]
        assert [v["id"] for v in listed] == [voice["id"]]
        catalogue = (await client.get("/v1/voices")).json()["voices"]
        assert {"id": voice["id"], "source": "uploaded"}.items() <= catalogue[-1].items()
        speech = await client.post("/v1/audio/speech", json={"input": "Hi.", "voice": {"id": voice["id"]},
                                                             "response_format": "wav"})
        tts = await client.post("/v1/tts", data={"text": "Hi.", "voice": voice["id"]})
        assert speech.status_code == tts.status_code == 200
        task, payload, _ = engine.prepared[-1]
        assert task == "tts" and payload.prompt is not None and len(payload.prompt) == 32000
        assert payload.prompt_text == "hello there my friend" and [p for p, _ in payload.alignment] == \
            ["hello", "there", "my", "friend"]  # the alignment stored at upload travels with the request
        assert (await client.delete(f"{VOICES}/{voice['id']}")).json() == {
            "id": voice["id"], "object": "audio.voice.deleted", "deleted": True}
        assert_error(await client.delete(f"{VOICES}/{voice['id']}"), 404, "not_found")
        error = assert_error(await client.post("/v1/tts", data={"text": "Hi.", "voice": voice["id"]}), 422,
                             "invalid_parameter")
        assert error["param"] == "voice"

    scenario(test, FakeEngine(tasks=("tts",)), data_dir=str(tmp_path))


def test_uploads_are_validated_like_prompts(tmp_path):
    async def test(client, app, engine):
        for form, param in (({"consent": "false"}, "consent"), ({"name": " "}, "name"),
                            ({"name": "x" * 65}, "name"), ({"transcript": "x" * 501}, "transcript")):
            r = await upload(client, **form)
            assert r.status_code in (413, 422) and r.json()["error"]["param"] == param, r.text
        assert_error(await upload(client, sample(0.2)), 422, "invalid_parameter")  # under 0.5 s
        assert_error(await upload(client, sample(20.0)), 413, "audio_too_long")
        assert_error(await upload(client, b"not audio at all"), 400, "invalid_audio")
        r = await client.post(VOICES, data={"name": "Me", "consent": "true"})  # no audio_sample: not multipart
        assert_error(r, 415, "unsupported_media_type")
        r = await client.post(VOICES, data={"name": "Me", "consent": "true"}, files={"other": ("a", b"x")})
        assert r.status_code == 422 and "audio_sample" in r.text
        assert_error(await upload(client, unknown="x"), 422, "invalid_parameter")
        assert (await client.get(VOICES)).json()["data"] == []  # nothing half-stored

    scenario(test, FakeEngine(tasks=("tts",)), data_dir=str(tmp_path))


def test_only_the_key_that_made_a_voice_may_delete_it(tmp_path):
    async def test(client, app, engine):
        r = await upload(client, key="alice-key")
        voice = r.json()["id"]
        assert_error(await upload(client), 401, "invalid_api_key")
        auth = {"Authorization": "Bearer bob-key"}
        assert_error(await client.delete(f"{VOICES}/{voice}", headers=auth), 403, "forbidden")
        r = await client.post("/v1/tts", data={"text": "Hi.", "voice": voice}, headers=auth)
        assert_error(r, 422, "invalid_parameter")  # nor speak in it (tests/test_security.py: nor see it)
        r = await client.delete(f"{VOICES}/{voice}", headers={"Authorization": "Bearer alice-key"})
        assert r.status_code == 200 and r.json()["deleted"] is True

    scenario(test, FakeEngine(tasks=("tts",)), data_dir=str(tmp_path), api_keys="alice-key,bob-key")


def test_the_shipped_bundle_transcribes_stores_and_speaks_in_an_uploaded_voice_across_restarts(tmp_path):
    if shutil.which("flite") is None:
        pytest.skip("flite (a Debian package `make test` installs) makes the sample")
    clip = tmp_path / "sample.wav"  # a flite voice: clear enough for pocketsphinx, unseen by the TTS model
    subprocess.run(["flite", "-t", "The quick brown fox jumps over the lazy dog near the river bank.", "-o",
                    str(clip)], check=True)
    settings = Settings(bundle=str(BUNDLE), device="cpu", max_wait_ms=0, data_dir=str(tmp_path))
    body = {"input": "A short test sentence.", "seed": 3, "steps": 4, "response_format": "wav"}

    async def first():
        app = create_app(settings)
        async with serving(app) as client:
            await app.state.runtime.wait_ready()
            r = await client.post(VOICES, data={"name": "Flite", "consent": "true"},
                                  files={"audio_sample": ("sample.wav", clip.read_bytes(), "audio/wav")})
            assert r.status_code == 200, r.text
            voice = r.json()
            speech = await client.post("/v1/audio/speech", json={**body, "voice": voice["id"]})
            return voice, speech

    async def after_restart(voice_id):
        app = create_app(settings)
        async with serving(app) as client:
            await app.state.runtime.wait_ready()
            listed = (await client.get(VOICES)).json()["data"]
            speech = await client.post("/v1/audio/speech", json={**body, "voice": voice_id})
            return listed, speech

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        voice, speech = asyncio.run(first())
        listed, again = asyncio.run(after_restart(voice["id"]))
    assert voice["transcribed"] is True and {"quick", "brown", "fox"} <= set(voice["transcript"].split())
    assert [v["id"] for v in listed] == [voice["id"]]
    assert speech.status_code == again.status_code == 200
    assert speech.content == again.content  # the stored audio, transcript and alignment: the same speech
    audio, sr = sf.read(io.BytesIO(speech.content))
    assert sr == 16000 and len(audio) > 16000 and np.abs(audio).max() > 0.01


def test_an_unusable_data_directory_is_a_clear_503_and_the_built_in_voices_still_list(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the data directory should be")

    async def test(client, app, engine):
        voices = (await client.get("/v1/voices")).json()["voices"]
        assert [v["id"] for v in voices] == ["alice"]
        error = assert_error(await upload(client), 503, "voices_unavailable")
        assert "SPEECHFLOW_DATA_DIR" in error["message"]
        tts = await client.post("/v1/tts", data={"text": "Hi.", "voice": "alice"})
        assert tts.status_code == 200  # built-in voices do not need the store

    scenario(test, FakeEngine(tasks=("tts",)), data_dir=str(blocker))
