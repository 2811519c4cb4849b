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
together with it, so a resumed build still has them; a wav without one (from an older build) is made again,
sample-identical, since the library gives what the espeak-ng command line gave. flite and festival cuts have no
phones: the recipe labels them with the prompt forced aligner (`training/data/labelling.py`) for duration and TTS
training.

Richer builds (`CorpusOptions`, all off by default: a seed's default corpus is unchanged, file for file): more espeak-ng
speakers (``espeak_speakers`` > 40 adds speakers from `training.synthetic.engine_voices` after the original population,
which stays as it is, with its unseen speakers still unseen), per-utterance prosody (``prosody``,
`training.synthetic.prosody`) and long utterances of 2..``max_sentences`` fortune sentences (``long_fraction`` of them).
Their draws come from generators of their own per utterance, so the texts, gains and splits of the default plan stay
where they were. Such a corpus records these options in ``corpus_options.json`` and refuses to be resumed with others
(its files would not match them), and it writes each speaker's gender (`training.synthetic.engine_voices`) into
``speakers.jsonl`` and the supervisions (``gender``; also with ``gender=True`` alone).
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
from training.data.convert import cut_from_row
from training.data.cuts import write_cuts

from .engine_voices import EXTRA_ESPEAK_VARIANTS, MISSPELT_VARIANTS, variant_exists, voice_gender
from .prosody import Prosody, draw_prosody, espeak_args, festival_evals, flite_args

FORTUNE_DIR = Path("/usr/share/games/fortunes")
ESPEAK_ACCENTS = ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us-nyc", "en-gb-x-gbcwmd",
                  "en-gb-x-gbclan"]
ESPEAK_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "Andy", "Annie", "Denis",
                   "Gene", "Jacky", "Lee", "Linda", "Mike", "Paul", "Rob", "Steph", "Zac", "anika", "iven", "max"]
FLITE_VOICES = ["kal16", "awb", "rms", "slt"]
FESTIVAL_VOICES = ["kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"]
ENGINES = ("espeak", "flite", "festival")
AVG_UTTERANCE_S = 3.2  # measured mean duration of one fortune sentence, used to size the corpus
N_ESPEAK = 40  # espeak-ng speakers of the original population
LONG_SECONDS = (10.0, 20.0)  # a long utterance aims at a length in this range ...
WORDS_PER_S = 3.4  # ... estimated from its words (fortune sentences: 11 words in 3.2 s on average)
SENTENCE_GAP_S = 0.5  # the pause between joined sentences, to size the corpus (measured on espeak-ng: ~0.5 s)
OPTIONS_FILE = "corpus_options.json"

PhoneTimes = list[tuple[str, float, float]]  # (symbol, start s, end s)


class CorpusError(SpeechFlowError):
    """A synthesis engine is missing or failed."""


@dataclass(frozen=True)
class CorpusOptions:
    """What a richer corpus adds; the defaults build the original corpus of a seed, file for file.

    - espeak_speakers: espeak-ng speakers (40 or more: extras follow the original ones, see `make_population`);
    - prosody: vary each utterance's tempo, pitch and intonation around its speaker's (`training.synthetic.prosody`);
    - long_fraction: the share of utterances that join 2..max_sentences fortune sentences, aiming at 10-20 s;
    - gender: write speakers' genders into speakers.jsonl and the supervisions (None: when any other option is set).
    """

    espeak_speakers: int = N_ESPEAK
    prosody: bool = False
    long_fraction: float = 0.0
    max_sentences: int = 4
    gender: bool | None = None

    def __post_init__(self) -> None:
        if self.espeak_speakers < N_ESPEAK:
            raise CorpusError(f"espeak_speakers must be >= {N_ESPEAK}, got {self.espeak_speakers}")
        if not 0.0 <= self.long_fraction <= 1.0:
            raise CorpusError(f"long_fraction must be in [0, 1], got {self.long_fraction}")
        if self.max_sentences < 2:
            raise CorpusError(f"max_sentences must be >= 2, got {self.max_sentences}")

    @property
    def is_default(self) -> bool:
        return self.espeak_speakers == N_ESPEAK and not self.prosody and self.long_fraction == 0.0

    @property
    def writes_gender(self) -> bool:
        return (not self.is_default) if self.gender is None else self.gender

    def synthesis(self) -> dict[str, object]:
        """The options that change what an utterance's file holds (what `corpus_options.json` records)."""
        return {"espeak_speakers": self.espeak_speakers, "prosody": self.prosody, "long_fraction": self.long_fraction,
                "max_sentences": self.max_sentences if self.long_fraction > 0 else None}


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


def make_population(seed: int, n_espeak: int = N_ESPEAK) -> tuple[list[Speaker], set[str]]:
    """(speakers, unseen names): `make_speakers` and `unseen_speakers` (untouched: the original population and its
    unseen speakers), then ``n_espeak - 40`` extra espeak-ng speakers from accents x variants not yet taken (the
    original list's working variants and `EXTRA_ESPEAK_VARIANTS`), ~12 % of them unseen too. The extras are the
    first of one fixed order, each drawn from a generator of its own, so 60 speakers are the first 60 of 80."""
    if n_espeak < N_ESPEAK:
        raise CorpusError(f"the population has at least {N_ESPEAK} espeak-ng speakers, asked for {n_espeak}")
    base = make_speakers(seed)
    held = unseen_speakers(base, seed)
    taken = {s.name.lower() for s in base}  # lower case: no two speakers' folders may differ in case only
    variants = [v for v in ESPEAK_VARIANTS if v not in MISSPELT_VARIANTS] + EXTRA_ESPEAK_VARIANTS
    pool = [(a, v) for a in ESPEAK_ACCENTS for v in variants if f"espeak-{a}-{v}".lower() not in taken]
    if n_espeak - N_ESPEAK > len(pool):
        raise CorpusError(f"at most {N_ESPEAK + len(pool)} espeak-ng speakers, asked for {n_espeak}")
    extra = []
    for i in np.random.default_rng([seed, 4]).permutation(len(pool))[:n_espeak - N_ESPEAK]:
        accent, variant = pool[int(i)]
        rng = np.random.default_rng([seed, 4, int(i)])
        speaker = Speaker(f"espeak-{accent}-{variant}", "espeak", f"{accent}+{variant}",
                          pitch=int(rng.integers(25, 75)), rate=int(rng.integers(135, 190)),
                          warp=round(float(rng.uniform(0.92, 1.08)), 3))
        extra.append(speaker)
        if rng.random() < 0.12:
            held.add(speaker.name)
    return base + extra, held


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


def synthesize(speaker: Speaker, text: str, prosody: Prosody | None = None) -> tuple[np.ndarray, PhoneTimes | None]:
    """Text -> (float32 mono at 16 kHz in the speaker's voice, phone times in seconds or None when not known).

    `prosody` varies the speaker's own rate, pitch and intonation for this utterance (None: the speaker's own)."""
    if speaker.engine == "espeak":
        if prosody is None:
            result = espeak.synthesize(text, speaker.voice, rate=speaker.rate, pitch=speaker.pitch)
        else:  # the same library call reports the phone events, so they time the varied speech exactly
            result = espeak.synthesize(text, speaker.voice, **espeak_args(prosody, speaker.rate, speaker.pitch))
        wav, sr = result.wav, result.sample_rate
        phones: PhoneTimes | None = [(p.symbol, p.start, p.end) for p in result.phones]
    else:
        wav, sr = _synthesize_cli(speaker, text, prosody)
        phones = None
    wav = prepare_waveform(wav, sr, sr)
    # Warp: reinterpret the rate as sr * warp, then resample to 16 kHz: frequencies scale by warp, times by 1 / warp.
    warped_sr = round(sr * speaker.warp)
    wav = resample(wav, warped_sr, SAMPLE_RATE)
    if phones is not None:
        phones = _warp_phones(phones, sr / warped_sr, len(wav) / SAMPLE_RATE)
    peak = float(np.abs(wav).max())
    return (wav / peak * 0.9 if peak > 0 else wav), phones


def _synthesize_cli(speaker: Speaker, text: str, prosody: Prosody | None = None) -> tuple[np.ndarray, int]:
    """flite / festival through their command lines -> (float32 (n, channels), sample rate)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        if speaker.engine == "flite":
            controls = (["--setf", f"duration_stretch={speaker.stretch}"] if prosody is None
                        else flite_args(prosody, speaker.stretch))
            cmd = ["flite", "-voice", speaker.voice, *controls, "-t", text, "-o", str(out)]
        elif speaker.engine == "festival":
            (Path(tmp) / "in.txt").write_text(text)
            evals = [] if prosody is None else festival_evals(prosody, speaker.voice)
            cmd = ["text2wave", "-eval", f"(voice_{speaker.voice})", *[a for e in evals for a in ("-eval", e)],
                   "-o", str(out), str(Path(tmp) / "in.txt")]
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
    prosody: Prosody | None = None


def _phones_path(wav_path: Path) -> Path:
    return wav_path.with_suffix(".phones.json")


def _run_job(job: Job) -> tuple[str, int, PhoneTimes | None]:
    """Synthesise one utterance unless it is already there; returns (path, samples at 16 kHz, phones or None)."""
    path = Path(job.path)
    sidecar = _phones_path(path) if job.speaker.engine == "espeak" else None
    if not path.is_file() or (sidecar is not None and not sidecar.is_file()):  # resumable: finished files are kept
        wav, phones = synthesize(job.speaker, job.text, job.prosody)
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


def plan_jobs(out: Path, hours: float, seed: int, engines: tuple[str, ...] = ENGINES,
              options: CorpusOptions | None = None) -> Iterator[tuple[str, Job]]:
    """(split, job) pairs; speakers take turns so every speaker gets a similar share.

    `engines` restricts the speakers (for quick builds); who is unseen is decided on the whole population.
    """
    options = options or CorpusOptions()
    population, held = make_population(seed, options.espeak_speakers)
    speakers = [s for s in population if s.engine in engines]
    if not speakers:
        raise CorpusError(f"no speakers for engines {engines}; choose from {ENGINES}")
    sentences = load_sentences()
    rng = np.random.default_rng([seed, 3])
    f = options.long_fraction
    avg_s = AVG_UTTERANCE_S if f == 0.0 else (1 - f) * AVG_UTTERANCE_S + f * _mean_long_s(sentences, options)
    n = max(len(speakers), round(hours * 3600 / avg_s))
    for i in range(n):
        speaker = speakers[i % len(speakers)]
        text = sentences[int(rng.integers(len(sentences)))]
        gain = float(10 ** (rng.uniform(-12, 0) / 20))  # level variety: -12..0 dB below peak 0.9
        split = "test" if speaker.name in held else ("valid" if rng.random() < 0.03 else "train")
        prosody = None
        if f > 0.0:  # own generators per utterance: the draws above stay those of the default plan
            long_rng = np.random.default_rng([seed, 6, i])
            if long_rng.random() < f:
                text = long_text(text, sentences, long_rng, options.max_sentences)
        if options.prosody:
            prosody = draw_prosody(np.random.default_rng([seed, 5, i]))
        yield split, Job(str(out / "wavs" / speaker.name / f"{i:06d}.wav"), speaker, text, gain, prosody)


def _mean_long_s(sentences: list[str], options: CorpusOptions, n: int = 2000) -> float:
    """The expected duration of a long utterance, from its words and sentences (to size the corpus; 14 s for
    max_sentences=4, against 15 s measured on 22 espeak-ng ones)."""
    rng = np.random.default_rng(0)
    texts = [long_text(sentences[int(rng.integers(len(sentences)))], sentences, rng, options.max_sentences)
             for _ in range(n)]
    mean_words = np.mean([len(s.split()) for s in sentences])
    speech = AVG_UTTERANCE_S * float(np.mean([len(t.split()) for t in texts]) / mean_words)
    return speech + SENTENCE_GAP_S * float(np.mean([len(re.split(r"(?<=[.!?])\s+", t)) - 1 for t in texts]))


def long_text(first: str, sentences: list[str], rng: np.random.Generator, max_sentences: int) -> str:
    """`first` and further random sentences, 2..max_sentences in all, until about a length drawn in LONG_SECONDS."""
    target_words = rng.uniform(*LONG_SECONDS) * WORDS_PER_S
    chosen = [first]
    while len(chosen) < 2 or (len(chosen) < max_sentences and sum(len(t.split()) for t in chosen) < target_words):
        chosen.append(sentences[int(rng.integers(len(sentences)))])
    return " ".join(chosen)


def build_corpus(out: str | os.PathLike, hours: float = 1.0, seed: int = 0, workers: int | None = None,
                 engines: tuple[str, ...] = ENGINES, splits: tuple[str, ...] = SPLITS,
                 options: CorpusOptions | None = None) -> Path:
    """Synthesise ``hours`` of speech into ``out`` and write the train/valid/test CutSets; returns ``out``.

    At least one utterance per speaker is made, so a tiny ``hours`` gives one per speaker of the chosen ``engines``.
    ``splits`` limits what is synthesised: ``("test",)`` rebuilds exactly the unseen-speaker test split of a corpus
    with the same hours, seed and ``options`` (to evaluate a bundle without its training data) in a fraction of the
    time. ``options``: a richer corpus (`CorpusOptions`; None is the default corpus).
    """
    out = Path(out)
    options = options or CorpusOptions()
    _check_engines(engines)
    if unknown := set(splits) - set(SPLITS):
        raise CorpusError(f"unknown splits {sorted(unknown)}; choose from {SPLITS}")
    speakers, held = make_population(seed, options.espeak_speakers)
    if "espeak" in engines:
        _check_variants(speakers[len(speakers) - (options.espeak_speakers - N_ESPEAK):])  # the extras come last
    _check_options(out, options)
    planned = [(split, job) for split, job in plan_jobs(out, hours, seed, engines, options) if split in splits]
    genders = {s.name: voice_gender(s.engine, s.voice) for s in speakers} if options.writes_gender else {}
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
            cut = cut_from_row(row, out_abs, out_abs, num_samples=samples, sampling_rate=SAMPLE_RATE)
            if genders:  # Lhotse leaves a None gender out of the manifest
                cut.supervisions[0].gender = genders[job.speaker.name]
            cuts[split].append(cut)
    for split, split_cuts_ in cuts.items():
        write_cuts(split_cuts(out, split), split_cuts_)
    rows = "".join(json.dumps(asdict(s) | {"unseen": s.name in held} | ({"gender": genders[s.name]} if genders else {}))
                   + "\n" for s in speakers)
    atomic_write(out / "speakers.jsonl", lambda tmp: Path(tmp).write_text(rows))
    return out


def _check_options(out: Path, options: CorpusOptions) -> None:
    """A corpus is resumed only with the options its files were made with (a default one has no options file)."""
    path = out / OPTIONS_FILE
    found = json.loads(path.read_text()) if path.is_file() else None
    if found is None and (out / "wavs").is_dir():
        found = CorpusOptions().synthesis()
    wanted = options.synthesis()
    if found is not None and found != wanted:
        raise CorpusError(f"{out} was built with {found}, not {wanted}: its files would not match; use another --out")
    if wanted != CorpusOptions().synthesis() and not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(wanted, sort_keys=True) + "\n"))


def _check_variants(extra: list[Speaker]) -> None:
    """An extra speaker's variant must exist: espeak-ng would silently speak the base voice instead."""
    missing = sorted({v for s in extra if variant_exists(v := s.voice.partition("+")[2]) is False})
    if missing:
        raise CorpusError(f"espeak-ng variants not found: {missing} (is espeak-ng-data complete?)")


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
