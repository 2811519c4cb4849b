"""Synthetic speech corpus: many synthetic speakers from espeak-ng, flite and festival saying Debian fortunes.

Each speaker is an engine voice with its own pitch, rate and a warp (resampling, which moves pitch and formants
together). Whole speakers are held out as unseen test speakers. Deterministic for a seed, parallel over cores,
resumable (files already written are kept), with Lhotse CutSets ``train_cuts.jsonl.gz``, ``valid_cuts.jsonl.gz`` and
``test_cuts.jsonl.gz`` (one cut per utterance: speaker and text on its supervision, audio paths relative to the
corpus directory) and the speaker list ``speakers.jsonl``.

Phones: espeak-ng speakers are synthesised through libespeak-ng (`model.espeak`), whose phoneme events give exact
phone boundaries; their cuts carry them as the supervision's ``alignment["phone"]`` (symbol, start, duration in
seconds of the written 16 kHz audio, after the warp), tiling it from 0 to the cut's duration (some phones span no
time), in the symbols `model.espeak.phonemize` produces. Each such wav has a sidecar ``<name>.phones.json``, written
together with it, so a resumed build still has them; a wav without one (from a build before phones) is made again,
sample-identical, since the library gives what the espeak-ng command line gave. flite and festival cuts have no
phones: the recipe labels them with the prompt forced aligner (`training/labelling.py`) for duration and TTS
training.
"""

from __future__ import annotations

import json
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

from model import espeak
from model.audio import SAMPLE_RATE, prepare_waveform, resample
from model.checkpoint import atomic_write
from model.errors import SpeechFlowError

from .convert import cut_from_row
from .manifest import write_cuts

FORTUNE_DIR = Path("/usr/share/games/fortunes")
ESPEAK_ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us-nyc", "en-gb-x-gbcwmd",
                  "en-gb-x-gbclan"]
ESPEAK_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "Andy", "Annie", "Denis",
                   "Gene", "Jacky", "Lee", "Linda", "Mike", "Paul", "Rob", "Steph", "Zac", "anika", "iven", "max"]
FLITE_VOICES = ["kal16", "awb", "rms", "slt"]
FESTIVAL_VOICES = ["kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"]
ENGINES = ("espeak", "flite", "festival")
AVG_UTTERANCE_S = 3.2  # measured mean duration of one fortune sentence, used to size the corpus

PhoneTimes = list[tuple[str, float, float]]  # (symbol, start s, end s)


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
    warp: float = 1.0  # resampling factor: > 1 raises pitch and formants by `warp` and shortens time by 1 / warp


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


def synthesize(speaker: Speaker, text: str) -> tuple[np.ndarray, PhoneTimes | None]:
    """Text -> (float32 mono at 16 kHz in the speaker's voice, phone times in seconds or None when not known)."""
    if speaker.engine == "espeak":
        result = espeak.synthesize(text, speaker.voice, rate=speaker.rate, pitch=speaker.pitch)
        wav, sr = result.wav, result.sample_rate
        phones: PhoneTimes | None = [(p.symbol, p.start, p.end) for p in result.phones]
    else:
        wav, sr = _synthesize_cli(speaker, text)
        phones = None
    wav = prepare_waveform(wav, sr, sr)
    # Warp: reinterpret the rate as sr * warp, then resample to 16 kHz: frequencies scale by warp, times by 1 / warp.
    warped_sr = round(sr * speaker.warp)
    wav = resample(wav, warped_sr, SAMPLE_RATE)
    if phones is not None:
        phones = _warp_phones(phones, sr / warped_sr, len(wav) / SAMPLE_RATE)
    peak = float(np.abs(wav).max())
    return (wav / peak * 0.9 if peak > 0 else wav), phones


def _synthesize_cli(speaker: Speaker, text: str) -> tuple[np.ndarray, int]:
    """flite / festival through their command lines -> (float32 (n, channels), sample rate)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        if speaker.engine == "flite":
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
    return wav, sr


def _warp_phones(phones: PhoneTimes, scale: float, duration: float) -> PhoneTimes:
    """Scale phone times like the audio, rounded to 10 us; the last phone ends exactly at the written duration."""
    warped = [(sym, min(round(start * scale, 5), duration), min(round(end * scale, 5), duration))
              for sym, start, end in phones]
    sym, start, _ = warped[-1]
    warped[-1] = (sym, start, duration)
    return warped


@dataclass
class Job:
    path: str
    speaker: Speaker
    text: str
    gain: float


def _phones_path(wav_path: Path) -> Path:
    return wav_path.with_suffix(".phones.json")


def _run_job(job: Job) -> tuple[str, int, PhoneTimes | None]:
    """Synthesise one utterance unless it is already there; returns (path, samples at 16 kHz, phones or None)."""
    path = Path(job.path)
    sidecar = _phones_path(path) if job.speaker.engine == "espeak" else None
    if not path.is_file() or (sidecar is not None and not sidecar.is_file()):  # resumable: finished files are kept
        wav, phones = synthesize(job.speaker, job.text)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.wav")
        sf.write(tmp, wav * job.gain, SAMPLE_RATE, subtype="PCM_16")
        if sidecar is not None:  # sidecar first: a wav on disk means its phones are there too
            tmp_sidecar = sidecar.with_suffix(".json.tmp")
            tmp_sidecar.write_text(json.dumps({"phones": phones}))
            os.replace(tmp_sidecar, sidecar)
        os.replace(tmp, path)
    phones = json.loads(sidecar.read_text())["phones"] if sidecar is not None else None
    return job.path, sf.info(job.path).frames, phones


def _init_worker() -> None:
    espeak.initialize()  # once per worker process, not on its first utterance


SPLITS = ("train", "valid", "test")


def split_cuts(corpus: str | os.PathLike, split: str) -> Path:
    """The CutSet of a corpus split: ``corpus/<split>_cuts.jsonl.gz``."""
    return Path(corpus) / f"{split}_cuts.jsonl.gz"


def plan_jobs(out: Path, hours: float, seed: int, engines: tuple[str, ...] = ENGINES) -> Iterator[tuple[str, Job]]:
    """(split, job) pairs; speakers take turns so every speaker gets a similar share.

    `engines` restricts the speakers (for quick builds); who is unseen is decided on the whole population.
    """
    population = make_speakers(seed)
    held = unseen_speakers(population, seed)
    speakers = [s for s in population if s.engine in engines]
    if not speakers:
        raise CorpusError(f"no speakers for engines {engines}; choose from {ENGINES}")
    sentences = load_sentences()
    rng = np.random.default_rng([seed, 3])
    n = max(len(speakers), round(hours * 3600 / AVG_UTTERANCE_S))
    for i in range(n):
        speaker = speakers[i % len(speakers)]
        text = sentences[int(rng.integers(len(sentences)))]
        gain = float(10 ** (rng.uniform(-12, 0) / 20))  # level variety: -12..0 dB below peak 0.9
        split = "test" if speaker.name in held else ("valid" if rng.random() < 0.03 else "train")
        yield split, Job(str(out / "wavs" / speaker.name / f"{i:06d}.wav"), speaker, text, gain)


def build_corpus(out: str | os.PathLike, hours: float = 1.0, seed: int = 0, workers: int | None = None,
                 engines: tuple[str, ...] = ENGINES, splits: tuple[str, ...] = SPLITS) -> Path:
    """Synthesise ``hours`` of speech into ``out`` and write the train/valid/test CutSets; returns ``out``.

    At least one utterance per speaker is made, so a tiny ``hours`` gives one per speaker of the chosen ``engines``.
    ``splits`` limits what is synthesised: ``("test",)`` rebuilds exactly the unseen-speaker test split of a corpus
    with the same hours and seed (to evaluate a bundle without its training data) in a fraction of the time.
    """
    out = Path(out)
    _check_engines(engines)
    if unknown := set(splits) - set(SPLITS):
        raise CorpusError(f"unknown splits {sorted(unknown)}; choose from {SPLITS}")
    planned = [(split, job) for split, job in plan_jobs(out, hours, seed, engines) if split in splits]
    cuts: dict[str, list] = {split: [] for split in splits}
    out_abs = out.absolute()
    workers = workers or os.cpu_count() or 1
    initializer = _init_worker if "espeak" in engines else None
    with ProcessPoolExecutor(workers, initializer=initializer) as pool:
        results = pool.map(_run_job, [job for _, job in planned], chunksize=8)
        for (split, job), (path, samples, phones) in tqdm(zip(planned, results, strict=True), total=len(planned),
                                                          desc="corpus", unit="utt"):
            row = {"audio": str(Path(path).relative_to(out)), "speaker": job.speaker.name, "text": job.text}
            row = row if phones is None else row | {"phones": phones}
            cuts[split].append(cut_from_row(row, out_abs, out_abs, num_samples=samples, sampling_rate=SAMPLE_RATE))
    for split, split_cuts_ in cuts.items():
        write_cuts(split_cuts(out, split), split_cuts_)
    speakers = make_speakers(seed)
    held = unseen_speakers(speakers, seed)
    rows = "".join(json.dumps(asdict(s) | {"unseen": s.name in held}) + "\n" for s in speakers)
    atomic_write(out / "speakers.jsonl", lambda tmp: Path(tmp).write_text(rows))
    return out


def _check_engines(engines: tuple[str, ...]) -> None:
    """Fail early and clearly, not inside a worker."""
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise CorpusError(f"unknown engines {sorted(unknown)}; choose from {ENGINES}")
    tools = {"flite": "flite", "festival": "text2wave"}
    for engine in engines:
        if engine in tools and shutil.which(tools[engine]) is None:
            raise CorpusError(f"{tools[engine]} not found: apt-get install flite festival festvox-kallpc16k "
                              "festvox-kdlpc16k festvox-us-slt-hts fortunes")
    if "espeak" in engines:
        espeak.initialize()  # raises EspeakError with the package to install
