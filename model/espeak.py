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

Determinism. espeak-ng carries hidden state from one message to the next (the phase of its pitch flutter, the
waveform phase, automatic gain), so the same call gives slightly different audio and timings depending on what was
spoken before, and nothing in its API resets that state. Every synthesis therefore runs in a process forked from a
helper that has initialised the library and never spoken: the output is a pure function of the arguments (and equals
the `espeak-ng` command line's sample for sample). The helper is a small Python process started on first use (one
per process that uses this module; a forked child starts its own); calls are serialised by a lock. A fork costs a few
milliseconds per call.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import itertools
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from .errors import SpeechFlowError

LIBRARY_NAMES = ("libespeak-ng.so.1", "libespeak-ng.so")
# Words per minute. From 450 on, espeak-ng speeds its output up afterwards (sonic), and the phone events no longer
# match the audio; 80 is espeakRATE_MINIMUM.
RATE_RANGE = (80, 449)
PITCH_RANGE = (0, 100)
PITCH_RANGE_RANGE = (0, 100)  # espeakRANGE: intonation range, 50 = the voice's own (the same samples as not setting it)
INTONATION_RANGE = (0, 7)  # espeakINTONATION: the tune table row (INTONATION_TYPES = 8); 0 keeps the voice's own
LEADING_SILENCE = "_"

# speak_lib.h constants (API revision 12)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000  # without it a missing espeak-ng-data directory calls exit() inside the library
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000  # keep the sentence pause at the end, as the espeak-ng command line does
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE, _PARAM_INTONATION = 1, 3, 4, 9
_EE_OK, _EE_NOT_FOUND = 0, 2
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7


class EspeakError(SpeechFlowError):
    """libespeak-ng is missing or failed, or a voice / parameter it does not accept."""


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


# ------------------------------------------------------------------------------------------------------ ctypes layer


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_void_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """espeak_EVENT. On x86_64: six 4-byte ints (0..23), user_data pointer at 24, the 8-byte id union at 32; 40 bytes.

    `sample` is the output sample index from the start of the message (`audio_position` is the same in whole ms).
    """

    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


class _Voice(ctypes.Structure):
    """espeak_VOICE, used only as a selector for espeak_SetVoiceByProperties."""

    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class _Capture:
    """What one espeak_Synth call delivered through the callback (plain data: it crosses a pipe)."""

    sample_rate: int
    chunks: list[bytes] = field(default_factory=list)  # int16 audio
    phones: list[tuple[str, int]] = field(default_factory=list)  # (mnemonic, start sample)
    words: list[tuple[int, int, int]] = field(default_factory=list)  # (1-based char position, length, phone index)
    error: str | None = None


def _mnemonic(raw: bytes) -> str:
    # NUL-terminated unless all 8 bytes are used (ctypes already cuts at the first NUL)
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


class _Engine:
    """The initialised library (only ever used by one thread of one process at a time)."""

    def __init__(self) -> None:
        self.lib = _load_library()
        _declare(self.lib)
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT)
        if rate <= 0:
            raise EspeakError("espeak_Initialize failed: is espeak-ng-data installed? (apt-get install espeak-ng-data)")
        self.sample_rate = int(rate)
        self.capture: _Capture | None = None
        self._callback = _Callback(self._on_synth)  # kept referenced: the library holds only the raw pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav: Any, n: int, events: Any) -> int:
        cap = self.capture
        if cap is None:
            return 1
        try:
            if wav and n > 0:
                cap.chunks.append(ctypes.string_at(wav, 2 * n))
            i = 0
            while (ev := events[i]).type != _EVENT_LIST_TERMINATED:
                if ev.type == _EVENT_PHONEME:
                    cap.phones.append((_mnemonic(ev.id.string), ev.sample))
                elif ev.type == _EVENT_WORD:
                    cap.words.append((ev.text_position, ev.length, len(cap.phones)))
                i += 1
        except Exception as e:  # an exception must not unwind through C: abort synthesis, report it after
            cap.error = f"{type(e).__name__}: {e}"
            return 1
        return 0

    def set_voice(self, voice: str, rate: int, pitch: int, extra: tuple[tuple[int, int], ...] = ()) -> None:
        status = self.lib.espeak_SetVoiceByName(voice.encode())
        if status == _EE_NOT_FOUND:  # a language name ("en-gb+m3"), which the espeak-ng command line also accepts
            status = self.lib.espeak_SetVoiceByProperties(ctypes.byref(_Voice(languages=voice.encode())))
        if status == _EE_NOT_FOUND:
            raise EspeakError(f"unknown espeak-ng voice {voice!r} (see `espeak-ng --voices`; variants: 'en-us+f3')")
        if status != _EE_OK:
            raise EspeakError(f"selecting espeak-ng voice {voice!r} failed with status {status}")
        for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), *extra):
            if self.lib.espeak_SetParameter(param, value, 0) != _EE_OK:
                raise EspeakError(f"espeak_SetParameter({param}, {value}) failed")

    def synth(self, text: str, voice: str, rate: int, pitch: int,
              extra: tuple[tuple[int, int], ...] = ()) -> _Capture:
        self.set_voice(voice, rate, pitch, extra)
        data = text.encode("utf-8")
        self.capture = cap = _Capture(self.sample_rate)
        try:
            status = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE,
                                           None, None)
        finally:
            self.capture = None
        if cap.error is not None:
            raise EspeakError(f"espeak-ng callback failed: {cap.error}")
        if status != _EE_OK:
            raise EspeakError(f"espeak_Synth failed with status {status}")
        return cap


def _load_library() -> ctypes.CDLL:
    for name in filter(None, [*LIBRARY_NAMES, ctypes.util.find_library("espeak-ng")]):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise EspeakError("libespeak-ng not found: apt-get install libespeak-ng1 espeak-ng-data")


def _declare(lib: ctypes.CDLL) -> None:
    """Prototypes from speak_lib.h (ctypes would otherwise pass 64-bit pointers and size_t as C ints)."""
    c_int, c_uint = ctypes.c_int, ctypes.c_uint
    lib.espeak_Initialize.argtypes = [c_int, c_int, ctypes.c_char_p, c_int]
    lib.espeak_SetSynthCallback.argtypes = [_Callback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByProperties.argtypes = [ctypes.POINTER(_Voice)]
    lib.espeak_SetParameter.argtypes = [c_int, c_int, c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, c_uint, c_int, c_uint, c_uint,
                                 ctypes.POINTER(c_uint), ctypes.c_void_p]


# ------------------------------------------------------------------------------- helper process: one fork per call

# Runs the helper without executing the package's __init__ (which imports torch): a bare package module whose
# __path__ points at this directory is enough for `from .errors import ...` to work.
_BOOT = ("import importlib, sys, types\n"
         "pkg = types.ModuleType(sys.argv[2]); pkg.__path__ = [sys.argv[1]]; sys.modules[sys.argv[2]] = pkg\n"
         "importlib.import_module(sys.argv[2] + '.espeak')._serve()\n")


def _send(stream: BinaryIO, obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _recv(stream: BinaryIO) -> Any:
    """The next message, or None at end of stream."""
    head = stream.read(8)
    if len(head) < 8:
        return None
    (size,) = struct.unpack("<Q", head)
    data = stream.read(size)
    return pickle.loads(data) if len(data) == size else None


def _serve() -> None:
    """Helper main loop: initialise espeak-ng once, then answer each request from a freshly forked child."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the helper ends (it closes stdin)
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything the C library prints goes to stderr, never into the reply stream
    try:
        engine = _Engine()
    except EspeakError as e:
        _send(replies, ("error", str(e)))
        return
    _send(replies, ("ready", engine.sample_rate))
    while (request := _recv(requests)) is not None:
        _send(replies, _in_child(engine, *request))


def _in_child(engine: _Engine, text: str, voice: str, rate: int, pitch: int,
              extra: tuple[tuple[int, int], ...] = ()) -> tuple[str, Any]:
    """Synthesise in a child forked from the never-used engine, so no state leaks from one call into the next."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: synthesise, send the result, exit without running any cleanup of the parent's objects
        os.close(read_fd)
        try:
            reply: tuple[str, Any] = ("ok", engine.synth(text, voice, rate, pitch, extra))
        except Exception as e:
            reply = ("error", str(e) if isinstance(e, EspeakError) else f"{type(e).__name__}: {e}")
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        return "error", f"espeak-ng crashed while speaking {text[:50]!r} (wait status {status})"
    return pickle.loads(data)


class _Helper:
    """The parent's end of the helper process."""

    def __init__(self) -> None:
        package_dir = os.path.dirname(os.path.abspath(__file__))
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", _BOOT, package_dir, __name__.rpartition(".")[0]],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            raise EspeakError(f"could not start the espeak-ng helper process: {e}") from e
        kind, value = self._reply()
        if kind != "ready":
            self.close()
            raise EspeakError(value)
        self.sample_rate: int = value

    def _reply(self) -> tuple[str, Any]:
        reply = _recv(self.proc.stdout)
        if reply is None:
            raise EspeakError(f"the espeak-ng helper process exited (status {self.proc.poll()})")
        return reply

    def synth(self, text: str, voice: str, rate: int, pitch: int,
              extra: tuple[tuple[int, int], ...] = ()) -> _Capture:
        try:
            _send(self.proc.stdin, (text, voice, rate, pitch, extra))
            kind, value = self._reply()
        except (BrokenPipeError, ValueError) as e:
            self.proc.kill()
            raise EspeakError(f"the espeak-ng helper process is gone: {e}") from e
        except BaseException:  # e.g. KeyboardInterrupt mid-reply: the stream is out of step, start afresh next time
            self.proc.kill()
            raise
        if kind != "ok":
            raise EspeakError(value)
        return value

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """Closing stdin ends the helper's loop."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        finally:
            self.proc.stdout.close()


_lock = threading.Lock()
_helper: _Helper | None = None
_inherited: list[_Helper] = []  # helpers of a parent process: never used, never collected (their pipes are shared)


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


def _get_helper() -> _Helper:
    """Called with `_lock` held."""
    global _helper
    if _helper is None or not _helper.alive():
        _helper = _Helper()
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
        extra.append((_PARAM_RANGE, int(pitch_range)))
    if intonation is not None:
        _check_range("intonation", intonation, INTONATION_RANGE)
        if intonation:  # espeak-ng takes 0 as "keep the voice's tune"
            extra.append((_PARAM_INTONATION, int(intonation)))
    cap = _run(text, voice, rate, pitch, tuple(extra))
    pcm = np.frombuffer(b"".join(cap.chunks), dtype=np.int16)
    marks = _tile(cap.phones, len(pcm))
    sr = cap.sample_rate
    phones = [Phone(symbol, start / sr, end / sr) for symbol, start, end in marks]
    return SynthResult(pcm.astype(np.float32) / 32768.0, sr, phones, _words(text, cap.words, marks, sr))


def phonemize(text: str, voice: str = "en-us") -> list[str]:
    """The phone symbols `synthesize(text, voice, ...)` labels its audio with, at any rate or pitch, pauses included."""
    return [phone.symbol for phone in synthesize(text, voice).phones]


def _run(text: str, voice: str, rate: int, pitch: int, extra: tuple[tuple[int, int], ...] = ()) -> _Capture:
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
