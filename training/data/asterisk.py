"""Real speech from Debian's Asterisk prompt packages: studio recordings of professional speakers, with transcripts.

What is read (nothing is downloaded; install the Debian packages first):

- ``asterisk-core-sounds-{en,es,fr,it,ru}-g722``: raw G.722 at 64 kbit/s (16 kHz, band-limited to about 7 kHz, no
  container) in ``/usr/share/asterisk/sounds/<lang>_<REGION>_<f|m>_<Voice>/`` (subfolders ``digits``, ``letters``,
  ``phonetic``, ``dictate``, ``followme``, ``silence``). Transcripts come from the plain packages
  ``asterisk-core-sounds-<lang>`` as ``/usr/share/doc/asterisk-core-sounds-<lang>/core-sounds-<lang>.txt.gz``: one
  ``<id>: <text>`` line per prompt, ``<id>`` the path under the voice folder without extension (``digits/5``),
  ``;`` comments; tones and sound effects are bracketed (``[ascending tones]``), silences parenthesised
  (``(1 second of silence)``), and a bracketed symbol may follow the spoken word (``letters/at: at [@]``).
- ``asterisk-prompt-es-co`` and ``asterisk-prompt-fr-armelle``: raw GSM 6.10 at 8 kHz (33 bytes per 20 ms) in
  ``/usr/share/asterisk/sounds/{es,fr}/``, no transcripts. They conflict (dpkg) with the plain ``-es``/``-fr``
  packages that hold the es/fr transcript files: take those from the .deb (``apt-get download
  asterisk-core-sounds-es && dpkg-deb -x asterisk-core-sounds-es_*.deb DIR``) and pass ``DIR/usr/share/doc`` in
  ``doc_dirs``.
- ``asterisk-prompt-it-menardi-wav``: 16-bit PCM WAV at 8 kHz in ``/usr/share/asterisk/sounds/it_IT_f_Menardi/``,
  no transcripts of its own (its wording differs from ``core-sounds-it``).
- ``asterisk-moh-opsound-g722`` (or ``-wav``, 8 kHz): five music-on-hold tracks in ``/usr/share/asterisk/moh/``, real
  music for a noise kind.

The version-neutral symlinks (``sounds/en``, ``sounds/it`` ...) point wherever dpkg's alternatives say (``it`` is
Menardi once her package is installed), so every package is read from its own voice folder.

Decoding goes through PyAV (FFmpeg's ``g722`` and ``gsm`` demuxers and decoders), WAV through soundfile; the
corpus itself (16 kHz FLAC, CutSets, splits) is `training.data.real_corpus`'s.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

from model.audio import SAMPLE_RATE, resample
from model.errors import AudioError

log = logging.getLogger(__name__)

SOUNDS_DIR = Path("/usr/share/asterisk/sounds")
MOH_DIR = Path("/usr/share/asterisk/moh")
DOC_DIR = Path("/usr/share/doc")

Codec = Literal["g722", "gsm", "wav"]
CODEC_SAMPLE_RATE: dict[str, int] = {"g722": 16000, "gsm": 8000, "wav": 8000}
CODEC_BANDWIDTH_HZ: dict[str, int] = {"g722": 7000, "gsm": 4000, "wav": 4000}  # what the audio can hold
G722_BYTES_PER_S = 8000  # 64 kbit/s
GSM_FRAME_BYTES, GSM_FRAME_SAMPLES = 33, 160  # GSM 6.10 full rate: 33 bytes per 20 ms at 8 kHz

# Prompts that are not speech in any package: tones, a sound effect and the silence folder (bracketed or
# parenthesised in the transcript files; listed here for the packages that have no transcripts).
NON_SPEECH_IDS = frozenset({"beep", "beeperr", "ascending-2tone", "descending-2tone", "confbridge-join",
                            "confbridge-leave", "tt-monkeys"})
NON_SPEECH_DIRS = frozenset({"silence"})

TEST_MUSIC = ("reno_project-system",)  # held out of the training noise: an artist absent from the other tracks
MIN_DURATION = 0.5  # s: shorter prompts are single syllables or clipped letters, of little use as training audio


@dataclass(frozen=True)
class Package:
    """One Debian package of prompts by one speaker."""

    name: str  # the Debian package with the audio
    folder: str  # under SOUNDS_DIR
    codec: Codec
    speaker: str
    gender: str
    language: str  # BCP 47
    transcripts: str | None = None  # the plain package whose doc folder holds core-sounds-<lang>.txt.gz

    @property
    def ext(self) -> str:
        return f".{self.codec}"

    @property
    def sample_rate(self) -> int:
        return CODEC_SAMPLE_RATE[self.codec]

    @property
    def transcript_file(self) -> str | None:
        return f"{self.transcripts}/{self.transcripts.replace('asterisk-', '')}.txt.gz" if self.transcripts else None


PACKAGES: tuple[Package, ...] = (
    Package("asterisk-core-sounds-en-g722", "en_US_f_Allison", "g722", "allison-smith", "female", "en-US",
            "asterisk-core-sounds-en"),
    Package("asterisk-core-sounds-es-g722", "es_MX_f_Allison", "g722", "allison-smith", "female", "es-MX",
            "asterisk-core-sounds-es"),
    Package("asterisk-core-sounds-fr-g722", "fr_CA_f_June", "g722", "june-wallack", "female", "fr-CA",
            "asterisk-core-sounds-fr"),
    Package("asterisk-core-sounds-it-g722", "it_IT_m_Carlo", "g722", "carlo-flora", "male", "it-IT",
            "asterisk-core-sounds-it"),
    # credited to Maxim Topal / ivrvoice.ru; the speaker is not named
    Package("asterisk-core-sounds-ru-g722", "ru_RU_f_IvrvoiceRU", "g722", "ivrvoice-ru", "female", "ru-RU",
            "asterisk-core-sounds-ru"),
    Package("asterisk-prompt-es-co", "es", "gsm", "july-jimenez", "female", "es-CO"),  # Avatar Ltda., Colombia
    Package("asterisk-prompt-fr-armelle", "fr", "gsm", "armelle-desjardins", "female", "fr-FR"),  # aclap.com
    # Marco Menardi and Paola Dal Zot; the folder name says a female voice
    Package("asterisk-prompt-it-menardi-wav", "it_IT_f_Menardi", "wav", "menardi", "female", "it-IT"),
)


@dataclass
class PromptAudio:
    """One spoken prompt: ``id`` is unique across packages (``<speaker>_<language>_<prompt with / as ->``)."""

    id: str
    path: Path
    package: str
    prompt: str  # the id in the package's transcript file: path under the voice folder, no extension
    speaker: str
    gender: str
    language: str
    codec: Codec
    sample_rate: int  # of the source file
    duration: float  # s
    transcript: str | None


# ------------------------------------------------------------------------------------------------------ transcripts

_BRACKETED = re.compile(r"\[[^\]]*\]")
_NOTE = re.compile(r"\([^)]*\)")
_WHOLLY_BRACKETED = re.compile(r"^\s*(\[[^\]]*\]|\([^)]*\)|<[^>]*>)\s*$")


def read_transcript_file(path: str | os.PathLike) -> dict[str, str]:
    """``<id>: <text>`` lines (``;`` comments, blank lines skipped; gzip or plain; a BOM is dropped) -> id -> text."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    texts: dict[str, str] = {}
    with opener(path, "rt", encoding="utf-8-sig") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(";"):
                continue
            key, sep, text = line.partition(":")
            key, text = key.strip(), text.strip()
            if not sep or not key:
                continue
            if text.startswith(f"{key}:"):  # core-sounds-ru repeats the id once ("conf-adminmenu: conf-adminmenu: ...")
                text = text[len(key) + 1 :].strip()
            texts[key] = text
    return texts


def clean_transcript(text: str) -> tuple[bool, str | None]:
    """-> (is speech, the spoken words or None when uncertain).

    A wholly bracketed, parenthesised or angle-bracketed entry is a tone, an effect or a silence (``[ascending
    tones]``, ``(1 second of silence)``, ``<beep ascending>``). Inside a sentence, parentheses are the translators'
    notes (``IAX (note: does not say "2")``, ``(emphase)``, ``(in inglese)``) and bracketed symbols follow the
    spoken word (``at [@]``): both are dropped. Bracketed words (core-sounds-it's ``Spiacente, [quello] non è
    ...``) may or may not be spoken: such a prompt is speech without a transcript.
    """
    if not text.strip() or _WHOLLY_BRACKETED.match(text):
        return False, None
    text = _NOTE.sub(" ", text)
    if any(re.search(r"\w", g[1:-1]) for g in _BRACKETED.findall(text)):
        return True, None
    words = re.sub(r"\s+([.,;:!?])", r"\1", " ".join(_BRACKETED.sub(" ", text).split()))
    return True, words or None


def lookup(texts: dict[str, str], prompt: str) -> str | None:
    """The prompt's line, matching case-insensitively when the exact id is absent (``digits/1F`` vs ``1f``)."""
    if prompt in texts:
        return texts[prompt]
    folded = {k.casefold(): v for k, v in texts.items()}
    return folded.get(prompt.casefold())


def find_transcripts(package: Package, doc_dirs: Sequence[str | os.PathLike] = (DOC_DIR,)) -> dict[str, str] | None:
    """The package's transcripts from the first of ``doc_dirs`` that holds its text file; None when none does."""
    if package.transcript_file is None:
        return None
    for doc in doc_dirs:
        path = Path(doc) / package.transcript_file
        if path.is_file():
            return read_transcript_file(path)
    log.warning("%s: no transcripts (%s not found in %s)", package.name, package.transcript_file,
                ", ".join(map(str, doc_dirs)))
    return None


# ---------------------------------------------------------------------------------------------------------- decoding


def file_duration(path: str | os.PathLike, codec: Codec) -> float:
    """Seconds of audio, from the file size for the raw codecs (no decoding) and the header for WAV."""
    if codec == "g722":
        return os.path.getsize(path) / G722_BYTES_PER_S
    if codec == "gsm":
        return os.path.getsize(path) // GSM_FRAME_BYTES * GSM_FRAME_SAMPLES / CODEC_SAMPLE_RATE["gsm"]
    return float(sf.info(str(path)).duration)


def decode(path: str | os.PathLike, codec: Codec) -> tuple[np.ndarray, int]:
    """A prompt file -> (float32 mono (n,) in [-1, 1), its sample rate). Raw G.722 / GSM go through PyAV."""
    if codec == "wav":
        try:
            data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        except (RuntimeError, OSError) as e:
            raise AudioError(f"cannot read {path}: {e}") from e
        return np.ascontiguousarray(data.mean(axis=1, dtype=np.float32)), int(sr)
    import av  # PyAV bundles FFmpeg; imported here so listing prompts does not need it

    try:
        with av.open(str(path), format=codec) as container:
            stream = container.streams.audio[0]
            sr = int(stream.codec_context.sample_rate)
            chunks = []
            for frame in container.decode(stream):
                x = frame.to_ndarray()  # planar: (channels, n); packed: (1, n * channels)
                if not frame.format.is_planar:
                    x = x.reshape(-1, len(frame.layout.channels)).T
                chunks.append(x.mean(axis=0) if x.shape[0] > 1 else x[0])
    except (av.error.FFmpegError, IndexError) as e:
        raise AudioError(f"cannot decode {path} as {codec}: {e}") from e
    if not chunks:
        raise AudioError(f"{path}: no audio")
    wav = np.concatenate(chunks)
    if np.issubdtype(wav.dtype, np.integer):
        wav = wav.astype(np.float32) / float(-np.iinfo(wav.dtype).min)
    return np.ascontiguousarray(wav, dtype=np.float32), sr


def load(path: str | os.PathLike, codec: Codec, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A prompt file -> float32 mono (n,) at ``sample_rate``."""
    wav, sr = decode(path, codec)
    return resample(wav, sr, sample_rate)


# ------------------------------------------------------------------------------------------------------- listing


def _is_non_speech(prompt: str) -> bool:
    parts = prompt.split("/")
    return parts[0] in NON_SPEECH_DIRS or parts[-1] in NON_SPEECH_IDS


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def list_utterances(
    packages: Iterable[Package] = PACKAGES,
    sounds_dir: str | os.PathLike = SOUNDS_DIR,
    doc_dirs: Sequence[str | os.PathLike] = (DOC_DIR,),
    min_duration: float = MIN_DURATION,
) -> list[PromptAudio]:
    """The spoken prompts of the installed ``packages`` (a missing package is skipped with a warning), sorted.

    Left out: tones, effects and silences (by transcript and by name), prompts shorter than ``min_duration``, and
    byte-identical copies within a package (asterisk-prompt-es-co ships a few twice under two names). A prompt
    absent from its package's transcript file is kept without a transcript.
    """
    out: list[PromptAudio] = []
    for pkg in packages:
        root = Path(sounds_dir) / pkg.folder
        if not root.is_dir():
            log.warning("%s: not installed (no %s)", pkg.name, root)
            continue
        texts = find_transcripts(pkg, doc_dirs)
        seen: set[str] = set()
        skipped = {"non-speech": 0, "short": 0, "duplicate": 0}
        files = sorted((p for p in root.rglob(f"*{pkg.ext}") if p.is_file()), key=lambda p: p.as_posix())
        for path in files:
            prompt = path.relative_to(root).with_suffix("").as_posix()
            line = lookup(texts, prompt) if texts is not None else None
            speech, text = clean_transcript(line) if line is not None else (True, None)
            if not speech or _is_non_speech(prompt):
                skipped["non-speech"] += 1
                continue
            duration = file_duration(path, pkg.codec)
            if duration < min_duration:
                skipped["short"] += 1
                continue
            digest = _digest(path)
            if digest in seen:
                skipped["duplicate"] += 1
                continue
            seen.add(digest)
            uid = f"{pkg.speaker}_{pkg.language}_{prompt.replace('/', '-')}"
            out.append(PromptAudio(uid, path, pkg.name, prompt, pkg.speaker, pkg.gender, pkg.language, pkg.codec,
                                 pkg.sample_rate, round(duration, 6), text))
        log.info("%s: %d prompts (skipped %s)", pkg.name, sum(u.package == pkg.name for u in out), skipped)
    return out


def music_files(moh_dir: str | os.PathLike = MOH_DIR) -> dict[str, Path]:
    """Music-on-hold tracks by name, the 16 kHz G.722 file where there is one, else the 8 kHz WAV."""
    tracks: dict[str, Path] = {}
    for ext in (".wav", ".g722"):  # G.722 last: it replaces the WAV of the same track
        for path in sorted(Path(moh_dir).glob(f"*{ext}")):
            tracks[path.stem] = path
    return dict(sorted(tracks.items()))


def load_music(moh_dir: str | os.PathLike = MOH_DIR, names: Iterable[str] | None = None) -> tuple[np.ndarray, ...]:
    """Music tracks (all, or those in ``names``) as float32 (n,) at 16 kHz: the clips of a "music" noise kind."""
    files = music_files(moh_dir)
    wanted = files if names is None else {k: files[k] for k in names if k in files}
    return tuple(load(p, "g722" if p.suffix == ".g722" else "wav") for p in wanted.values())
