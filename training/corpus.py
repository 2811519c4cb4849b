"""Synthetic speech corpus: many synthetic speakers from espeak-ng, flite and festival saying Debian fortunes.

Each speaker is an engine voice with its own pitch, rate and a vocal-tract warp (resampling, which moves pitch and
formants together). Whole speakers are held out as unseen test speakers. Deterministic for a seed, parallel over
cores, resumable (files already written are kept), with manifests ``train/valid/test.jsonl``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from model.audio import SAMPLE_RATE, prepare_waveform, resample
from model.errors import SpeechFlowError

from .manifest import write_manifest

FORTUNE_DIR = Path("/usr/share/games/fortunes")
ESPEAK_ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us-nyc", "en-gb-x-gbcwmd",
                  "en-gb-x-gbclan"]
ESPEAK_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "Andy", "Annie", "Denis",
                   "Gene", "Jacky", "Lee", "Linda", "Mike", "Paul", "Rob", "Steph", "Zac", "anika", "iven", "max"]
FLITE_VOICES = ["kal16", "awb", "rms", "slt"]
FESTIVAL_VOICES = ["kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"]
AVG_UTTERANCE_S = 3.2  # measured mean duration of one fortune sentence, used to size the corpus


class CorpusError(SpeechFlowError):
    """A synthesis engine is missing or failed."""


@dataclass(frozen=True)
class Speaker:
    name: str
    engine: str  # espeak | flite | festival
    voice: str
    pitch: int = 50  # espeak 0..99
    rate: int = 160  # espeak words per minute; flite/festival use ``stretch``
    stretch: float = 1.0  # duration stretch (flite)
    warp: float = 1.0  # resampling factor: > 1 lowers pitch and formants


def make_speakers(seed: int, n_espeak: int = 40) -> list[Speaker]:
    """The fixed speaker population for a seed (a function of the seed only, so manifests are reproducible)."""
    rng = np.random.default_rng([seed, 1])
    speakers = []
    combos = [(a, v) for a in ESPEAK_ACCENTS for v in ESPEAK_VARIANTS]
    for i in rng.choice(len(combos), size=n_espeak, replace=False):
        accent, variant = combos[int(i)]
        speakers.append(Speaker(f"espeak-{accent}-{variant}", "espeak", f"{accent}+{variant}",
                                pitch=int(rng.integers(25, 75)), rate=int(rng.integers(135, 190)),
                                warp=round(float(rng.uniform(0.92, 1.08)), 3)))
    for voice in FLITE_VOICES:
        for k, warp in enumerate((1.0, round(float(rng.uniform(0.9, 1.1)), 3))):
            speakers.append(Speaker(f"flite-{voice}-{k}", "flite", voice,
                                    stretch=round(float(rng.uniform(0.9, 1.15)), 3), warp=warp))
    for voice in FESTIVAL_VOICES:
        for k, warp in enumerate((1.0, round(float(rng.uniform(0.9, 1.1)), 3))):
            speakers.append(Speaker(f"festival-{voice}-{k}", "festival", voice, warp=warp))
    return speakers


def unseen_speakers(speakers: list[Speaker], seed: int) -> set[str]:
    """Hold out ~12 % of speakers from every engine (never in train or valid)."""
    rng = np.random.default_rng([seed, 2])
    held = set()
    for engine in ("espeak", "flite", "festival"):
        names = sorted(s.name for s in speakers if s.engine == engine)
        k = max(1, round(0.12 * len(names)))
        held |= set(rng.choice(names, size=k, replace=False).tolist())
    return held


def load_sentences(min_words: int = 4, max_words: int = 22) -> list[str]:
    """Single English sentences from Debian's fortunes, cleaned of attributions, markup and odd characters."""
    if not FORTUNE_DIR.is_dir():
        raise CorpusError(f"{FORTUNE_DIR} not found: install Debian's 'fortunes' package")
    sentences: set[str] = set()
    for path in sorted(FORTUNE_DIR.iterdir()):
        if path.suffix or path.is_dir() or path.name.startswith("."):
            continue
        text = path.read_text(errors="ignore")
        for block in text.split("\n%\n"):
            block = re.sub(r"\s+", " ", block.split(" -- ")[0]).strip()
            for sent in re.split(r"(?<=[.!?])\s+", block):
                words = sent.split()
                if (min_words <= len(words) <= max_words and re.fullmatch(r"[A-Za-z0-9 ,.;:'?!-]+", sent)
                        and sent[0].isupper() and sent[-1] in ".!?" and not re.search(r"\d\.$", sent)
                        and sum(c.isupper() for c in sent) <= 0.3 * sum(c.isalpha() for c in sent)):
                    sentences.add(sent)
    return sorted(sentences)


def synthesize(speaker: Speaker, text: str) -> np.ndarray:
    """Text -> float32 mono at 16 kHz in the speaker's voice."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        if speaker.engine == "espeak":
            cmd = ["espeak-ng", "-v", speaker.voice, "-p", str(speaker.pitch), "-s", str(speaker.rate),
                   "-w", str(out), text]
        elif speaker.engine == "flite":
            cmd = ["flite", "-voice", speaker.voice, "--setf", f"duration_stretch={speaker.stretch}",
                   "-t", text, "-o", str(out)]
        elif speaker.engine == "festival":
            (Path(tmp) / "in.txt").write_text(text)
            cmd = ["text2wave", "-eval", f"(voice_{speaker.voice})", "-o", str(out), str(Path(tmp) / "in.txt")]
        else:
            raise CorpusError(f"unknown engine {speaker.engine}")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not out.is_file():
            raise CorpusError(f"{speaker.engine} failed for {speaker.name}: {proc.stderr.strip()[:200]}")
        wav, sr = sf.read(out, dtype="float32", always_2d=True)
    wav = prepare_waveform(wav, sr, sr)
    # Warp: reinterpret the rate, then resample to 16 kHz (pitch and formants scale by 1 / warp).
    wav = resample(wav, round(sr * speaker.warp), SAMPLE_RATE)
    peak = float(np.abs(wav).max())
    return wav / peak * 0.9 if peak > 0 else wav


@dataclass
class Job:
    path: str
    speaker: Speaker
    text: str
    gain: float


def _run_job(job: Job) -> tuple[str, float]:
    path = Path(job.path)
    if not path.is_file():  # resumable: finished files are kept
        wav = synthesize(job.speaker, job.text) * job.gain
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.wav")
        sf.write(tmp, wav, SAMPLE_RATE, subtype="PCM_16")
        os.replace(tmp, path)
    return job.path, sf.info(job.path).duration


def plan_jobs(out: Path, hours: float, seed: int) -> Iterator[tuple[str, Job]]:
    """(split, job) pairs; speakers take turns so every speaker gets a similar share."""
    speakers = make_speakers(seed)
    held = unseen_speakers(speakers, seed)
    sentences = load_sentences()
    rng = np.random.default_rng([seed, 3])
    n = max(len(speakers), round(hours * 3600 / AVG_UTTERANCE_S))
    for i in range(n):
        speaker = speakers[i % len(speakers)]
        text = sentences[int(rng.integers(len(sentences)))]
        gain = float(10 ** (rng.uniform(-12, 0) / 20))  # level variety: -12..0 dB below peak 0.9
        split = "test" if speaker.name in held else ("valid" if rng.random() < 0.03 else "train")
        yield split, Job(str(out / "wavs" / speaker.name / f"{i:06d}.wav"), speaker, text, gain)


def build_corpus(out: str | os.PathLike, hours: float = 1.0, seed: int = 0, workers: int | None = None) -> Path:
    """Synthesise ``hours`` of speech into ``out`` and write train/valid/test manifests; returns ``out``."""
    out = Path(out)
    for tool in ("espeak-ng", "flite", "text2wave"):
        if shutil.which(tool) is None:
            raise CorpusError(f"{tool} not found: apt-get install espeak-ng flite festival festvox-kallpc16k "
                              "festvox-kdlpc16k festvox-us-slt-hts fortunes")
    planned = list(plan_jobs(out, hours, seed))
    rows: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(workers) as pool:
        results = pool.map(_run_job, [job for _, job in planned], chunksize=8)
        for (split, job), (path, duration) in tqdm(zip(planned, results, strict=True), total=len(planned),
                                                   desc="corpus", unit="utt"):
            rows[split].append({"audio": str(Path(path).relative_to(out)), "duration": round(duration, 3),
                                "speaker": job.speaker.name, "text": job.text})
    for split, split_rows in rows.items():
        write_manifest(out / f"{split}.jsonl", split_rows)
    write_manifest(out / "speakers.jsonl", [asdict(s) | {"unseen": s.name in unseen_speakers(make_speakers(seed), seed)}
                                            for s in make_speakers(seed)])
    return out
