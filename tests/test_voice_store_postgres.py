"""Uploaded voices shared by replicas through PostgreSQL (SPEECHFLOW_DATABASE_URL): two app instances on one
database, as two pods behind one Service; ownership across them; the database stopping mid-way (a clear 503,
nothing lost) and coming back (served again from the next request on, nothing restarted).

One real PostgreSQL server for the whole session (tests/postgres_server.py), a fresh database per test. Without the
server binaries these tests fail under CI (which installs Debian's `postgresql`) and skip elsewhere, loudly."""

import asyncio
import os
import secrets
import threading
import warnings

import numpy as np
import pytest
import sqlalchemy as sa

from bench.fake_engine import FakeEngine
from bench.inprocess import serving
from service.app import create_app
from service.errors import VoicesUnavailable
from service.settings import Settings
from service.voice_db import SCHEMA_VERSION
from service.voices import VoiceStore
from tests.postgres_server import PostgresServer, find_bindir
from tests.test_service_app import assert_error
from tests.test_service_voices import VOICES, sample, upload

ALICE, BOB = "alice-key", "bob-key"


@pytest.fixture(scope="session")
def postgres():
    bindir = find_bindir()
    if bindir is None:
        message = ("PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under /usr/lib/postgresql: the "
                   "shared voice store is NOT tested. Install Debian's `postgresql` (`make system-deps` as root)")
        if os.environ.get("CI"):
            pytest.fail(message)
        warnings.warn(message, stacklevel=1)
        pytest.skip(message)
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def database(postgres) -> str:
    return postgres.create_database(f"voices_{secrets.token_hex(4)}")


def replicas(test, database: str, tmp_path, **settings) -> None:
    """Run ``test(a, b, engines)`` against two apps that share ``database``, each with a data directory of its own
    (which the voices must not need)."""
    engines = [FakeEngine(tasks=("tts",)), FakeEngine(tasks=("tts",))]
    apps = [create_app(Settings(max_wait_ms=0, database_url=database, data_dir=str(tmp_path / f"replica-{i}"),
                                **settings), engine) for i, engine in enumerate(engines)]

    async def main():
        async with serving(apps[0]) as a, serving(apps[1]) as b:
            for app in apps:
                await app.state.runtime.wait_ready()
            try:
                await test(a, b, engines)
            finally:
                for engine in engines:
                    engine.release()
                    engine.warm_gate.set()

    asyncio.run(main())
    assert not any(tmp_path.iterdir())  # no SQLite file, no audio file: the database holds the voices


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [v["id"] for v in response.json()["data"]]


def test_a_voice_uploaded_on_one_replica_is_listed_and_spoken_on_the_other_and_deleted_everywhere(database, tmp_path):
    async def test(a, b, engines):
        r = await upload(a)
        assert r.status_code == 200, r.text
        voice = r.json()
        assert ids(await b.get(VOICES)) == ids(await a.get(VOICES)) == [voice["id"]]
        catalogue = (await b.get("/v1/voices")).json()["voices"]
        assert {"id": voice["id"], "source": "uploaded"}.items() <= catalogue[-1].items()
        speech = await b.post("/v1/tts", data={"text": "Hi.", "voice": voice["id"]})
        assert speech.status_code == 200, speech.text
        task, payload, _ = engines[1].prepared[-1]  # spoken by the replica that did not take the upload
        assert task == "tts" and payload.prompt is not None and len(payload.prompt) == 32000
        assert payload.prompt_text == "hello there my friend"
        assert [p for p, _ in payload.alignment] == ["hello", "there", "my", "friend"]
        assert (await b.delete(f"{VOICES}/{voice['id']}")).json()["deleted"] is True
        assert ids(await a.get(VOICES)) == []
        assert_error(await a.delete(f"{VOICES}/{voice['id']}"), 404, "not_found")
        r = await a.post("/v1/tts", data={"text": "Hi.", "voice": voice["id"]})
        assert assert_error(r, 422, "invalid_parameter")["param"] == "voice"

    replicas(test, database, tmp_path)


def test_a_voice_belongs_to_its_key_on_every_replica(database, tmp_path):
    async def test(a, b, engines):
        voice = (await upload(a, key=ALICE)).json()["id"]
        assert ids(await b.get(VOICES, headers=bearer(BOB))) == []
        r = await b.post("/v1/tts", data={"text": "Hi.", "voice": voice}, headers=bearer(BOB))
        assert_error(r, 422, "invalid_parameter")  # the same answer as a voice that does not exist
        assert_error(await b.delete(f"{VOICES}/{voice}", headers=bearer(BOB)), 403, "forbidden")
        assert ids(await b.get(VOICES, headers=bearer(ALICE))) == [voice]
        r = await b.post("/v1/tts", data={"text": "Hi.", "voice": voice}, headers=bearer(ALICE))
        assert r.status_code == 200, r.text
        assert (await b.delete(f"{VOICES}/{voice}", headers=bearer(ALICE))).status_code == 200
        assert ids(await a.get(VOICES, headers=bearer(ALICE))) == []

    replicas(test, database, tmp_path, api_keys=f"{ALICE},{BOB}")


def test_the_database_going_away_is_a_clear_503_and_coming_back_loses_nothing(postgres, database, tmp_path):
    async def test(a, b, engines):
        kept = (await upload(a)).json()["id"]
        assert ids(await b.get(VOICES)) == [kept]  # both pools now hold a connection that the restart cuts
        postgres.stop()
        try:  # only b is asked while the database is away; a finds out after it is back
            answers = [await upload(b), await b.get(VOICES), await b.delete(f"{VOICES}/{kept}"),
                       await b.post("/v1/tts", data={"text": "Hi.", "voice": kept}),
                       await b.post("/v1/audio/speech", json={"input": "Hi.", "voice": kept})]
            for r in answers:
                error = assert_error(r, 503, "voices_unavailable")
                assert "SPEECHFLOW_DATABASE_URL" in error["message"] and str(postgres.port) not in error["message"]
                assert r.headers["retry-after"]
            # what does not need the store goes on: the built-in voices, listed and spoken
            assert [v["id"] for v in (await b.get("/v1/voices")).json()["voices"]] == ["alice"]
            assert (await b.post("/v1/tts", data={"text": "Hi.", "voice": "alice"})).status_code == 200
        finally:
            postgres.start()
        # the very next request on each replica is served: a's pooled connection died with the server and is
        # replaced before use (pre-ping), b reconnects; nothing was restarted
        r = await a.post("/v1/tts", data={"text": "Hi.", "voice": kept})
        assert r.status_code == 200, r.text
        assert ids(await b.get(VOICES)) == [kept]
        added = (await b.post(VOICES, data={"name": "Again", "consent": "true", "transcript": "hello there"},
                              files={"audio_sample": ("a.wav", sample(1.0), "audio/wav")})).json()["id"]
        assert set(ids(await a.get(VOICES))) == {kept, added}

    replicas(test, database, tmp_path)


def test_replicas_starting_together_make_the_schema_once_and_keep_audio_in_the_row(database, tmp_path):
    stores = [VoiceStore(tmp_path / f"unused-{i}", database) for i in range(4)]
    start, failures = threading.Barrier(len(stores)), []

    def first_use(store: VoiceStore) -> None:
        start.wait()
        try:
            store.list()
        except Exception as e:  # collected, and asserted below
            failures.append(e)

    threads = [threading.Thread(target=first_use, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    tone = (0.1 * np.sin(np.arange(16000) / 10)).astype(np.float32)
    voice = stores[0].add("Me", tone, "hi", False, [("hi", 5)], owner="")
    direct = sa.create_engine(database.replace("postgresql://", "postgresql+psycopg://"))
    with direct.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        versions = conn.exec_driver_sql("SELECT version FROM voices_schema").scalars().all()
        audio = conn.exec_driver_sql("SELECT audio FROM voices WHERE id = %s", (voice.id,)).scalar_one()
    direct.dispose()
    assert tables == {"voices", "voices_schema"} and versions == [SCHEMA_VERSION]
    assert bytes(audio).startswith(b"fLaC")  # the audio itself, no path to a file
    assert stores[3].audio(stores[3].get(voice.id)).shape == (16000,)
    for store in stores:
        store.close()
    assert not any(tmp_path.iterdir())



def test_a_voices_table_the_store_did_not_make_is_left_alone(database, tmp_path):
    direct = sa.create_engine(database.replace("postgresql://", "postgresql+psycopg://"))
    with direct.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE voices (id TEXT PRIMARY KEY, other TEXT)")
    store = VoiceStore(tmp_path, database)
    with pytest.raises(VoicesUnavailable, match="did not make"):
        store.list()
    store.close()
    with direct.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) == {"voices"}
        assert [c["name"] for c in sa.inspect(conn).get_columns("voices")] == ["id", "other"]
    direct.dispose()
