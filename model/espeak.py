"""espeak-ng through ctypes: speech with exact phone timings, and a phonemizer with the very same phone sequence.

libespeak-ng reports a PHONEME event (espeak's ASCII mnemonic and the output sample where the phone starts) for every
phone it synthesises, so the corpus gets exact alignments for free. `phonemize` runs the same synthesis and keeps the
symbols, so the phones the TTS model is trained on (`synthesize(...).phones`) and those it is given at inference
(`phonemize(...)`) come from one code path. (espeak's `TextToPhonemes` is not that path: it adds stress marks and
places pauses differently; on 300 fortunes its phones, stress stripped, equal the events' for 78 % only.)

Phones. Symbols are espeak's mnemonics without stress marks ("h", "@", "l", "oU", "3:", "aI", "t", ...); the set
depends on the accent's phoneme table. Silence keeps espeak's own pause phonemes, which all start with "_"
(`is_pause`): "_:" is the pause after a clause or sentence, "_" a short pause (espeak ends every clause with one),
"_!" and "_|" short breaks espeak puts in some contexts. The sequence always starts with a "_" for the silence
before espeak's first phone, so phones tile the audio from 0 to its end: each ends where the next starts, the last
at the end of the audio. A phone may span no audio (espeak folds some /l/ and /r/ into the neighbouring vowel, the
"_" closing a clause is often empty, and so is the final "_"); such phones are kept, so that the sequence depends
only on the text and the accent, never on rate, pitch or timing.

Determinism. Every synthesis runs in a process forked from a helper that has initialised the library and never
spoken (`model.espeak_engine`), so the output is a pure function of the arguments (and equals the `espeak-ng` command
line's sample for sample), whatever was spoken before; calls are serialised by a lock.
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading
from dataclasses import dataclass, field

import numpy as np

from .espeak_engine import PARAM_INTONATION, PARAM_RANGE, Capture, EspeakError, Helper

# Words per minute. From 450 on, espeak-ng speeds its output up afterwards (sonic), and the phone events no longer
# match the audio; 80 is espeakRATE_MINIMUM.
RATE_RANGE = (80, 449)
PITCH_RANGE = (0, 100)
PITCH_RANGE_RANGE = (0, 100)  # espeakRANGE: intonation range, 50 = the voice's own (the same samples as not setting it)
INTONATION_RANGE = (0, 7)  # espeakINTONATION: the tune table row (INTONATION_TYPES = 8); 0 keeps the voice's own
LEADING_SILENCE = "_"


class EspeakTextError(EspeakError, ValueError):
    """Text that espeak-ng cannot turn into speech (empty, whitespace, nothing pronounceable)."""


@dataclass(frozen=True)
class Phone:
    symbol: str
    start: float  # seconds
    end: float


@dataclass(frozen=True)
class Word:
    text: str  # the characters espeak read as this word ("$", "5" and "Dr" are words of their own)
    start: float  # start of its first non-pause phone, seconds
    end: float  # end of its last non-pause phone


@dataclass
class SynthResult:
    wav: np.ndarray  # float32 (n,) at sample_rate
    sample_rate: int
    phones: list[Phone]  # tile [0, duration]: each phone ends where the next starts
    words: list[Word] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.wav) / self.sample_rate


def is_pause(symbol: str) -> bool:
    """espeak's pause phonemes ("_", "_:", "_!", "_|") all start with an underscore."""
    return symbol.startswith("_")


# -------------------------------------------------------------------------------------- the helper of this process

_lock = threading.Lock()
_helper: Helper | None = None
_inherited: list[Helper] = []  # helpers of a parent process: never used, never collected (their pipes are shared)


def _after_fork_in_child() -> None:
    # The parent's helper and pipes must not be shared: a forked child starts its own helper. A fork while another
    # thread held the lock would also leave this copy locked forever.
    global _helper, _lock
    if _helper is not None:
        _inherited.append(_helper)
    _helper, _lock = None, threading.Lock()


def _shutdown() -> None:
    if _helper is not None:
        _helper.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown)


def _get_helper() -> Helper:
    """Called with `_lock` held."""
    global _helper
    if _helper is None or not _helper.alive():
        _helper = Helper()
    return _helper


# ------------------------------------------------------------------------------------------------------- public API


def initialize() -> int:
    """Start espeak-ng now (otherwise the first call does); returns its sample rate (22050).

    Raises `EspeakError` when libespeak-ng or its data are missing.
    """
    with _lock:
        return _get_helper().sample_rate


def synthesize(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, pitch_range: int | None = None,
               intonation: int | None = None) -> SynthResult:
    """Speak `text`: float32 audio at espeak's native rate, the phones tiling it, and word spans.

    `voice` is an espeak-ng voice or language name, optionally with a variant ("en-us+f3", "en-gb-scotland+Andy"; a
    variant is a file name under espeak-ng-data/voices/!v, case-sensitive: an unknown one, "en-us+Linda", is ignored
    by espeak-ng, an unknown voice is an error);
    `rate` in words per minute (80..449); `pitch` 0..100 (50 = the voice's normal pitch); `pitch_range` 0..100, the
    intonation's range (0 monotone, 50 the voice's own); `intonation` 1..7 another row of espeak's tune table (how
    clauses and questions rise and fall). None (or 0 for `intonation`) leaves them as the voice has them.
    """
    extra = []
    if pitch_range is not None:
        _check_range("pitch_range", pitch_range, PITCH_RANGE_RANGE)
        extra.append((PARAM_RANGE, int(pitch_range)))
    if intonation is not None:
        _check_range("intonation", intonation, INTONATION_RANGE)
        if intonation:  # espeak-ng takes 0 as "keep the voice's tune"
            extra.append((PARAM_INTONATION, int(intonation)))
    cap = _run(text, voice, rate, pitch, tuple(extra))
    pcm = np.frombuffer(b"".join(cap.chunks), dtype=np.int16)
    marks = _tile(cap.phones, len(pcm))
    sr = cap.sample_rate
    phones = [Phone(symbol, start / sr, end / sr) for symbol, start, end in marks]
    return SynthResult(pcm.astype(np.float32) / 32768.0, sr, phones, _words(text, cap.words, marks, sr))


def phonemize(text: str, voice: str = "en-us") -> list[str]:
    """The phone symbols `synthesize(text, voice, ...)` labels its audio with, at any rate or pitch, pauses included."""
    return [phone.symbol for phone in synthesize(text, voice).phones]


def phonemize_words(text: str, voice: str = "en-us") -> tuple[list[str], list[int]]:
    """`phonemize`'s phones and, for each, the 0-based character offset in ``text`` where the word it voices starts
    (-1 for pauses and phones before espeak's first word event), from the same synthesis `synthesize` runs."""
    cap = _run(text, voice, 175, 50)  # synthesize's defaults: the phone sequence does not depend on them anyway
    n_samples = sum(len(chunk) for chunk in cap.chunks) // 2
    symbols = [symbol for symbol, _, _ in _tile(cap.phones, n_samples)]
    owners = [-1] * len(symbols)
    for position, length, k in cap.words:
        if length <= 0:
            continue  # espeak's empty words (after an abbreviation's full stop) voice nothing
        for i in range(k + 1, len(symbols)):  # +1: the leading silence comes first
            owners[i] = position - 1
    return symbols, [-1 if is_pause(s) else owner for s, owner in zip(symbols, owners, strict=True)]


def _run(text: str, voice: str, rate: int, pitch: int, extra: tuple[tuple[int, int], ...] = ()) -> Capture:
    text = _check_text(text)
    _check_range("rate", rate, RATE_RANGE)
    _check_range("pitch", pitch, PITCH_RANGE)
    if not isinstance(voice, str) or not voice.strip() or "\0" in voice:
        raise EspeakError(f"voice must be an espeak-ng voice name, got {voice!r}")
    with _lock:
        cap = _get_helper().synth(text, voice, int(rate), int(pitch), extra)
    if all(is_pause(symbol) for symbol, _ in cap.phones) or not cap.chunks:
        raise EspeakTextError(f"espeak-ng found nothing to pronounce in {text[:50]!r}")
    return cap


def _check_text(text: str) -> str:
    if not isinstance(text, str):
        raise EspeakTextError(f"text must be a string, got {type(text).__name__}")
    text = text.replace("\0", " ")  # a NUL would silently end the C string
    if not text.strip():
        raise EspeakTextError("text is empty or only whitespace")
    return text


def _check_range(name: str, value: int, bounds: tuple[int, int]) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not bounds[0] <= value <= bounds[1]:
        raise EspeakError(f"{name} must be an integer in {bounds[0]}..{bounds[1]}, got {value!r}")


def _tile(events: list[tuple[str, int]], n_samples: int) -> list[tuple[str, int, int]]:
    """Phone events -> (symbol, start, end) in samples, led by the leading silence, gap-free over [0, n_samples]."""
    marks = [(LEADING_SILENCE, 0), *events]
    starts = [start for _, start in marks]
    if any(b < a for a, b in itertools.pairwise(starts)) or starts[-1] > n_samples:
        raise EspeakError("espeak-ng phone events are out of order: this binding does not match the library")
    return [(symbol, start, end) for (symbol, start), end in zip(marks, [*starts[1:], n_samples], strict=True)]


def _words(text: str, word_events: list[tuple[int, int, int]], marks: list[tuple[str, int, int]],
           sr: int) -> list[Word]:
    """A word spans its non-pause phones: those whose events came after its WORD event and before the next one."""
    firsts = [k + 1 for _, _, k in word_events]  # +1: marks start with the leading silence
    words = []
    for (position, length, _), first, last in zip(word_events, firsts, [*firsts[1:], len(marks)], strict=True):
        own = [(start, end) for symbol, start, end in marks[first:last] if not is_pause(symbol)]
        if length > 0 and own:  # espeak also reports empty words (e.g. after an abbreviation's full stop)
            words.append(Word(text[position - 1:position - 1 + length], own[0][0] / sr, own[-1][1] / sr))
    return words
