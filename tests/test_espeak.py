"""model.espeak + model.espeak_engine (libespeak-ng through ctypes, phone timings, phonemizer) and the espeak part
of the corpus builder."""

from __future__ import annotations

import ctypes
import ctypes.util
import gzip
import itertools
import threading
from pathlib import Path

import numpy as np
import pytest

from model import espeak, espeak_engine
from model.espeak import EspeakError, EspeakTextError, is_pause, phonemize, synthesize
from training.data.manifest import read_manifest
from training.synthetic.corpus import build_corpus, split_cuts

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Whatever you do, don't panic; it's only a test!",
    "Is this the real life, or is it just fantasy?",
    "She sells sea shells by the sea shore, and he buys them back.",
    "Never put off until tomorrow what you can do the day after tomorrow.",
]


@pytest.fixture(scope="module", autouse=True)
def _library() -> None:
    try:
        espeak.initialize()
    except EspeakError as e:
        pytest.skip(f"libespeak-ng unavailable: {e}")


def _check_tiling(phones: list, duration: float) -> None:
    assert phones and phones[0].start == 0.0 and phones[0].symbol == "_"
    assert all(p.symbol and isinstance(p.symbol, str) for p in phones)
    assert all(p.end >= p.start for p in phones)
    assert all(a.end == b.start for a, b in itertools.pairwise(phones))  # gap-free, monotonic
    assert abs(phones[-1].end - duration) < 0.05


def test_event_struct_matches_the_x86_64_layout() -> None:
    offsets = {name: getattr(espeak_engine._Event, name).offset for name, _ in espeak_engine._Event._fields_}
    assert ctypes.sizeof(espeak_engine._Event) == 40
    assert offsets == {"type": 0, "unique_identifier": 4, "text_position": 8, "length": 12, "audio_position": 16,
                       "sample": 20, "user_data": 24, "id": 32}


def test_synthesize_returns_speech_with_phones_tiling_it() -> None:
    result = synthesize(SENTENCES[0])
    assert result.sample_rate == 22050 and result.wav.dtype == np.float32 and result.wav.ndim == 1
    assert 1.5 < result.duration < 5 and float(np.sqrt(np.mean(result.wav**2))) > 0.01
    _check_tiling(result.phones, result.duration)
    assert phonemize(SENTENCES[0]).count("_:") >= 1  # the sentence-final pause
    spoken = [p for p in result.phones if not is_pause(p.symbol)]
    assert len(spoken) > 25 and sum(p.end - p.start for p in spoken) > 0.6 * result.duration
    assert [w.text for w in result.words] == SENTENCES[0].rstrip(".").split()
    assert all(a.end <= b.start + 1e-9 for a, b in itertools.pairwise(result.words))


def test_output_is_a_pure_function_of_the_arguments() -> None:
    first = synthesize(SENTENCES[1], "en-gb+f2", rate=150, pitch=40)
    synthesize(SENTENCES[2])  # espeak-ng keeps state between messages: it must not leak into the next call
    again = synthesize(SENTENCES[1], "en-gb+f2", rate=150, pitch=40)
    assert np.array_equal(first.wav, again.wav) and first.phones == again.phones and first.words == again.words


def test_voices_pitch_and_rate_change_the_audio_not_the_phones() -> None:
    text = SENTENCES[2]
    base = synthesize(text)
    variants = [synthesize(text, "en-us+f3"), synthesize(text, pitch=20), synthesize(text, pitch=80)]
    for other in variants:
        assert len(other.wav) != len(base.wav) or not np.array_equal(other.wav, base.wav)
        assert [p.symbol for p in other.phones] == [p.symbol for p in base.phones]
    slow, fast = synthesize(text, rate=80), synthesize(text, rate=449)  # the whole range keeps events on time
    assert slow.duration > base.duration > fast.duration
    _check_tiling(slow.phones, slow.duration)
    _check_tiling(fast.phones, fast.duration)
    assert [p.symbol for p in slow.phones] == [p.symbol for p in fast.phones]
    assert [p.symbol for p in synthesize(text, "en-gb-scotland").phones] != [p.symbol for p in base.phones]


@pytest.mark.parametrize("voice", ["en-us", "en-gb-x-rp"])
def test_phonemize_gives_the_phones_synthesis_labels_audio_with(voice: str) -> None:
    for text in SENTENCES:
        symbols = phonemize(text, voice)
        timed = synthesize(text, f"{voice}+m3", rate=140, pitch=30).phones
        assert symbols == [p.symbol for p in timed]
        assert [s for s in symbols if not is_pause(s)] == [p.symbol for p in timed if not is_pause(p.symbol)]


def test_numbers_abbreviations_and_non_ascii_are_spoken() -> None:
    result = synthesize("Dr. Smith paid $5 on 3/4 at the café.")
    _check_tiling(result.phones, result.duration)
    assert sum(not is_pause(p.symbol) for p in result.phones) > 20
    assert {"Smith", "5", "café"} <= {w.text for w in result.words}


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_text_is_a_clear_error(text: str) -> None:
    with pytest.raises(EspeakTextError, match="empty"):
        synthesize(text)
    with pytest.raises(ValueError):
        phonemize(text)


def test_bad_voice_and_parameters_are_clear_errors() -> None:
    with pytest.raises(EspeakError, match="unknown espeak-ng voice"):
        synthesize("hello", voice="xx-no-such-voice")
    for rate in (10, 450):  # from 450 on espeak-ng speeds audio up after the events were timed
        with pytest.raises(EspeakError, match="rate"):
            synthesize("hello", rate=rate)
    with pytest.raises(EspeakError, match="pitch"):
        synthesize("hello", pitch=101)


def test_missing_library_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(espeak_engine, "LIBRARY_NAMES", ("libespeak-ng-missing.so.9",))
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    with pytest.raises(EspeakError, match="apt-get install libespeak-ng1"):
        espeak_engine._load_library()


def test_a_dead_helper_process_is_replaced() -> None:
    expected = synthesize(SENTENCES[4])
    espeak._helper.proc.kill()
    espeak._helper.proc.wait()
    again = synthesize(SENTENCES[4])
    assert np.array_equal(again.wav, expected.wav) and again.phones == expected.phones


def test_concurrent_threads_get_the_sequential_results() -> None:
    jobs = [(SENTENCES[i], voice) for i in (0, 3) for voice in ("en-us", "en-029+f1")]
    sequential = [synthesize(text, voice) for text, voice in jobs]
    results: dict[int, espeak.SynthResult] = {}

    def work(indices: list[int]) -> None:
        for i in indices:
            results[i] = synthesize(*jobs[i])

    threads = [threading.Thread(target=work, args=([0, 1],)), threading.Thread(target=work, args=([2, 3],))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, expected in enumerate(sequential):
        assert np.array_equal(results[i].wav, expected.wav) and results[i].phones == expected.phones


def _manifests(out: Path) -> dict[str, str]:
    """The corpus's CutSets, decompressed (gzip headers carry a time stamp)."""
    return {f"{split}.jsonl": gzip.decompress(split_cuts(out, split).read_bytes()).decode()
            for split in ("train", "valid", "test")}


def test_corpus_rows_carry_phones_and_resume_identically(tmp_path: Path) -> None:
    out = build_corpus(tmp_path / "corpus", hours=0.01, seed=0, workers=2, engines=("espeak",))
    utts = [u for split in ("train", "valid", "test") for u in read_manifest(split_cuts(out, split))]
    rows = [{**u.meta, "audio": str(u.audio.relative_to(out)), "duration": u.duration} for u in utts]
    assert len(rows) == 40 and {r["speaker"].split("-")[0] for r in rows} == {"espeak"}  # one per espeak speaker
    for row in rows:
        phones = row["phones"]
        assert phones[0][1] == 0.0 and abs(phones[-1][2] - row["duration"]) < 1e-6
        assert all(abs(a[2] - b[1]) < 1e-9 and b[1] <= b[2] for a, b in itertools.pairwise(phones))
        assert (out / row["audio"]).with_suffix(".phones.json").is_file()

    wavs = sorted((out / "wavs").rglob("*.wav"))
    stamps = {p: p.stat().st_mtime_ns for p in wavs}
    before = _manifests(out)
    lost = (out / rows[0]["audio"]).with_suffix(".phones.json")
    audio = (out / rows[0]["audio"]).read_bytes()
    lost.unlink()  # a wav without its phones (e.g. from an older build) is made again, identically
    build_corpus(out, hours=0.01, seed=0, workers=2, engines=("espeak",))
    assert _manifests(out) == before and lost.is_file() and (out / rows[0]["audio"]).read_bytes() == audio
    assert sum(p.stat().st_mtime_ns != stamps[p] for p in wavs) == 1  # only that one was redone


def test_the_test_split_alone_is_the_full_corpus_test_split(tmp_path: Path) -> None:
    full = _manifests(build_corpus(tmp_path / "full", hours=0.01, seed=0, workers=2, engines=("espeak",)))
    alone = build_corpus(tmp_path / "alone", hours=0.01, seed=0, workers=2, engines=("espeak",), splits=("test",))
    test = gzip.decompress(split_cuts(alone, "test").read_bytes()).decode()
    assert test == full["test.jsonl"] and full["test.jsonl"].strip()
    assert not split_cuts(alone, "train").exists()
    assert {p.parent.name for p in (alone / "wavs").rglob("*.wav")} == {
        u.meta["speaker"] for u in read_manifest(split_cuts(alone, "test"))}
