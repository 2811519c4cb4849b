"""Streamed audio: an encoder that turns chunks of speech into the bytes of one growing file, and the SSE framing of
OpenAI's speech stream (``speech.audio.delta`` events with base64 audio, then ``speech.audio.done``).

pcm is raw int16; wav gets a header whose sizes say "unknown" (0xFFFFFFFF, what streaming WAV players expect) and
then raw frames; mp3, opus and ogg (Vorbis) run libsndfile's encoder on an in-memory sink and hand over whatever it
has appended after each chunk (Vorbis buffers, so its bytes come in lumps). Those encoders only append, except that
the mp3 encoder opens with a Xing/Info frame whose frame count it fills in at the end: a streamed mp3 leaves that
frame out (decoders would trust its empty count and stop early), so it is a plain frame stream. flac does not
stream (its header needs the total length): STREAMED_FORMATS.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from collections.abc import Iterator

import numpy as np
import soundfile as sf

from model.audio import encode_audio

_SF_STREAMS = {"mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS"), "ogg": ("OGG", "VORBIS")}
STREAMED_FORMATS = ("pcm", "wav", *_SF_STREAMS)
MP3_STREAM_LEVEL = 0.8  # libsndfile compression level of constant-bitrate mp3 streams (0 = best): ~40 kbit/s at 16 kHz

# MPEG audio layer III: kbit/s by bitrate index (MPEG-1; MPEG-2 and 2.5), Hz by rate index
_MP3_KBPS = {True: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
             False: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


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
        self._started = False
        self._sink: _Sink | None = None
        self._file: sf.SoundFile | None = None
        if fmt in _SF_STREAMS:
            container, subtype = _SF_STREAMS[fmt]
            self._sink = _Sink()
            # mp3 at a constant bitrate: a decoder that meets no frame count (see the module note) can still tell
            # the length from the size
            mp3 = {"bitrate_mode": "CONSTANT", "compression_level": MP3_STREAM_LEVEL} if fmt == "mp3" else {}
            self._file = sf.SoundFile(self._sink, "w", sample_rate, 1, format=container, subtype=subtype, **mp3)

    def push(self, chunk: np.ndarray) -> bytes:
        if self._file is not None and self._sink is not None:
            self._file.write(np.clip(np.asarray(chunk, np.float32), -1.0, 1.0))
            return self._first(self._sink.take())
        pcm = encode_audio(chunk, self.sample_rate, "pcm") if len(chunk) else b""
        if self.fmt == "wav" and not self._started:
            self._started = True
            return wav_stream_header(self.sample_rate) + pcm
        return pcm

    def close(self) -> bytes:
        if self._file is not None and self._sink is not None:
            self._file.close()
            return self._first(self._sink.take())
        if self.fmt == "wav" and not self._started:  # nothing was pushed: still a (header-only) file
            self._started = True
            return wav_stream_header(self.sample_rate)
        return b""


    def _first(self, data: bytes) -> bytes:
        """The first bytes of an mp3 stream lose their Xing/Info frame (once enough has been encoded to hold it)."""
        if self.fmt != "mp3" or self._started or not data:
            return data
        self._started = True
        return without_xing_frame(data)


def without_xing_frame(data: bytes) -> bytes:
    """mp3 bytes -> the same without a leading Xing/Info tag frame (an ID3v2 tag before it is kept)."""
    start = 0
    if data[:3] == b"ID3" and len(data) >= 10:
        start = 10 + ((data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | (data[9] & 0x7F))
    if len(data) < start + 4:
        return data
    header = int.from_bytes(data[start : start + 4], "big")
    version, layer = (header >> 19) & 3, (header >> 17) & 3
    if header >> 21 != 0x7FF or layer != 1 or version == 1:  # not a layer III frame header
        return data
    kbps = _MP3_KBPS[version == 3][(header >> 12) & 0xF]
    rate_index = (header >> 10) & 3
    if kbps == 0 or rate_index == 3:
        return data
    rate = _MP3_RATES[version][rate_index]
    length = (144 if version == 3 else 72) * kbps * 1000 // rate + ((header >> 9) & 1)
    frame = data[start : start + length]
    if b"Xing" not in frame[:64] and b"Info" not in frame[:64]:
        return data
    return data[:start] + data[start + length :]


def wav_stream_header(sample_rate: int, channels: int = 1) -> bytes:
    """A 16-bit PCM WAV header for a stream of unknown length (RIFF and data sizes 0xFFFFFFFF)."""
    unknown = 0xFFFFFFFF
    block = 2 * channels
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels,
            sample_rate, sample_rate * block, block, 16) + b"data" + struct.pack("<I", unknown))


def sse_event(payload: dict) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def sse_deltas(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Encoded audio pieces -> ``speech.audio.delta`` events (empty pieces skipped)."""
    for piece in pieces:
        if piece:
            yield sse_event({"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode("ascii")})


def sse_done(input_chars: int, audio_seconds: float) -> bytes:
    """The closing event. OpenAI's carries token usage; this server has no tokens (0, so clients that read the
    fields still work) and says what it does count: characters in, audio seconds out."""
    return sse_event({"type": "speech.audio.done",
                      "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
                                "input_characters": input_chars, "audio_seconds": round(audio_seconds, 3)}})


def sse_error(message: str, code: str) -> bytes:
    return sse_event({"type": "error", "error": {"message": message, "type": "server_error", "code": code}})
