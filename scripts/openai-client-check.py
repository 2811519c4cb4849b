#!/usr/bin/env python3
"""Drive a running SpeechFlow server with nothing but the official ``openai`` package, as its users write it.

    make serve &                                   # or any server: --base-url http://host:port/v1
    .venv/bin/python scripts/openai-client-check.py --out /tmp/openai-check

Checks: ``/v1/models`` (list and retrieve), every response format read whole by the sync client (each a valid
file, the lossless ones 24 kHz mono 16-bit), a three-sentence request streamed (first audio well before the
last, ``pcm`` written to a 24 kHz wav to play), the async client's stream equal to the sync one, SSE with word
timestamps, and errors as the client's exception types. Exits 1 naming the first check that fails. SpeechFlow's
own fields (``seed``) travel in ``extra_body`` so that repeated requests are comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import sys
import time
import wave
from pathlib import Path

import openai

RATE = 24000  # OpenAI's pcm: 24 kHz mono 16-bit little-endian
THREE = ("The boat drifted slowly on the quiet lake. A cold wind came down from the hills. "
         "Birds sang in the trees until the sun went down.")
SEED = {"seed": 7}
# what each format's file starts with: RIFF, fLaC, Ogg, ADTS sync word (12 bits set), an ID3 tag or an MPEG frame
MAGIC = {"wav": (b"RIFF",), "flac": (b"fLaC",), "opus": (b"OggS",), "aac": (b"\xff\xf1", b"\xff\xf9"),
         "mp3": (b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xe3")}


class CheckFailed(Exception):
    pass


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)


def wav_pcm(data: bytes) -> bytes:
    """The samples of a wav file, checked to be 24 kHz mono 16-bit."""
    with wave.open(io.BytesIO(data)) as w:
        expect((w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2),
               f"wav is {w.getframerate()} Hz, {w.getnchannels()} channel(s), {8 * w.getsampwidth()} bit")
        return w.readframes(w.getnframes())


def check_models(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    expect({"tts-1", "tts-1-hd", "gpt-4o-mini-tts"} <= ids, f"/v1/models lists {sorted(ids)}")
    card = client.models.retrieve("tts-1")
    expect(card.id == "tts-1" and card.owned_by and card.created > 0, f"models.retrieve('tts-1') gave {card}")


def check_formats(client: openai.OpenAI, text: str) -> bytes:
    """Every format read whole; returns the pcm answer."""
    speech = {fmt: client.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format=fmt,
                                              extra_body=SEED).content
              for fmt in ("mp3", "opus", "aac", "flac", "wav", "pcm")}
    for fmt, magic in MAGIC.items():
        expect(speech[fmt].startswith(magic), f"{fmt} starts with {speech[fmt][:4]!r}")
    pcm = speech["pcm"]
    expect(len(pcm) % 2 == 0 and len(pcm) > RATE, f"pcm has {len(pcm)} bytes")
    expect(wav_pcm(speech["wav"]) == pcm, "wav and pcm of the same seed hold different samples")
    return pcm


def check_streaming(client: openai.OpenAI, out: Path) -> bytes:
    """Three sentences as pcm: chunks arrive while later sentences are generated; saved as a 24 kHz wav."""
    start = time.perf_counter()
    first, chunks = None, []
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="nova", input=THREE, response_format="pcm", extra_body=SEED) as response:
        expect(response.headers.get("x-sample-rate") == str(RATE), f"x-sample-rate {response.headers}")
        for chunk in response.iter_bytes():
            first = first or time.perf_counter() - start
            chunks.append(chunk)
    total = time.perf_counter() - start
    pcm = b"".join(chunks)
    expect(first is not None and first < 0.8 * total, f"first audio after {first:.2f} s of {total:.2f} s")
    with wave.open(str(out / "three-sentences-24k.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(RATE)
        w.writeframes(pcm)
    print(f"  streamed: first audio after {first:.2f} s of {total:.2f} s, {len(pcm) / 2 / RATE:.2f} s of audio; "
          f"play with: ffplay -f s16le -ar {RATE} -ch_layout mono <pcm>, or {out / 'three-sentences-24k.wav'}")
    return pcm


async def async_stream(base_url: str, api_key: str) -> bytes:
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    async with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="nova", input=THREE, response_format="pcm", extra_body=SEED) as response:
        return b"".join([chunk async for chunk in response.iter_bytes()])


def check_sse_timestamps(client: openai.OpenAI) -> None:
    """SSE events carry the audio and, before each sentence's audio, its words with start and end in seconds."""
    with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=THREE, response_format="pcm", stream_format="sse",
            extra_body={**SEED, "timestamp_granularities": ["word"]}) as response:
        expect(response.headers["content-type"].startswith("text/event-stream"), "sse is not an event stream")
        body = response.read().decode()
    events = [json.loads(block[len("data: "):]) for block in body.split("\n\n") if block.startswith("data: ")]
    expect(events and events[-1]["type"] == "speech.audio.done", "the stream does not end with speech.audio.done")
    words = [w for e in events if e["type"] == "speech.timestamps.delta" for w in e["words"]]
    seconds = sum(len(base64.b64decode(e["audio"])) for e in events if e["type"] == "speech.audio.delta") / 2 / RATE
    said = [w.strip(".,") for w in THREE.split()]
    expect([w["word"] for w in words] == said, f"timed words {[w['word'] for w in words]}")
    starts = [w["start"] for w in words]
    expect(starts == sorted(starts) and all(w["start"] < w["end"] for w in words), "word times out of order")
    expect(words[-1]["end"] <= seconds + 1e-3, f"last word ends at {words[-1]['end']} s of {seconds:.2f} s")
    print(f"  sse: {len(words)} words timed over {seconds:.2f} s, e.g. {words[0]}")


def check_errors(client: openai.OpenAI) -> None:
    try:
        client.audio.speech.create(model="tts-1", voice="no-such-voice", input="Hello.")
        raise CheckFailed("an unknown voice was accepted")
    except openai.APIStatusError as e:
        expect(e.status_code in (400, 404, 422) and "voice" in str(e), f"unknown voice: {e}")
    try:
        client.audio.speech.create(model="tts-1", voice="alloy", input="x" * 5000)
        raise CheckFailed("5,000 characters were accepted")
    except openai.APIStatusError as e:
        expect(e.status_code in (400, 413, 422) and "4096" in str(e).replace(",", ""), f"over-long input: {e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default="unused", help="a key of SPEECHFLOW_API_KEYS, if the server has any")
    parser.add_argument("--out", type=Path, default=Path("."), help="where the 24 kHz wav of the stream goes")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0)
    steps = [("models", lambda: check_models(client)),
             ("every format, read whole", lambda: check_formats(client, "Hello there, how are you today?")),
             ("streaming", lambda: check_streaming(client, args.out)),
             ("sse with word timestamps", lambda: check_sse_timestamps(client)),
             ("errors", lambda: check_errors(client))]
    results = {}
    try:
        for name, step in steps:
            print(f"{name} ...", flush=True)
            results[name] = step()
        print("async client ...", flush=True)
        expect(asyncio.run(async_stream(args.base_url, args.api_key)) == results["streaming"],
               "the async client's stream differs from the sync client's (same seed)")
    except CheckFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
