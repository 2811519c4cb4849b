"""Uploaded voices: POST/GET/DELETE /v1/audio/voices, kept in the embedded SQLite store across restarts (audio in the
rows; a data directory of the first layout, WAV files beside the rows, migrated), usable wherever a voice is taken,
scoped by API key; the rules against the fake engine, the whole path against the shipped bundle (pocketsphinx
transcribing a sample that comes without a transcript). Replicas sharing PostgreSQL:
tests/test_voice_store_postgres.py."""

import asyncio
import io
import json
import shutil
import sqlite3
import subprocess
import warnings

import numpy as np
import pytest
import soundfile as sf

from bench.fake_engine import FakeEngine
from bench.inprocess import serving
from model.audio import encode_audio
from service.app import create_app
from service.errors import VoicesUnavailable
from service.settings import Settings
from service.voices import VoiceStore
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
    assert len(audio) > sr and np.abs(audio).max() > 0.01  # over a second of sound, at the rate the route answers in


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


# the layout the store wrote at schema version 1: rows in voices.sqlite3, one 16-bit WAV per voice in voices/
V1_SCHEMA = """CREATE TABLE voices (id TEXT PRIMARY KEY, name TEXT NOT NULL, transcript TEXT NOT NULL,
    transcribed INTEGER NOT NULL, alignment TEXT NOT NULL, seconds REAL NOT NULL, created_at INTEGER NOT NULL,
    owner TEXT NOT NULL)"""


def test_a_data_directory_of_the_first_layout_is_migrated_into_the_rows(tmp_path):
    kept, lost, orphan = "voice_00000000000000aa", "voice_00000000000000bb", "voice_00000000000000cc"
    (tmp_path / "voices").mkdir()
    t = np.arange(32000) / 16000
    sf.write(tmp_path / "voices" / f"{kept}.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000,
             subtype="PCM_16")
    sf.write(tmp_path / "voices" / f"{orphan}.wav", np.zeros(8000, np.float32), 16000, subtype="PCM_16")
    db = sqlite3.connect(tmp_path / "voices.sqlite3")
    with db:
        db.execute(V1_SCHEMA)
        for vid in (kept, lost):  # `lost`: a row whose file is gone, never listed
            db.execute("INSERT INTO voices VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (vid, "Old", "hello there", 1, json.dumps([["hello", 40], ["there", 60]]), 2.0, 1700000000,
                        "0123456789abcdef"))
    db.close()
    expected, _ = sf.read(tmp_path / "voices" / f"{kept}.wav", dtype="float32")

    async def test(client, app, engine):
        listed = (await client.get(VOICES)).json()["data"]
        assert [(v["id"], v["name"], v["transcript"], v["transcribed"], v["seconds"], v["created_at"])
                for v in listed] == [(kept, "Old", "hello there", True, 2.0, 1700000000)]
        assert (await client.post("/v1/tts", data={"text": "Hi.", "voice": kept})).status_code == 200
        _, payload, _ = engine.prepared[-1]
        assert np.array_equal(payload.prompt, expected)  # the same samples, now from the row
        assert list(payload.alignment) == [("hello", 40), ("there", 60)]

    scenario(test, FakeEngine(tasks=("tts",)), data_dir=str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voices.sqlite3"]  # the WAVs (orphans too) are gone
    db = sqlite3.connect(tmp_path / "voices.sqlite3")
    assert db.execute("SELECT version FROM voices_schema").fetchall() == [(2,)]
    assert db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall() == \
        [("voices",), ("voices_schema",)]
    db.close()
    store = VoiceStore(tmp_path)  # opening again migrates nothing and keeps the voice
    assert [v.id for v in store.list()] == [kept] and store.get(kept).owner == "0123456789abcdef"
    store.close()


def test_a_migration_that_cannot_finish_changes_nothing(tmp_path):
    (tmp_path / "voices").mkdir()
    (tmp_path / "voices" / "voice_00000000000000aa.wav").write_bytes(b"RIFF, but not audio")
    db = sqlite3.connect(tmp_path / "voices.sqlite3")
    with db:
        db.execute(V1_SCHEMA)
        db.execute("INSERT INTO voices VALUES ('voice_00000000000000aa', 'Old', 'hi', 0, '[]', 1.0, 1, '')")
    db.close()
    with pytest.raises(VoicesUnavailable, match="SPEECHFLOW_DATA_DIR"):
        VoiceStore(tmp_path)
    db = sqlite3.connect(tmp_path / "voices.sqlite3")  # still the first layout, whole: the step rolled back
    assert db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall() == [("voices",)]
    assert db.execute("SELECT id FROM voices").fetchall() == [("voice_00000000000000aa",)]
    db.close()
    assert (tmp_path / "voices" / "voice_00000000000000aa.wav").is_file()


def test_a_database_url_that_is_neither_sqlite_nor_postgresql_is_refused_clearly(tmp_path):
    for url in ("mysql://user@host/db", "not a url", "sqlite://"):
        with pytest.raises(VoicesUnavailable, match="SPEECHFLOW_DATABASE_URL"):
            VoiceStore(tmp_path, url)
    store = VoiceStore(tmp_path / "elsewhere", f"sqlite:///{tmp_path / 'chosen.db'}")  # SQLite by URL works too
    store.add("Me", np.zeros(8000, np.float32), "hi", False, [("hi", 5)], owner="")
    assert len(store.list()) == 1 and (tmp_path / "chosen.db").is_file() and not (tmp_path / "elsewhere").exists()
    store.close()
