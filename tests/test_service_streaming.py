"""Streamed TTS over a real socket (uvicorn in a thread, the fake engine held step by step): audio and SSE streams
start with the first sentence while later ones are still being generated, concatenate to the whole response, and
a client that leaves stops the remaining compute; plus the official `openai` client against the same server."""

import asyncio
import base64
import io
import json

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from bench.fake_engine import FakeEngine
from model.audio import encode_audio
from service.streaming import StreamEncoder, wav_stream_header
from tests.page_harness import running_server

THREE = "One sentence. Another sentence here. And the third one."
BODY = {"model": "tts-1", "input": THREE, "voice": "alice", "steps": 2, "solver": "euler", "seed": 7}


def _held_engine() -> FakeEngine:
    return FakeEngine(tasks=("tts",))


def _whole(url: str, fmt: str = "pcm") -> bytes:
    r = httpx.post(f"{url}/v1/audio/speech", json={**BODY, "response_format": fmt}, timeout=30)
    assert r.status_code == 200, r.text
    return r.content


@pytest.mark.parametrize("fmt", ["pcm", "wav"])
def test_an_audio_stream_starts_with_the_first_sentence_and_adds_up_to_the_whole_response(fmt):
    engine = _held_engine()
    with running_server(engine, max_batch_size=1) as url:  # one row at a time: sentences finish one by one
        whole = _whole(url, "pcm")
        before = len(engine.steps)
        engine.hold()
        engine.step_once()  # two steps may pass: the first sentence's two Euler steps; the third step waits
        engine.step_once()
        with httpx.Client(timeout=30) as client, client.stream(
                "POST", f"{url}/v1/audio/speech", json={**BODY, "response_format": fmt, "stream_format": "audio"}
        ) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("audio/")
            assert float(r.headers["x-first-chunk-ms"]) >= 0
            chunks = r.iter_raw()
            first = next(chunks)
            assert len(engine.steps) - before <= 3  # the rest is not generated yet: these bytes came first
            engine.release()
            body = first + b"".join(chunks)
    header = wav_stream_header(16000) if fmt == "wav" else b""
    assert body == header + whole  # the streamed bytes are the whole response's, the WAV header says "unknown"
    if fmt == "wav":  # players read a stream of unknown length to its end
        audio, sr = sf.read(io.BytesIO(body), dtype="int16")
        assert sr == 16000 and len(audio) == len(whole) // 2


def test_sse_stream_sends_base64_deltas_then_done():
    engine = _held_engine()
    with running_server(engine, max_batch_size=1) as url:
        whole = _whole(url, "pcm")
        r = httpx.post(f"{url}/v1/audio/speech", json={**BODY, "response_format": "pcm", "stream_format": "sse"},
                       timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[len("data: "):]) for line in r.text.split("\n\n") if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1) and len(events) >= 4
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["audio_seconds"] > 0
    assert b"".join(base64.b64decode(e["audio"]) for e in events[:-1]) == whole


def test_a_client_that_leaves_mid_stream_stops_the_remaining_compute():
    engine = _held_engine()
    with running_server(engine, max_batch_size=1) as url:
        engine.hold()
        engine.step_once()
        engine.step_once()
        with httpx.Client(timeout=30) as client, client.stream(
                "POST", f"{url}/v1/audio/speech", json={**BODY, "response_format": "pcm", "stream_format": "audio"}
        ) as r:
            next(r.iter_raw())  # the first sentence arrived; now hang up
        engine.release()
        metrics = ""
        for _ in range(200):
            metrics = httpx.get(f"{url}/metrics").text
            if 'speechflow_rows_dropped_total{reason="client_disconnected"}' in metrics:
                break
            threading_wait(0.02)
        steps = len(engine.steps)
        threading_wait(0.2)
        assert len(engine.steps) == steps  # nothing more is generated for the request that left
    line = next(x for x in metrics.splitlines() if x.startswith('speechflow_rows_dropped_total{reason="client_'))
    assert float(line.split()[-1]) >= 1  # the third sentence never ran
    assert steps < 6  # three sentences of two steps each would have been six


def test_stream_errors_before_the_first_chunk_are_json_and_flac_does_not_stream():
    engine = FakeEngine(tasks=("tts",), fail_seeds=[7])
    with running_server(engine) as url:
        r = httpx.post(f"{url}/v1/audio/speech", json={**BODY, "stream_format": "audio"}, timeout=30)
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
        r = httpx.post(f"{url}/v1/audio/speech", json={**BODY, "seed": 1, "response_format": "flac",
                                                       "stream_format": "audio"}, timeout=30)
        assert r.status_code == 422 and r.json()["error"]["param"] == "stream_format"
        r = httpx.post(f"{url}/v1/tts", data={"text": "Hi. Bye.", "voice": "alice", "stream_format": "audio",
                                               "response_format": "pcm", "steps": "2", "solver": "euler"}, timeout=30)
        assert r.status_code == 200 and len(r.content) > 0  # /v1/tts streams too


@pytest.mark.parametrize("fmt", ["mp3", "opus", "ogg"])
def test_lossy_streams_decode_to_the_whole_length(fmt):
    rng = np.random.default_rng(0)
    speech = [(0.2 * rng.standard_normal(n)).astype(np.float32) for n in (8000, 12000, 4000)]
    encoder = StreamEncoder(fmt, 16000)
    data = b"".join([encoder.push(c) for c in speech] + [encoder.close()])
    audio, sr = sf.read(io.BytesIO(data), dtype="float32")
    total = sum(map(len, speech))
    assert sr == 16000 and total <= len(audio) <= total + 2400  # mp3 adds the encoder's delay and padding
    whole, _ = sf.read(io.BytesIO(encode_audio(np.concatenate(speech), 16000, fmt)), dtype="float32")
    assert abs(len(whole) - len(audio)) <= 2400


def test_the_official_openai_client_speaks_streams_and_gets_typed_errors(tmp_path):
    engine = _held_engine()
    with running_server(engine, data_dir=str(tmp_path)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        sample = encode_audio((0.2 * np.sin(np.arange(32000) / 9)).astype(np.float32), 16000, "wav")
        uploaded = httpx.post(f"{url}/v1/audio/voices", data={"name": "Me", "consent": "true", "transcript": "hi"},
                              files={"audio_sample": ("me.wav", sample, "audio/wav")}).json()["id"]
        for fmt in ("wav", "flac"):
            spoken = client.audio.speech.create(model="tts-1", voice={"id": uploaded}, input="Hi.",
                                                response_format=fmt)
            assert sf.read(io.BytesIO(spoken.content))[1] == 16000  # an uploaded voice through the client
        mp3 = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello from the client.")
        audio, sr = sf.read(io.BytesIO(mp3.content))  # OpenAI's default format: mp3
        assert sr == 16000 and len(audio) > 16000 * 0.5
        opus = client.audio.speech.create(model="gpt-4o-mini-tts", voice={"id": "alice"}, input="Hi.",
                                          response_format="opus", instructions="Speak cheerfully.")
        assert opus.content[:4] == b"OggS"
        with client.audio.speech.with_streaming_response.create(
                model="tts-1", voice="nova", input=THREE, response_format="pcm", stream_format="audio") as r:
            streamed = b"".join(r.iter_bytes())
        assert len(streamed) == len(client.audio.speech.create(model="tts-1", voice="nova", input=THREE,
                                                               response_format="pcm").content)
        with pytest.raises(openai.UnprocessableEntityError, match="aac"):
            client.audio.speech.create(model="tts-1", voice="alloy", input="Hi.", response_format="aac")
        with pytest.raises(openai.UnprocessableEntityError, match="unknown voice"):
            client.audio.speech.create(model="tts-1", voice="nobody", input="Hi.")
        with pytest.raises(openai.NotFoundError):
            client.audio.speech.create(model="whisper-1", voice="alloy", input="Hi.")


def threading_wait(seconds: float) -> None:
    import threading

    threading.Event().wait(seconds)


def test_the_streaming_bench_measures_first_audio_before_the_end():
    from bench.streaming import run, table

    with running_server(_held_engine()) as url:
        report = asyncio.run(run(url, repeats=1, sentences=(1, 3)))
    assert [r["sentences"] for r in report["rows"]] == [1, 3]
    for row in report["rows"]:
        assert row["audio_s"] > 0 and row["whole"]["first_audio_ms"] == row["whole"]["total_ms"]
        for mode in ("audio", "sse"):
            assert 0 <= row[mode]["first_audio_ms"] <= row[mode]["total_ms"]
    assert table(report).count("\n") == 3
