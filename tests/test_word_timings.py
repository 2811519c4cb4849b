"""Word timings of TTS: known before generation from the phone durations the model generates with, so they must
agree with where the prompt aligner (a separate model reading the generated audio) finds each word; the chunk
offsets follow the cross-fades of the join; the HTTP API carries them as SSE events or in a JSON body.

Aligner phones map back to words through the phones themselves: `align_prompt(wav, sr, text)` aligns
`text_to_phones(text)` of the whole text, and `text_to_phone_words(text)` gives the same phone list with each word's
span of phone indices, so a word's aligned start is the aligner's cumulative frames up to its first phone."""

import base64
import io
import itertools
import json
import warnings

import httpx
import numpy as np
import pytest
import soundfile as sf

from bench.fake_engine import FakeEngine
from model.defaults import sampling
from model.joining import chunk_offsets, join_with_crossfade
from model.text import text_to_phone_words, text_to_phones
from tests.page_harness import running_server

TWO = "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore."
ALIGNER_FPS = 100
TOLERANCE_S = 0.06


def test_words_own_the_phones_of_the_sentence_as_phonemised():
    text = "Don't stop - it's 1990–2000, okay? Dr. Smith paid $5.50."
    phones, words = text_to_phone_words(text)
    assert phones == text_to_phones(text)  # the same phonemisation the model is conditioned on
    assert [w for w, _, _ in words] == ["Don't", "stop", "it's", "1990-2000", "okay", "Dr", "Smith", "paid", "$5.50"]
    assert all(a < b and not phones[a].startswith("_") and not phones[b - 1].startswith("_") for _, a, b in words)


def test_words_espeak_voices_with_their_neighbour_get_their_own_phones():
    text = "Birds sang in the trees until the sun went down on the quiet lake."
    phones, words = text_to_phone_words(text)  # espeak voices "in the", "on the" under one word event
    assert [w for w, _, _ in words] == text.rstrip(".").split()
    assert [phones[a:b] for w, a, b in words if w == "the"] == [["D", "@2"]] * 3
    assert all(b1 <= a2 for (_, _, b1), (_, a2, _) in itertools.pairwise(words))
    _, words = text_to_phone_words("Hello | world ^ again.")  # symbols espeak-ng does not voice alone: no words
    assert [w for w, _, _ in words] == ["Hello", "world", "again"]


@pytest.mark.parametrize("fade", [0, 3, 12])
def test_chunk_offsets_place_each_chunk_where_the_joiner_puts_it(fade):
    rng = np.random.default_rng(fade)
    for _ in range(200):
        lengths = [int(n) for n in rng.integers(fade, 60, rng.integers(1, 5))]
        chunks = [np.full(n, k + 1, np.float32) for k, n in enumerate(lengths)]
        joined = join_with_crossfade(chunks, fade)
        offsets = chunk_offsets(lengths, fade)
        assert offsets[-1] + lengths[-1] == len(joined)
        for k, (start, n) in enumerate(zip(offsets, lengths, strict=True)):
            inner = joined[start + fade : start + n - fade]  # outside both fades: the chunk alone
            assert np.all(inner == k + 1)


# --- the shipped bundle ---------------------------------------------------------------------------------------------
def _errors_ms(pipeline, text: str, speed: float) -> tuple[np.ndarray, int]:
    """|word time - aligner time| of every word start and end in ms, and the number of chunks generated."""
    voice = sorted(pipeline.voices)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = len(pipeline.plan_tts(text, sampling=sampling("tts"), voice=voice, speed=speed).rows)
        wav, sr, words = pipeline.tts_with_words(text, voice=voice, speed=speed, seed=3, steps=8)
        aligned = pipeline.align_prompt(wav, sr, text)
    phones, spans = text_to_phone_words(text)
    assert [p for p, _ in aligned] == phones, "the aligner aligns the whole text's phones"
    assert [w.word for w in words] == [w for w, _, _ in spans] == [t.strip(".,") for t in text.split()]
    edges = np.concatenate([[0], np.cumsum([n for _, n in aligned])]) / ALIGNER_FPS
    assert words[-1].end <= len(wav) / sr + 1e-6
    errors = [abs(t - edges[i]) for w, (_, a, b) in zip(words, spans, strict=True)
              for t, i in ((w.start, a), (w.end, b))]
    return np.array(errors) * 1000, rows


@pytest.mark.parametrize("speed", [1.0, 1.4])
def test_word_times_match_the_aligner_on_generated_speech(demo_pipeline, speed):
    pipeline, _ = demo_pipeline
    errors, rows = _errors_ms(pipeline, TWO, speed)
    assert rows == 2  # two chunks: the second word list is shifted past the first chunk less the cross-fade
    print(f"speed {speed}: mean {errors.mean():.1f} ms, max {errors.max():.1f} ms over {len(errors)} boundaries")
    assert errors.max() <= 1000 * TOLERANCE_S


def test_phones_tile_each_chunk_and_frame_its_words(demo_pipeline):
    pipeline, _ = demo_pipeline
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = pipeline.plan_tts(TWO, sampling=sampling("tts"), voice=sorted(pipeline.voices)[0], seed=3)
    assert len(plan.phones) == len(plan.words) == 2
    for words, phones in zip(plan.words, plan.phones, strict=True):
        assert all(a.end == pytest.approx(b.start) for a, b in itertools.pairwise(phones))  # gap-free
        starts, ends = {round(p.start, 6) for p in phones}, {round(p.end, 6) for p in phones}
        assert all(round(w.start, 6) in starts and round(w.end, 6) in ends for w in words)
        assert phones[0].start <= words[0].start and phones[-1].end >= words[-1].end
    assert [p.word for p in plan.phones[0] if not p.word.startswith("_")] == \
        [p for p in text_to_phones(TWO.split(". ")[0] + ".") if not p.startswith("_")]


def test_plan_words_follow_speed(demo_pipeline):
    pipeline, _ = demo_pipeline
    voice = sorted(pipeline.voices)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slow, fast = (pipeline.plan_tts(TWO, sampling=sampling("tts"), voice=voice, speed=s) for s in (1.0, 2.0))
    assert slow.words is not None and fast.words is not None
    assert fast.words[-1][-1].end < 0.7 * slow.words[-1][-1].end
    second = slow.words[1][0].start  # the second chunk starts after the first one's audio, less the fade
    assert slow.words[0][-1].end < second


# --- HTTP -----------------------------------------------------------------------------------------------------------
BODY = {"model": "tts-1", "input": "One two three. Four five.", "voice": "alice", "steps": 2, "seed": 1}


def _events(text: str) -> list[dict]:
    return [json.loads(block[len("data: "):]) for block in text.split("\n\n") if block.startswith("data: ")]


@pytest.fixture(scope="module")
def url():
    with running_server(FakeEngine(tasks=("tts",))) as base:
        yield base


@pytest.mark.parametrize("fmt", ["wav", "flac"])  # flac is answered whole: one timestamps event before its delta
def test_sse_sends_each_chunks_words_before_its_audio(url, fmt):
    r = httpx.post(f"{url}/v1/audio/speech", timeout=30, json={
        **BODY, "stream_format": "sse", "response_format": fmt, "timestamp_granularities": ["word"]})
    assert r.status_code == 200, r.text
    events = _events(r.text)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "speech.timestamps.delta" and kinds[-1] == "speech.audio.done"
    words = [w for e in events if e["type"] == "speech.timestamps.delta" for w in e["words"]]
    assert [w["word"] for w in words] == ["One", "two", "three", "Four", "five"]
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and words[0]["start"] == 0.0
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    seconds = sf.info(io.BytesIO(audio)).duration if fmt == "flac" else None
    if seconds is not None:
        assert words[-1]["end"] == pytest.approx(seconds, abs=0.01)
    if fmt == "wav":  # streamed: a timestamps event precedes each chunk's audio
        assert kinds.count("speech.timestamps.delta") == 2
        assert kinds.index("speech.audio.delta") > 0


def test_without_sse_the_words_come_in_json_with_the_audio(url):
    r = httpx.post(f"{url}/v1/audio/speech", timeout=30,
                   json={**BODY, "response_format": "wav", "timestamp_granularities": ["word"]})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
    body = r.json()
    assert set(body) == {"audio", "format", "sample_rate", "words"}
    assert body["format"] == "wav" and body["sample_rate"] == 24_000
    audio, sr = sf.read(io.BytesIO(base64.b64decode(body["audio"])))
    assert sr == 24_000
    assert body["words"][-1]["end"] == pytest.approx(len(audio) / sr, abs=0.01)
    form = httpx.post(f"{url}/v1/tts", timeout=30, data={"text": BODY["input"], "voice": "alice", "steps": "2",
                                                          "timestamp_granularities": "word"})
    assert form.status_code == 200, form.text
    assert form.json()["sample_rate"] == 16_000 and len(form.json()["words"]) == 5


def test_phones_come_with_or_without_words_in_sse_and_json(url):
    r = httpx.post(f"{url}/v1/audio/speech", timeout=30, json={
        **BODY, "stream_format": "sse", "response_format": "pcm", "timestamp_granularities": ["word", "phone"]})
    timed = [e for e in _events(r.text) if e["type"] == "speech.timestamps.delta"]
    assert len(timed) == 2 and all(set(e) == {"type", "words", "phones"} for e in timed)
    phones = [p for e in timed for p in e["phones"]]
    assert "".join(p["phone"] for p in phones) == "Onetwothree" + "Fourfive"  # the fake's phones are letters
    assert phones[0]["start"] == timed[0]["words"][0]["start"] and phones[-1]["end"] == timed[1]["words"][-1]["end"]
    only = httpx.post(f"{url}/v1/audio/speech", timeout=30, json={**BODY, "timestamp_granularities": ["phone"]})
    assert set(only.json()) == {"audio", "format", "sample_rate", "phones"}
    assert [p["phone"] for p in only.json()["phones"]] == [p["phone"] for p in phones]


def test_an_unknown_granularity_is_a_422_naming_the_parameter(url):
    for granularity in (["segment"], ["word", "syllable"], "word"):
        r = httpx.post(f"{url}/v1/audio/speech", timeout=30, json={**BODY, "timestamp_granularities": granularity})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["param"] == "timestamp_granularities"
    form = httpx.post(f"{url}/v1/tts", timeout=30, data={"text": "Hi.", "voice": "alice",
                                                          "timestamp_granularities": "segment"})
    assert form.status_code == 422 and form.json()["error"]["param"] == "timestamp_granularities"


def test_the_shipped_bundle_answers_words_over_http(demo_engine):
    with running_server(demo_engine) as base:
        r = httpx.post(f"{base}/v1/audio/speech", timeout=120, json={
            "input": TWO, "voice": sorted(demo_engine.voices)[0], "steps": 4, "response_format": "wav",
            "stream_format": "sse", "timestamp_granularities": ["word"]})
    assert r.status_code == 200, r.text
    events = _events(r.text)
    timed = [e for e in events if e["type"] == "speech.timestamps.delta"]
    assert len(timed) == 2 and [w["word"] for w in timed[1]["words"]][:2] == ["She", "sells"]
    assert timed[1]["words"][0]["start"] > timed[0]["words"][-1]["end"]
