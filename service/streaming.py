"""Streamed audio: an encoder that turns chunks of speech into the bytes of one growing file, and the SSE framing of
OpenAI's speech stream (``speech.audio.delta`` events with base64 audio, then ``speech.audio.done``).

Chunks may come at the model's rate and leave at another (OpenAI's 24 kHz): one streaming resampler per response
carries its filter state from chunk to chunk, so the joins have no clicks and the concatenated output is the
same, sample for sample, as resampling the whole speech at once (soxr's stream and one-shot results agree).

pcm is raw int16; wav gets a header whose sizes say "unknown" (0xFFFFFFFF, what streaming WAV players expect) and
then raw frames; mp3, opus and ogg (Vorbis) run libsndfile's encoder on an in-memory sink and hand over whatever it
has appended after each chunk (Vorbis buffers, so its bytes come in lumps). Those encoders only append, except that
the mp3 encoder opens with an empty frame that becomes its Xing/Info tag (frame count, length) at the end: bytes
already sent are not sent again, so a streamed mp3 keeps the empty frame (decoders play it as 36 ms of silence)
and is coded at a constant bitrate, so that players can tell its length from its size. aac is AAC-LC in ADTS
frames, FFmpeg's encoder through PyAV: every frame carries its own header, so any prefix of the stream is a valid
file. flac does not stream (its header holds the total length and an MD5 of all samples; with them left unknown
libsndfile cannot read the file): STREAMED_FORMATS, and the service sends flac when generation ends.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from model.audio import encode_audio
from model.errors import AudioError

_SF_STREAMS = {"mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS"), "ogg": ("OGG", "VORBIS")}
STREAMED_FORMATS = ("pcm", "wav", *_SF_STREAMS, "aac")
MP3_STREAM_LEVEL = 0.8  # libsndfile compression level of constant-bitrate mp3 streams (0 = best): ~40 kbit/s
AAC_BIT_RATE = 64_000  # a usual AAC-LC rate for mono speech; a sixth of 24 kHz 16-bit PCM's 384 kbit/s
AAC_CONTENT_TYPE = "audio/aac"  # what OpenAI answers for aac (ADTS)
RESAMPLE_QUALITY = "HQ"  # model.audio.resample's, so that a stream and a whole file agree


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


class _AdtsWriter:
    """AAC-LC in ADTS frames onto ``sink``: FFmpeg's native encoder and ADTS muxer (PyAV's bundled FFmpeg)."""

    def __init__(self, sink: _Sink, sample_rate: int) -> None:
        import av  # only aac needs FFmpeg; the other formats never load it

        self._av = av
        self.sample_rate = sample_rate
        # flush_packets: each frame goes to the sink as it is muxed, not when FFmpeg's I/O buffer fills
        self._container = av.open(sink, "w", format="adts", container_options={"flush_packets": "1"})
        self._stream: Any = self._container.add_stream("aac", rate=sample_rate, layout="mono")
        self._stream.codec_context.bit_rate = AAC_BIT_RATE

    def write(self, x: np.ndarray) -> None:
        # PyAV re-frames any number of samples into the codec's 1024-sample frames, keeping the rest for the next call
        frame = self._av.AudioFrame.from_ndarray(x[None, :], format="fltp", layout="mono")
        frame.sample_rate = self.sample_rate
        self._mux(frame)

    def close(self) -> None:
        self._mux(None)  # drains the encoder's look-ahead and the last, zero-padded frame
        self._container.close()

    def _mux(self, frame: Any) -> None:
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except self._av.FFmpegError as e:
            raise AudioError(f"could not encode aac audio: {e}") from e


class StreamEncoder:
    """Chunks (n,) of float speech at ``source_rate`` (default: ``sample_rate``) -> successive byte strings whose
    concatenation is one ``fmt`` file at ``sample_rate``."""

    def __init__(self, fmt: str, sample_rate: int, source_rate: int | None = None) -> None:
        if fmt not in STREAMED_FORMATS:
            raise AudioError(f"{fmt} cannot be streamed; stream one of {', '.join(STREAMED_FORMATS)}")
        self.fmt = fmt
        self.sample_rate = sample_rate
        self._header_sent = False  # wav only
        self._sink: _Sink | None = None
        self._file: sf.SoundFile | _AdtsWriter | None = None
        self._resampler: soxr.ResampleStream | None = None
        if source_rate is not None and source_rate != sample_rate:
            self._resampler = soxr.ResampleStream(source_rate, sample_rate, 1, dtype="float32",
                                                  quality=RESAMPLE_QUALITY)
        if fmt in _SF_STREAMS:
            container, subtype = _SF_STREAMS[fmt]
            self._sink = _Sink()
            # mp3 at a constant bitrate: without the tag's frame count (see the module note) the size tells the length
            mp3 = {"bitrate_mode": "CONSTANT", "compression_level": MP3_STREAM_LEVEL} if fmt == "mp3" else {}
            self._file = sf.SoundFile(self._sink, "w", sample_rate, 1, format=container, subtype=subtype, **mp3)
        elif fmt == "aac":
            self._sink = _Sink()
            self._file = _AdtsWriter(self._sink, sample_rate)

    def push(self, chunk: np.ndarray) -> bytes:
        x = np.asarray(chunk, np.float32)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x)
        return self._encode(x)

    def close(self) -> bytes:
        """The rest of the file: what the resampler held back, then the encoder's tail."""
        tail = b""
        if self._resampler is not None:
            tail = self._encode(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        if self._file is not None and self._sink is not None:
            self._file.close()
            return tail + self._sink.take()
        return tail + self._wav_header()  # nothing pushed: still a (header-only) wav file

    def _encode(self, x: np.ndarray) -> bytes:
        x = np.clip(x, -1.0, 1.0)
        if self._file is not None and self._sink is not None:
            if len(x):
                self._file.write(x)
            return self._sink.take()
        return self._wav_header() + (encode_audio(x, self.sample_rate, "pcm") if len(x) else b"")

    def _wav_header(self) -> bytes:
        """The streaming WAV header, once, before the first samples of a wav stream (nothing for pcm)."""
        if self.fmt != "wav" or self._header_sent:
            return b""
        self._header_sent = True
        return wav_stream_header(self.sample_rate)


def encode_whole(audio: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    """(n,) float speech -> one ``fmt`` file: libsndfile's encoders (model.audio), aac through the stream encoder
    (an ADTS stream is already a whole file)."""
    if fmt != "aac":
        return encode_audio(audio, sample_rate, fmt)
    encoder = StreamEncoder(fmt, sample_rate)
    return encoder.push(audio) + encoder.close()


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


def timings_json(timings: dict[str, list[Any]]) -> dict[str, list[dict[str, Any]]]:
    """{"words": [{"word", "start", "end"}, ...], "phones": [{"phone", ...}, ...]}: model.tts.WordTime spans."""
    return {key: [span.to_json(key.removesuffix("s")) for span in spans] for key, spans in timings.items()}


def sse_timestamps(timings: dict[str, list[Any]]) -> bytes:
    """The timings of the audio in the delta that follows, in seconds from the audio's start."""
    return sse_event({"type": "speech.timestamps.delta", **timings_json(timings)})


def timed_speech(audio: bytes, fmt: str, sample_rate: int, timings: dict[str, list[Any]]) -> dict[str, Any]:
    """The JSON body of a non-SSE request for timings: the whole file in base64 and its words and/or phones."""
    return {"audio": base64.b64encode(audio).decode("ascii"), "format": fmt, "sample_rate": sample_rate,
            **timings_json(timings)}


def sse_error(message: str, code: str) -> bytes:
    return sse_event({"type": "error", "error": {"message": message, "type": "server_error", "code": code}})
