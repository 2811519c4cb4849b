"""What docs/security.md promises, tested: API keys compared in constant time and never logged or echoed, an
uploaded voice visible only to the key that made it, no request value ever used as a file path, and the decoded
size of an upload bounded from its header."""

import hmac
import io
import logging

import numpy as np
import pytest
import soundfile as sf

from bench.fake_engine import FakeEngine
from model.audio import encode_audio
from service.uploads import decode_upload
from service.voices import VoiceStore
from tests.test_service_app import assert_error, scenario
from tests.test_service_voices import VOICES, upload

KEYS = "alice-key-0123456789,bob-key-9876543210,carol-key-5555555555"
ALICE, BOB, _ = KEYS.split(",")
GOOD = encode_audio((0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32), 16000, "wav")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# --- API keys ---------------------------------------------------------------------------------------------------
def test_every_key_is_compared_in_constant_time(monkeypatch):
    seen: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return compare(a, b)

    monkeypatch.setattr("service.middleware.hmac.compare_digest", spy)

    async def test(client, app, engine):
        assert (await client.get("/v1/models", headers=bearer(ALICE))).status_code == 200
        # the first key matched, and the other two were compared all the same: no early exit to time
        assert [b for _, b in seen] == [k.encode() for k in KEYS.split(",")]
        seen.clear()
        assert_error(await client.get("/v1/models", headers=bearer("alice-key-0123456788")), 401, "invalid_api_key")
        assert len(seen) == 3 and all(isinstance(a, bytes) for a, _ in seen)

    scenario(test, FakeEngine(), api_keys=KEYS)


def test_keys_are_never_logged_nor_echoed(caplog, tmp_path):
    wrong = "wrong-key-that-must-not-appear"

    async def test(client, app, engine):
        answers = [await client.get("/v1/models", headers=bearer(ALICE)),
                   await client.get("/v1/models", headers=bearer(wrong)),
                   await client.post("/v1/enhance", headers=bearer(BOB), files={"file": ("a.wav", GOOD, "audio/wav")},
                                     data={"seed": "13"}),  # a poisoned seed: the server logs a traceback
                   await client.post("/v1/enhance", headers=bearer(BOB), data={"steps": "0"},
                                     files={"file": ("a.wav", GOOD, "audio/wav")}),
                   await upload(client, key=ALICE)]
        assert [r.status_code for r in answers] == [200, 401, 500, 422, 200]
        for r in answers:
            text = r.text + "".join(f"{k}: {v}" for k, v in r.headers.items())
            assert not any(secret in text for secret in (ALICE, BOB, wrong))

    with caplog.at_level(logging.DEBUG):
        app = scenario(test, FakeEngine(tasks=("enhance", "tts"), fail_seeds=[13]), api_keys=KEYS,
                       data_dir=str(tmp_path))
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    assert "inference failed" in logged  # the failure was logged, so there was something to look at
    assert not any(secret in logged for secret in (ALICE, BOB, wrong))
    assert ALICE not in repr(app.state.runtime.settings) and ALICE not in str(app.state.runtime.settings)
    stored = (tmp_path / "voices.sqlite3").read_bytes()
    assert ALICE.encode() not in stored  # only a hash prefix of the key is kept


# --- voice ownership --------------------------------------------------------------------------------------------
def test_another_keys_voice_is_neither_listed_nor_spoken_in(tmp_path):
    async def test(client, app, engine):
        voice = (await upload(client, key=ALICE)).json()["id"]
        for key, visible in ((ALICE, True), (BOB, False)):
            listed = [v["id"] for v in (await client.get(VOICES, headers=bearer(key))).json()["data"]]
            catalogue = [v["id"] for v in (await client.get("/v1/voices", headers=bearer(key))).json()["voices"]]
            assert (voice in listed, voice in catalogue) == (visible, visible), key
            speech = await client.post("/v1/audio/speech", headers=bearer(key),
                                       json={"input": "Hi.", "voice": {"id": voice}, "response_format": "wav"})
            tts = await client.post("/v1/tts", headers=bearer(key), data={"text": "Hi.", "voice": voice})
            if visible:
                assert speech.status_code == tts.status_code == 200
            else:  # the same answer as a voice that does not exist: nothing tells Bob that Alice has one
                unknown = await client.post("/v1/tts", headers=bearer(key),
                                            data={"text": "Hi.", "voice": "voice_0123456789abcdef"})
                for r in (speech, tts, unknown):
                    assert assert_error(r, 422, "invalid_parameter")["param"] == "voice"
                assert tts.json()["error"]["message"].replace(voice, "X") == \
                    unknown.json()["error"]["message"].replace("voice_0123456789abcdef", "X")
        prompts = [p for task, p, _ in engine.prepared if task == "tts" and p.prompt is not None]
        assert len(prompts) == 2  # Alice's two requests; none of Bob's reached the engine with her audio

    scenario(test, FakeEngine(tasks=("tts",)), data_dir=str(tmp_path), api_keys=KEYS)


def test_a_voice_uploaded_on_an_open_server_belongs_to_no_key_once_keys_are_set(tmp_path):
    made: list[str] = []

    async def open_server(client, app, engine):
        made.append((await upload(client)).json()["id"])

    async def with_keys(client, app, engine):
        assert (await client.get(VOICES, headers=bearer(ALICE))).json()["data"] == []
        r = await client.post("/v1/tts", headers=bearer(ALICE), data={"text": "Hi.", "voice": made[0]})
        assert_error(r, 422, "invalid_parameter")
        assert_error(await client.delete(f"{VOICES}/{made[0]}", headers=bearer(ALICE)), 403, "forbidden")

    scenario(open_server, FakeEngine(tasks=("tts",)), data_dir=str(tmp_path))
    scenario(with_keys, FakeEngine(tasks=("tts",)), data_dir=str(tmp_path), api_keys=KEYS)


# --- no request value is a path ---------------------------------------------------------------------------------
@pytest.mark.parametrize("voice_id", ["..%2F..%2Fvoices.sqlite3", "voice_..%2F..%2Fvoices", "voice_%2E%2E",
                                      "voice_0123456789ABCDEF", "voice_0123456789abcdef.wav"])
def test_voice_ids_are_never_paths(tmp_path, voice_id):
    async def test(client, app, engine):
        voice = (await upload(client)).json()["id"]
        before = sorted(p.name for p in tmp_path.rglob("*"))
        r = await client.delete(f"{VOICES}/{voice_id}")
        assert r.status_code in (404, 405), r.text  # 405: a path the router does not route at all
        tts = await client.post("/v1/tts", data={"text": "Hi.", "voice": voice_id.replace("%2F", "/")})
        assert_error(tts, 422, "invalid_parameter")
        assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing touched
        assert (await client.get(VOICES)).json()["data"][0]["id"] == voice

    scenario(test, FakeEngine(tasks=("tts",)), data_dir=str(tmp_path))


def test_the_store_refuses_to_make_a_file_name_of_anything_but_its_own_ids(tmp_path):
    store = VoiceStore(tmp_path)
    assert store.get("../voices.sqlite3") is None and store.get("voice_../../x") is None
    with pytest.raises(ValueError, match="not a voice id"):
        store.delete("../voices.sqlite3")
    assert (tmp_path / "voices.sqlite3").is_file()
    store.close()


def test_upload_file_names_and_static_paths_reach_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hostile = ["../../../../tmp/speechflow-evil.wav", "/etc/passwd", "a\x00b.wav", "C:\\Windows\\x.wav"]

    async def test(client, app, engine):
        for name in hostile:
            r = await client.post("/v1/enhance", files={"file": (name, GOOD, "audio/wav")})
            assert r.status_code == 200, (name, r.text)  # the name says nothing but "is this raw PCM"
        for path in ("/static/../app.py", "/static/%2E%2E/app.py", "/static/..%2Fapp.py", "/static/../../README.md"):
            r = await client.get(path)
            assert r.status_code == 404, (path, r.status_code)
        assert list(tmp_path.iterdir()) == []  # the server wrote nothing where it runs

    scenario(test, FakeEngine())


# --- decoded size -----------------------------------------------------------------------------------------------
def declared_flac(rate: int, channels: int, declared_frames: int) -> bytes:
    """A ~100-byte FLAC whose STREAMINFO declares ``declared_frames`` frames (a decompression bomb's header)."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros((rate // 100, channels), np.float32), rate, format="FLAC")
    data = bytearray(buf.getvalue())
    info = 8 + 10  # after "fLaC" and the block header: rate (20 bits), channels (3), bits (5), total frames (36)
    packed = int.from_bytes(data[info:info + 8], "big")
    packed = (packed & ~(2**36 - 1)) | declared_frames
    data[info:info + 8] = packed.to_bytes(8, "big")
    data[info + 8:info + 24] = bytes(16)  # no MD5 to disagree with
    return bytes(data)


BOMB = declared_flac(384_000, 8, 384_000 * 50)  # 50 s (under the 60 s limit), 8 x 384 kHz: 586 MiB decoded


def test_a_small_upload_that_declares_a_huge_decode_is_refused_from_its_header():
    assert len(BOMB) < 1000

    async def test(client, app, engine):
        error = assert_error(await client.post("/v1/enhance", files={"file": ("a.flac", BOMB, "audio/flac")}), 413,
                             "audio_too_large")
        assert error["param"] == "file" and "max_decoded_bytes" in error["message"]
        assert (await client.post("/v1/enhance", files={"file": ("a.wav", GOOD, "audio/wav")})).status_code == 200

    scenario(test, FakeEngine())


def test_the_decoded_size_limit_counts_samples_times_channels():
    stereo = encode_audio(np.zeros((2, 16000), np.float32), 16000, "flac")  # 1 s stereo: 128,000 bytes decoded
    decoded = decode_upload(stereo, "audio/flac", "a.flac", target_sr=16000, max_seconds=60,
                            max_decoded_bytes=128_000)
    assert decoded.num_samples == 16000
    with pytest.raises(Exception, match="max_decoded_bytes") as refused:
        decode_upload(stereo, "audio/flac", "a.flac", target_sr=16000, max_seconds=60, max_decoded_bytes=127_999)
    assert refused.value.status == 413 and refused.value.param == "file"
    with pytest.raises(Exception, match="max_decoded_bytes"):  # raw PCM too, named by the field it came in
        decode_upload(bytes(3200), "audio/L16;rate=16000", None, target_sr=16000, max_seconds=60,
                      max_decoded_bytes=6399, param="prompt")


def test_the_decoded_size_setting_reaches_the_decoder():
    async def test(client, app, engine):
        r = await client.post("/v1/enhance", files={"file": ("a.wav", GOOD, "audio/wav")})
        assert_error(r, 413, "audio_too_large")

    scenario(test, FakeEngine(), max_decoded_bytes=1000)
