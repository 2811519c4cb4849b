"""Streamed audio: an encoder that turns chunks of speech into the bytes of one growing file, and the SSE framing of
OpenAI's speech stream (``speech.audio.delta`` events with base64 audio, then ``speech.audio.done``).

pcm is raw int16; wav gets a header whose sizes say "unknown" (0xFFFFFFFF, what streaming WAV players expect) and
then raw frames; mp3, opus and ogg (Vorbis) run libsndfile's encoder on an in-memory sink and hand over whatever it
has appended after each chunk (Vorbis buffers, so its bytes come in lumps). Those encoders only append, except that
the mp3 encoder opens with an empty frame that becomes its Xing/Info tag (frame count, length) at the end: bytes
already sent are not sent again, so a streamed mp3 keeps the empty frame (decoders play it as 36 ms of silence)
and is coded at a constant bitrate, so that players can tell its length from its size. flac does not stream (its
header needs the total length): STREAMED_FORMATS.
"""

from __future__ import annotations

import base64
import io
import json
import struct

import numpy as np
import soundfile as sf

from model.audio import encode_audio

_SF_STREAMS = {"mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS"), "ogg": ("OGG", "VORBIS")}
STREAMED_FORMATS = ("pcm", "wav", *_SF_STREAMS)
MP3_STREAM_LEVEL = 0.8  # libsndfile compression level of constant-bitrate mp3 streams (0 = best): ~40 kbit/s at 16 kHz


class _Sink(io.RawIOBase):
    """A seekable in-memory file that remembers how much of it has been handed over."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.pos = 0
        self.sent = 0

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        b = bytes(b)
        self.data[self.pos : self.pos + len(b)] = b
        self.pos += len(b)
        return len(b)

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        end = len(self.data) if n < 0 else self.pos + n
        out = bytes(self.data[self.pos : end])
        self.pos += len(out)
        return out

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: len(self.data)}[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def take(self) -> bytes:
        """What was appended since the last take (rewrites of bytes already taken are dropped)."""
        out = bytes(self.data[self.sent :])
        self.sent = len(self.data)
        return out


class StreamEncoder:
    """Chunks (n,) of float speech at ``sample_rate`` -> successive byte strings whose concatenation is one file."""

    def __init__(self, fmt: str, sample_rate: int) -> None:
        self.fmt = fmt
        self.sample_rate = sample_rate
        self._header_sent = False  # wav only
        self._sink: _Sink | None = None
        self._file: sf.SoundFile | None = None
        if fmt in _SF_STREAMS:
            container, subtype = _SF_STREAMS[fmt]
            self._sink = _Sink()
            # mp3 at a constant bitrate: without the tag's frame count (see the module note) the size tells the length
            mp3 = {"bitrate_mode": "CONSTANT", "compression_level": MP3_STREAM_LEVEL} if fmt == "mp3" else {}
            self._file = sf.SoundFile(self._sink, "w", sample_rate, 1, format=container, subtype=subtype, **mp3)

    def push(self, chunk: np.ndarray) -> bytes:
        if self._file is not None and self._sink is not None:
            self._file.write(np.clip(np.asarray(chunk, np.float32), -1.0, 1.0))
            return self._sink.take()
        return self._wav_header() + (encode_audio(chunk, self.sample_rate, "pcm") if len(chunk) else b"")

    def close(self) -> bytes:
        if self._file is not None and self._sink is not None:
            self._file.close()
            return self._sink.take()
        return self._wav_header()  # nothing pushed: still a (header-only) wav file

    def _wav_header(self) -> bytes:
        """The streaming WAV header, once, before the first samples of a wav stream (nothing for pcm)."""
        if self.fmt != "wav" or self._header_sent:
            return b""
        self._header_sent = True
        return wav_stream_header(self.sample_rate)


def wav_stream_header(sample_rate: int, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV header for a stream of unknown length (RIFF and data sizes 0xFFFFFFFF)."""
    unknown = 0xFFFFFFFF
    block = 2 * channels
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels,
            sample_rate, sample_rate * block, block, 16) + b"data" + struct.pack("<I", unknown))


def sse_event(payload: dict) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def sse_delta(piece: bytes) -> bytes:
    """Encoded audio -> one ``speech.audio.delta`` event (base64)."""
    return sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode("ascii")})


def sse_done(input_chars: int, audio_seconds: float) -> bytes:
    """The closing event. OpenAI's carries token usage; this server has no tokens (0, so clients that read the
    fields still work) and says what it does count: characters in, audio seconds out."""
    return sse_event({"type": "speech.audio.done",
                      "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
                                "input_characters": input_chars, "audio_seconds": round(audio_seconds, 3)}})


def sse_error(message: str, code: str) -> bytes:
    return sse_event({"type": "error", "error": {"message": message, "type": "server_error", "code": code}})
