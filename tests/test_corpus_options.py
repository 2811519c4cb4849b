"""The richer synthetic corpus (training.synthetic.corpus.CorpusOptions): defaults unchanged, more speakers, prosody,
long utterances, gender metadata, and the pairing's use of it."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from lhotse import CutSet

from model import espeak
from model.espeak import EspeakError
from training.augmentation.pairing import speaker_gender as name_gender
from training.augmentation.pairing import speaker_keys
from training.synthetic import corpus
from training.synthetic import engine_voices as voices
from training.synthetic.corpus import (
    CorpusError,
    CorpusOptions,
    build_corpus,
    make_population,
    make_speakers,
    plan_jobs,
)
from training.synthetic.prosody import Prosody

# Taken with the corpus builder as it was before CorpusOptions existed (seed 0).
FROZEN = {"speakers": "97491bb063fcbec0", "held": "e067a02dd400cd82", "sentences": "5b1f71dda83cc7da",
          "plan_1h": "b8a904b24dba2b64", "manifests": "8064c8a2711640ab", "speakers.jsonl": "67ee0a51241fd709",
          "wavs": "23fa186f3382d336"}
# ... on this software; elsewhere the byte-level build test is skipped (the plan and speaker tests still run).
FROZEN_ENV = {"espeak-ng": "eSpeak NG text-to-speech: 1.51  Data at: /usr/lib/x86_64-linux-gnu/espeak-ng-data",
              "flite": "version: flite-2.2-current Sep 2018 (http://cmuflite.org)",
              "festival": "festival: Festival Speech Synthesis System: 2.5.0:release December 2017",
              "libsndfile": "1.2.2", "soxr": "1.1.0", "sentences": FROZEN["sentences"]}
TEXT = "Every man has his price, and some of them are very cheap indeed. Why do you ask me such questions?"


def _h(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _version(cmd: str) -> str:
    if shutil.which(cmd) is None:
        return ""
    out = subprocess.run([cmd, "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    return out[-1].strip() if out else ""


def _has_espeak() -> bool:
    try:
        espeak.initialize()
    except EspeakError:
        return False
    return True


needs_espeak = pytest.mark.skipif(not _has_espeak(), reason="libespeak-ng unavailable")
needs_cli = pytest.mark.skipif(shutil.which("flite") is None or shutil.which("text2wave") is None,
                               reason="flite / festival unavailable")


def _cuts(out: Path) -> list:
    return [c for split in ("train", "valid", "test") for c in CutSet.from_jsonl(corpus.split_cuts(out, split))]


def _f0(wav: np.ndarray, sr: int = 16000) -> float:
    """Median F0 of the voiced 40 ms frames (normalised autocorrelation), enough to see a 2-semitone shift."""
    n, hop, lo, hi, out = int(0.04 * sr), int(0.01 * sr), sr // 400, sr // 60, []
    for s in range(0, len(wav) - n, hop):
        frame = wav[s:s + n] - wav[s:s + n].mean()
        if np.sqrt(np.mean(frame ** 2)) < 0.02 * np.abs(wav).max():
            continue
        ac = np.correlate(frame, frame, "full")[n - 1:]
        ac = ac / (ac[0] + 1e-9)
        k = lo + int(np.argmax(ac[lo:hi]))
        if ac[k] > 0.6:
            out.append(sr / k)
    return float(np.median(out))


# ------------------------------------------------------------------------------------------- defaults unchanged


def test_the_default_population_and_plan_are_the_old_ones() -> None:
    speakers = make_speakers(0)
    assert _h([asdict(s) for s in speakers]) == FROZEN["speakers"]
    assert _h(sorted(corpus.unseen_speakers(speakers, 0))) == FROZEN["held"]
    assert make_population(0) == (speakers, corpus.unseen_speakers(speakers, 0))
    default = CorpusOptions()
    assert default.is_default and not default.writes_gender and CorpusOptions(gender=True).writes_gender
    out = Path("/corpus")
    old = [(s, str(Path(j.path).relative_to(out)), asdict(j.speaker), j.text, repr(j.gain), j.prosody)
           for s, j in plan_jobs(out, 1.0, 0)]
    assert old == [(s, str(Path(j.path).relative_to(out)), asdict(j.speaker), j.text, repr(j.gain), j.prosody)
                   for s, j in plan_jobs(out, 1.0, 0, options=default)]
    assert all(row[-1] is None for row in old)
    if _h(corpus.load_sentences()) != FROZEN["sentences"]:
        pytest.skip("another fortunes package: the frozen plan does not apply")
    assert _h([row[:-1] for row in old]) == FROZEN["plan_1h"]


@needs_espeak
@needs_cli
def test_a_default_build_is_byte_identical_to_the_old_one(tmp_path: Path) -> None:
    env = {"espeak-ng": _version("espeak-ng"), "flite": _version("flite"), "festival": _version("festival"),
           "libsndfile": sf.__libsndfile_version__, "soxr": soxr.__version__, "sentences": _h(corpus.load_sentences())}
    if env != FROZEN_ENV:
        pytest.skip(f"frozen digests were taken with {FROZEN_ENV}, this is {env}")
    out = build_corpus(tmp_path / "c", hours=0.01, seed=0, workers=2)
    manifests = b"".join(gzip.decompress(corpus.split_cuts(out, s).read_bytes()) for s in ("train", "valid", "test"))
    assert hashlib.sha256(manifests).hexdigest()[:16] == FROZEN["manifests"] and b'"gender"' not in manifests
    assert hashlib.sha256((out / "speakers.jsonl").read_bytes()).hexdigest()[:16] == FROZEN["speakers.jsonl"]
    wavs = hashlib.sha256()
    for path in sorted(out.rglob("*.wav")):
        wavs.update(str(path.relative_to(out)).encode())
        wavs.update(path.read_bytes())
    assert wavs.hexdigest()[:16] == FROZEN["wavs"] and not (out / "corpus_options.json").exists()


# ------------------------------------------------------------------------------------------------ more speakers


def test_more_espeak_speakers_extend_the_original_population() -> None:
    base, base_held = make_population(0)
    big, held = make_population(0, 100)
    assert big[:len(base)] == base and base_held <= held  # the original speakers, their unseen ones still unseen
    extra = big[len(base):]
    assert len(extra) == 60 and {s.engine for s in extra} == {"espeak"}
    assert len({s.name.lower() for s in big}) == len(big)  # no two folders differing in case only
    assert 2 <= len(held - base_held) <= 14  # ~12 % of the 60 extras
    small, small_held = make_population(0, 60)
    assert small == big[:len(small)] and small_held == held & {s.name for s in small}  # nested populations
    assert all(s.voice.partition("+")[2] not in voices.MISSPELT_VARIANTS for s in extra)
    with pytest.raises(CorpusError):
        make_population(0, 10_000)
    for bad in ({"espeak_speakers": corpus.N_ESPEAK - 1}, {"long_fraction": 1.5}, {"max_sentences": 1}):
        with pytest.raises(CorpusError):
            CorpusOptions(**bad)


def test_variant_files_and_genders() -> None:
    if voices.espeak_variant_dir() is None:
        pytest.skip("espeak-ng-data not found")
    assert {v for v in corpus.ESPEAK_VARIANTS if not voices.variant_exists(v)} == set(voices.MISSPELT_VARIANTS)
    assert all(voices.variant_exists(v) for v in voices.EXTRA_ESPEAK_VARIANTS)
    gender = voices.espeak_variant_gender
    assert gender("f3") == "female" and gender("m3") == "male" and gender("Andy") == "male"  # "gender Male"
    assert gender("linda") == "female" and gender("Linda") == "male"  # no file: the male base voice speaks
    assert gender("Jacky") is None  # its file has no gender line
    assert voices.voice_gender("espeak", "en-gb+f2") == "female"
    assert voices.voice_gender("flite", "slt") == "female" and voices.voice_gender("flite", "awb") == "male"
    assert voices.voice_gender("festival", "ked_diphone") == "male"
    assert voices.voice_gender("festival", "cmu_us_slt_arctic_hts") == "female"


# ----------------------------------------------------------------------------------------- prosody, long texts


def test_options_keep_the_default_plans_draws() -> None:
    out = Path("/corpus")
    default = list(plan_jobs(out, 0.2, 0))
    rich = list(plan_jobs(out, 0.2, 0, options=CorpusOptions(prosody=True, long_fraction=0.3)))
    assert len(rich) < len(default)  # longer utterances: fewer of them for the same hours
    long = 0
    for (split, job), (rich_split, rich_job) in zip(default, rich, strict=False):
        assert (split, job.path, job.speaker, job.gain) == (rich_split, rich_job.path, rich_job.speaker, rich_job.gain)
        assert rich_job.text.startswith(job.text) and rich_job.prosody is not None
        if rich_job.text != job.text:
            long += 1
            assert 2 <= rich_job.text.count(". ") + rich_job.text.count("? ") + rich_job.text.count("! ") + 1 <= 4
    assert 0.2 < long / len(rich) < 0.4
    prosody_only = list(plan_jobs(out, 0.2, 0, options=CorpusOptions(prosody=True)))
    assert [j.text for _, j in prosody_only] == [j.text for _, j in default]
    assert [j.prosody for _, j in prosody_only[:len(rich)]] == [j.prosody for _, j in rich]
    assert len({j.prosody for _, j in prosody_only}) == len(prosody_only)


@needs_espeak
def test_espeak_pitch_range_and_intonation_go_through_the_library() -> None:
    plain = espeak.synthesize(TEXT, "en-us+m3", 160, 50)
    same = espeak.synthesize(TEXT, "en-us+m3", 160, 50, pitch_range=50, intonation=0)
    assert np.array_equal(plain.wav, same.wav) and plain.phones == same.phones  # 50 and 0: the voice's own
    for kwargs in ({"pitch_range": 0}, {"pitch_range": 100}, {"intonation": 2}):
        varied = espeak.synthesize(TEXT, "en-us+m3", 160, 50, **kwargs)
        assert not np.array_equal(varied.wav, plain.wav)
        assert [p.symbol for p in varied.phones] == [p.symbol for p in plain.phones]
        assert varied.phones[0].start == 0.0 and varied.phones[-1].end == varied.duration
    for kwargs in ({"pitch_range": 101}, {"intonation": 8}, {"pitch_range": 1.5}):
        with pytest.raises(EspeakError):
            espeak.synthesize(TEXT, "en-us", **kwargs)


@needs_cli
def test_flite_and_festival_vary_tempo_and_pitch() -> None:
    speakers = {s.name: s for s in make_speakers(0)}
    for name in ("flite-slt-0", "flite-rms-0", "festival-kal_diphone-0", "festival-cmu_us_slt_arctic_hts-0"):
        plain, _ = corpus.synthesize(speakers[name], TEXT)
        slow, _ = corpus.synthesize(speakers[name], TEXT, Prosody(tempo=1.2))
        assert 1.12 < len(slow) / len(plain) < 1.28, name
    for name in ("flite-slt-0", "festival-kal_diphone-0"):  # rms and the HTS voice ignore F0 controls
        plain, _ = corpus.synthesize(speakers[name], TEXT)
        higher, _ = corpus.synthesize(speakers[name], TEXT, Prosody(semitones=2.0))
        assert 1.07 < _f0(higher) / _f0(plain) < 1.18, name  # 2 semitones: x1.12


# --------------------------------------------------------------------------------------- a tiny richer build


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, CorpusOptions]:
    if not _has_espeak():
        pytest.skip("libespeak-ng unavailable")
    root = tmp_path_factory.mktemp("corpora")
    options = CorpusOptions(prosody=True, long_fraction=0.5)
    default = build_corpus(root / "default", hours=0.01, seed=0, workers=2, engines=("espeak",))
    rich = build_corpus(root / "rich", hours=0.01, seed=0, workers=2, engines=("espeak",), options=options)
    return default, rich, options


def test_rich_cuts_are_longer_with_exact_phones_and_genders(builds: tuple[Path, Path, CorpusOptions]) -> None:
    default, rich, _ = builds
    before = {c.recording.sources[0].source: c for c in _cuts(default)}
    cuts = _cuts(rich)
    assert len(cuts) == len(before) == 40
    speakers = {r["name"]: r for r in map(json.loads, (rich / "speakers.jsonl").read_text().splitlines())}
    assert {r["gender"] for r in speakers.values()} == {"male", "female", None}
    n_long = 0
    for cut in cuts:
        sup, old = cut.supervisions[0], before[cut.recording.sources[0].source]
        phones = sup.alignment["phone"]
        assert phones[0].start == 0.0 and abs(phones[-1].end - cut.duration) < 1e-6
        assert all(abs(a.end - b.start) < 1e-6 and b.duration >= 0 for a, b in itertools.pairwise(phones))
        assert sup.gender == speakers[sup.speaker]["gender"]
        if sup.text != old.supervisions[0].text:
            n_long += 1
            assert cut.duration > 1.2 * old.duration
        else:
            assert 0.75 < cut.duration / old.duration < 1.3  # prosody: tempo +-10 %
    assert 10 <= n_long <= 30 and max(c.duration for c in cuts) > 10.0
    assert json.loads((rich / "corpus_options.json").read_text())["long_fraction"] == 0.5
    assert all(c.supervisions[0].gender is None for c in _cuts(default))


def test_pairing_prefers_the_supervisions_gender(builds: tuple[Path, Path, CorpusOptions]) -> None:
    cuts = _cuts(builds[1])
    keys = {key[0]: key for key in speaker_keys(cuts)}
    linda = "espeak-en-gb-scotland-Linda"  # no such variant file: espeak-ng speaks the male base voice
    assert keys[linda][2] == "m" and name_gender(linda) == "m"
    for cut in cuts:
        speaker, gender = cut.supervisions[0].speaker, cut.supervisions[0].gender
        assert keys[speaker][2] == (gender[0] if gender else name_gender(speaker))
    cut = next(c for c in cuts if c.supervisions[0].speaker == linda)
    cut.supervisions[0].gender = "female"  # a supervision that disagrees with the name wins
    assert speaker_keys([cut])[0][2] == "f"


def test_a_rich_corpus_resumes_only_with_its_options(builds: tuple[Path, Path, CorpusOptions],
                                                     tmp_path: Path) -> None:
    default, rich, options = builds
    stamps = {p: p.stat().st_mtime_ns for p in (rich / "wavs").rglob("*.wav")}
    test_split = gzip.decompress(corpus.split_cuts(rich, "test").read_bytes())
    build_corpus(rich, hours=0.01, seed=0, workers=2, engines=("espeak",), options=options)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    for other, out in ((None, rich), (CorpusOptions(prosody=True), rich), (options, default)):
        with pytest.raises(CorpusError, match="would not match"):
            build_corpus(out, hours=0.01, seed=0, workers=2, engines=("espeak",), options=other)
    alone = build_corpus(tmp_path / "alone", hours=0.01, seed=0, workers=2, engines=("espeak",), options=options,
                         splits=("test",))
    assert gzip.decompress(corpus.split_cuts(alone, "test").read_bytes()) == test_split


def test_the_corpus_command_passes_its_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from speechflow.cli import main

    seen = []
    monkeypatch.setattr("training.synthetic.corpus.build_corpus",
                        lambda out, **kw: seen.append(kw["options"]) or Path(out))
    assert main(["corpus", "--out", str(tmp_path)]) == 0
    assert main(["corpus", "--out", str(tmp_path), "--espeak-speakers", "60", "--prosody", "--long-fraction", "0.2",
                 "--max-sentences", "3", "--gender"]) == 0
    assert seen == [CorpusOptions(), CorpusOptions(60, True, 0.2, 3, True)]
