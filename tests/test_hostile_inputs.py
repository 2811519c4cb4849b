"""A corpus of malformed and extreme requests: every one is answered with a 4xx JSON error that names what was wrong
(never a 5xx, never a hang), and the server still serves a good request afterwards. Containers, codecs, rates,
channel counts, lengths, non-finite samples, multipart abuse, hostile text and transcripts, bad parameters."""

import io
import struct

import numpy as np
import pytest
import soundfile as sf

from bench.fake_engine import FakeEngine
from model.audio import encode_audio
from tests.test_service_app import scenario


def _wav_header(rate: int, channels: int, frames: int, bits: int = 16) -> bytes:
    """A WAV header that declares what it likes; the data that follows is whatever the case appends."""
    block = channels * bits // 8
    data = frames * block
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, rate, (rate * block) % 2**32, block, bits)
    return b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE" + b"fmt " + fmt + b"data" + struct.pack("<I", data)


def _float_wav(x: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


GOOD = encode_audio((0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32), 16000, "wav")
nan_audio = np.full(16000, np.nan, np.float32)
inf_audio = np.zeros(16000, np.float32)
inf_audio[100] = np.inf

# (name, uploaded bytes, content type, filename, extra form fields, expected status, expected param or None)
UPLOADS = [
    ("empty file", b"", "audio/wav", "a.wav", {}, 400, "file"),
    ("random bytes", bytes(range(256)) * 20, "application/octet-stream", "a.bin", {}, 400, "file"),
    ("text as audio", b"hello, I am not audio at all\n" * 50, "audio/wav", "a.wav", {}, 400, "file"),
    ("truncated wav header", GOOD[:30], "audio/wav", "a.wav", {}, 400, "file"),
    ("wav header only", GOOD[:44], "audio/wav", "a.wav", {}, 400, "file"),
    ("wav cut mid-sample", GOOD[:1001], "audio/wav", "a.wav", {}, 200, None),
    ("flac magic then garbage", b"fLaC" + bytes(500), "audio/flac", "a.flac", {}, 400, "file"),
    ("ogg magic then garbage", b"OggS" + bytes(500), "audio/ogg", "a.ogg", {}, 400, "file"),
    ("mp3 frame sync then garbage", b"\xff\xfb\x90\x00" + bytes(300), "audio/mpeg", "a.mp3", {}, 400, "file"),
    ("zip archive", b"PK\x03\x04" + bytes(200), "application/zip", "a.zip", {}, 415, "file"),
    ("image", b"\x89PNG\r\n\x1a\n" + bytes(100), "image/png", "a.png", {}, 415, "file"),
    ("wav declaring 1 Hz", _wav_header(1, 1, 16000) + bytes(32000), "audio/wav", "a.wav", {}, 400, "file"),
    ("wav declaring 2 GHz", _wav_header(2_000_000_000, 1, 100) + bytes(200), "audio/wav", "a.wav", {}, 400,
     "file"),
    ("wav declaring 200 channels", _wav_header(16000, 200, 10) + bytes(4000), "audio/wav", "a.wav", {}, 400,
     "file"),
    # a header that claims a day of audio over 1,000 samples: libsndfile counts what is there (no gigabytes decoded)
    ("wav declaring a day of audio", _wav_header(16000, 1, 16000 * 3600 * 24) + bytes(2000), "audio/wav", "a.wav",
     {}, 200, None),
    ("wav of one sample", _wav_header(16000, 1, 1) + bytes(2), "audio/wav", "a.wav", {}, 400, "file"),
    ("wav of zero samples", _wav_header(16000, 1, 0), "audio/wav", "a.wav", {}, 400, "file"),
    ("float wav of NaN", _float_wav(nan_audio), "audio/wav", "a.wav", {}, 400, "file"),
    ("float wav with an infinity", _float_wav(inf_audio), "audio/wav", "a.wav", {}, 400, "file"),
    ("too long", encode_audio(np.zeros(16000 * 61, np.float32), 16000, "flac"), "audio/flac", "a.flac", {}, 413,
     "file"),
    ("pcm rate 0", bytes(3200), "audio/L16;rate=0", "a.pcm", {}, 400, "file"),
    ("pcm negative rate", bytes(3200), "audio/L16;rate=-8000", "a.pcm", {}, 400, "file"),
    ("pcm absurd rate", bytes(3200), "audio/L16;rate=999999999999", "a.pcm", {}, 400, "file"),
    ("pcm fractional rate", bytes(3200), "audio/L16;rate=44100.5", "a.pcm", {}, 400, "file"),
    ("pcm word rate", bytes(3200), "audio/L16;rate=fast", "a.pcm", {}, 400, "file"),
    ("pcm stereo", bytes(3200), "audio/L16;rate=16000;channels=2", "a.pcm", {}, 400, "file"),
    ("pcm odd byte count", bytes(3201), "audio/L16;rate=16000", "a.pcm", {}, 400, "file"),
    ("steps 0", GOOD, "audio/wav", "a.wav", {"steps": "0"}, 422, "steps"),
    ("steps huge", GOOD, "audio/wav", "a.wav", {"steps": "1000000000000"}, 422, "steps"),
    ("guidance NaN", GOOD, "audio/wav", "a.wav", {"guidance": "nan"}, 422, "guidance"),
    ("guidance infinite", GOOD, "audio/wav", "a.wav", {"guidance": "inf"}, 422, "guidance"),
    ("seed negative", GOOD, "audio/wav", "a.wav", {"seed": "-5"}, 422, "seed"),
    ("seed 2^64", GOOD, "audio/wav", "a.wav", {"seed": str(2**64)}, 422, "seed"),
    ("solver path", GOOD, "audio/wav", "a.wav", {"solver": "../../etc/passwd"}, 422, "solver"),
    ("unknown field", GOOD, "audio/wav", "a.wav", {"stepz": "4"}, 422, None),
    ("format aac", GOOD, "audio/wav", "a.wav", {"response_format": "aac"}, 422, "response_format"),
]


@pytest.mark.parametrize(("name", "data", "media", "filename", "form", "status", "param"), UPLOADS,
                         ids=[u[0] for u in UPLOADS])
def test_hostile_uploads_get_a_4xx_naming_the_parameter(name, data, media, filename, form, status, param):
    async def test(client, app, engine):
        r = await client.post("/v1/enhance", files={"file": (filename, data, media)}, data=form)
        assert r.status_code == status, (name, r.text)
        if status != 200:
            error = r.json()["error"]
            assert error["message"] and (param is None or error["param"] == param), error
        good = await client.post("/v1/enhance", files={"file": ("ok.wav", GOOD, "audio/wav")})
        assert good.status_code == 200  # nothing is left broken

    scenario(test, FakeEngine(tasks=("enhance", "tts")))


SPEECH = [
    ("empty input", {"input": ""}, 422, "input"),
    ("whitespace input", {"input": " \n\t "}, 422, "input"),
    ("input over the limit", {"input": "word " * 1000}, 413, "input"),
    ("input not a string", {"input": ["a", "b"]}, 422, "input"),
    ("voice unknown", {"voice": "nobody"}, 422, "voice"),
    ("voice object without id", {"voice": {"name": "alice"}}, 422, "voice"),
    ("voice path", {"voice": "../../voices/alice"}, 422, "voice"),
    ("uploaded voice that is not there", {"voice": "voice_0000000000000000"}, 422, "voice"),
    ("speed 0", {"speed": 0}, 422, "speed"),
    ("speed negative", {"speed": -1}, 422, "speed"),
    ("speed huge", {"speed": 1e308}, 422, "speed"),
    ("instructions over OpenAI's limit", {"instructions": "x" * 5000}, 422, "instructions"),
    ("stream_format unknown", {"stream_format": "websocket"}, 422, "stream_format"),
    ("model unknown", {"model": "whisper-1"}, 404, "model"),
]


@pytest.mark.parametrize(("name", "body", "status", "param"), SPEECH, ids=[s[0] for s in SPEECH])
def test_hostile_speech_requests_get_a_4xx_naming_the_parameter(name, body, status, param, tmp_path):
    async def test(client, app, engine):
        r = await client.post("/v1/audio/speech", json={"model": "tts", "input": "Hello.", "voice": "alice", **body})
        assert r.status_code == status, (name, r.text)
        error = r.json()["error"]
        assert error["message"] and error["param"] == param, error

    scenario(test, FakeEngine(tasks=("enhance", "tts")), max_text_chars=2000, data_dir=str(tmp_path))


def test_multipart_abuse_is_a_4xx():
    async def test(client, app, engine):
        two_files = [("file", ("a.wav", GOOD, "audio/wav")), ("file", ("b.wav", GOOD, "audio/wav"))]
        statuses = {
            "no file": (await client.post("/v1/enhance", files={"other": ("a.wav", GOOD, "audio/wav")})).status_code,
            "two files": (await client.post("/v1/enhance", files=two_files)).status_code,
            "file as a text field": (await client.post("/v1/enhance", data={"file": "not a file"},
                                                       files={"x": ("x", b"1")})).status_code,
            "not multipart": (await client.post("/v1/enhance", content=GOOD,
                                                headers={"Content-Type": "audio/wav"})).status_code,
            "broken boundary": (await client.post("/v1/enhance", content=b"--xyz\r\nContent-Disposition: form-data",
                                                  headers={"Content-Type": "multipart/form-data; boundary=abc"}
                                                  )).status_code,
            "prompt_text over the limit": (await client.post("/v1/tts", data={"text": "Hi.", "prompt_text": "x" * 600},
                                                             files={"prompt": ("p.wav", GOOD, "audio/wav")})
                                           ).status_code,
        }
        assert all(400 <= s < 500 for s in statuses.values()), statuses

    scenario(test, FakeEngine(tasks=("enhance", "tts")))
