"""The engine behind `model.espeak`: libespeak-ng through ctypes, run in a helper process that forks once per call.

libespeak-ng reports a PHONEME event (espeak's ASCII mnemonic and the output sample where the phone starts) for every
phone it synthesises and a WORD event for every word; `Capture` holds what one synthesis delivered: the audio, the
phone events and the word events, as plain data.

Determinism. espeak-ng carries hidden state from one message to the next (the phase of its pitch flutter, the
waveform phase, automatic gain), so the same call gives slightly different audio and timings depending on what was
spoken before, and nothing in its API resets that state. Every synthesis therefore runs in a process forked from a
helper that has initialised the library and never spoken: the output is a pure function of the arguments (and equals
the `espeak-ng` command line's sample for sample). The helper is a small Python process started on first use (one
per process that uses `model.espeak`; a forked child starts its own); `model.espeak` serialises the calls with a
lock. A fork costs a few milliseconds per call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pickle
import signal
import struct
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from .errors import SpeechFlowError

LIBRARY_NAMES = ("libespeak-ng.so.1", "libespeak-ng.so")

# speak_lib.h constants (API revision 12)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000  # without it a missing espeak-ng-data directory calls exit() inside the library
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000  # keep the sentence pause at the end, as the espeak-ng command line does
_PARAM_RATE, _PARAM_PITCH, PARAM_RANGE, PARAM_INTONATION = 1, 3, 4, 9
_EE_OK, _EE_NOT_FOUND = 0, 2
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7


class EspeakError(SpeechFlowError):
    """libespeak-ng is missing or failed, or a voice / parameter it does not accept."""


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
class Capture:
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
        self.capture: Capture | None = None
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
              extra: tuple[tuple[int, int], ...] = ()) -> Capture:
        self.set_voice(voice, rate, pitch, extra)
        data = text.encode("utf-8")
        self.capture = cap = Capture(self.sample_rate)
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
         "importlib.import_module(sys.argv[2] + '.espeak_engine')._serve()\n")


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


class Helper:
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
              extra: tuple[tuple[int, int], ...] = ()) -> Capture:
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
