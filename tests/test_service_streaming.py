"""Streamed TTS over a real socket (uvicorn in a thread, the fake engine held step by step): /v1/audio/speech
streams by default, in every format, starting with the first sentence while later ones are still being generated;
the streamed bytes are one file, resampled to 24 kHz chunk by chunk without seams (sample for sample what
resampling the whole would give); flac comes whole at the end; a client that leaves stops the remaining compute.
The official client's view of the same route is tests/test_openai_speech.py."""

import asyncio
import base64
import io
import json
import threading

import httpx
import numpy as np
import pytest
import soundfile as sf

from bench.fake_engine import FakeEngine
from model.audio import encode_audio, resample
from service.streaming import STREAMED_FORMATS, StreamEncoder, encode_whole, wav_stream_header
from tests.page_harness import running_server
from tests.test_openai_speech import THREE, adts_frames, check_file, decode

BODY = {"model": "tts-1", "input": THREE, "voice": "alice", "steps": 2, "solver": "euler", "seed": 7}
RATE = 24_000


def _held_engine() -> FakeEngine:
    return FakeEngine(tasks=("tts",))


def _samples(url: str) -> bytes:
    """The request's 24 kHz samples as 16-bit PCM, from the flac answer (always one whole file)."""
    r = httpx.post(f"{url}/v1/audio/speech", json={**BODY, "response_format": "flac"}, timeout=30)
    assert r.status_code == 200 and r.headers["content-length"] == str(len(r.content)), r.text
    audio, sr = sf.read(io.BytesIO(r.content), dtype="int16")
    assert sr == RATE
    return audio.astype("<i2").tobytes()


@pytest.mark.parametrize("fmt", STREAMED_FORMATS)
def test_speech_streams_by_default_from_the_first_sentence_as_one_file(fmt):
    engine = _held_engine()
    with running_server(engine, max_batch_size=1) as url:  # one row at a time: sentences finish one by one
        samples = _samples(url)
        before = len(engine.steps)
        engine.hold()
        engine.step_once()  # two steps may pass: the first sentence's two Euler steps; the third step waits
        engine.step_once()
        with httpx.Client(timeout=30) as client, client.stream(
                "POST", f"{url}/v1/audio/speech", json={**BODY, "response_format": fmt}) as r:  # no stream_format
            assert r.status_code == 200 and r.headers["content-type"].startswith("audio/")
            assert r.headers["x-sample-rate"] == "24000" and "content-length" not in r.headers
            assert float(r.headers["x-first-chunk-ms"]) >= 0 and r.headers["x-rows"] == "3"
            chunks = r.iter_raw()
            first = next(chunks)
            assert len(engine.steps) - before <= 3  # the rest is not generated yet: these bytes came first
            engine.release()
            body = first + b"".join(chunks)
    check_file(body, fmt)
    if fmt in ("pcm", "wav"):  # the samples of the whole file; the WAV header says "unknown"
        assert body == (wav_stream_header(RATE) if fmt == "wav" else b"") + samples
    if fmt == "aac":
        assert adts_frames(first) > 0  # what came first is whole ADTS frames: playable before the rest arrives


def test_sse_stream_sends_base64_deltas_then_done():
    engine = _held_engine()
    with running_server(engine, max_batch_size=1) as url:
        samples = _samples(url)
        r = httpx.post(f"{url}/v1/audio/speech", json={**BODY, "response_format": "pcm", "stream_format": "sse"},
                       timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[len("data: "):]) for line in r.text.split("\n\n") if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1) and len(events) >= 4
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["audio_seconds"] > 0
    assert b"".join(base64.b64decode(e["audio"]) for e in events[:-1]) == samples


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


def test_errors_before_the_first_chunk_are_json_and_flac_comes_whole_at_the_end():
    engine = FakeEngine(tasks=("tts",), fail_seeds=[7])
    with running_server(engine) as url:
        r = httpx.post(f"{url}/v1/audio/speech", json=BODY, timeout=30)  # streamed by default
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
        ok = {**BODY, "seed": 1, "response_format": "flac"}
        r = httpx.post(f"{url}/v1/audio/speech", json={**ok, "stream_format": "audio"}, timeout=30)
        assert r.status_code == 200 and r.headers["content-length"] == str(len(r.content))
        assert "x-inference-time-ms" in r.headers  # a whole file's headers
        check_file(r.content, "flac")
        r = httpx.post(f"{url}/v1/audio/speech", json={**ok, "stream_format": "sse"}, timeout=30)
        events = [json.loads(b[len("data: "):]) for b in r.text.split("\n\n") if b.startswith("data: ")]
        assert [e["type"] for e in events] == ["speech.audio.delta", "speech.audio.done"]
        check_file(base64.b64decode(events[0]["audio"]), "flac")
        form = {"text": "Hi. Bye.", "voice": "alice", "stream_format": "audio", "steps": "2", "solver": "euler"}
        for fmt in ("pcm", "flac"):  # /v1/tts streams too, at the model's 16 kHz
            r = httpx.post(f"{url}/v1/tts", data={**form, "response_format": fmt}, timeout=30)
            assert r.status_code == 200 and r.headers["x-sample-rate"] == "16000"
            assert len(decode(r.content, fmt)[0]) == 16000 * 0.05 * len("Hi.Bye.")  # samples, at 16 kHz


def test_a_stream_resampled_chunk_by_chunk_is_the_whole_resampled():
    """soxr's streaming resampler keeps its filter state across chunks: no seam at a chunk boundary."""
    rng = np.random.default_rng(1)
    speech = [(0.2 * rng.standard_normal(n)).astype(np.float32) for n in (10_401, 7, 16_000, 3_333)]
    encoder = StreamEncoder("pcm", RATE, 16000)
    streamed = b"".join([encoder.push(c) for c in speech] + [encoder.close()])
    assert streamed == encode_audio(resample(np.concatenate(speech), 16000, RATE), RATE, "pcm")


@pytest.mark.parametrize("fmt", ["mp3", "opus", "ogg", "aac"])
def test_lossy_streams_decode_to_the_whole_length(fmt):
    rng = np.random.default_rng(0)
    speech = [(0.2 * rng.standard_normal(n)).astype(np.float32) for n in (8000, 12000, 4000)]
    encoder = StreamEncoder(fmt, RATE, 16000)
    data = b"".join([encoder.push(c) for c in speech] + [encoder.close()])
    total = 1.5 * sum(map(len, speech))
    audio = check_file(data, fmt, seconds=total / RATE)
    whole, _ = decode(encode_whole(resample(np.concatenate(speech), 16000, RATE), RATE, fmt), fmt)
    assert abs(len(whole) - len(audio)) <= 2400


def threading_wait(seconds: float) -> None:
    threading.Event().wait(seconds)


def test_the_streaming_bench_measures_first_audio_before_the_end():
    from bench.streaming import run, table

    with running_server(_held_engine()) as url:
        report = asyncio.run(run(url, repeats=1, sentences=(1, 3)))
    assert [r["sentences"] for r in report["rows"]] == [1, 3]
    one, three = report["rows"]
    assert 0 < one["audio_s"] < three["audio_s"]
    for row in report["rows"]:
        for mode in ("audio", "sse"):
            assert 0 <= row[mode]["first_audio_ms"] <= row[mode]["total_ms"]
    assert three["audio"]["first_audio_ms"] < three["audio"]["total_ms"]  # three sentences: audio before the end
    assert table(report).count("\n") == 3

