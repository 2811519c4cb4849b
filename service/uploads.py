"""Uploaded audio in, response audio out. Runs in worker threads (decoding and resampling are CPU work).

Any container libsndfile reads is accepted (wav, flac, ogg, mp3 where libsndfile has it, ...) at any rate and
channel count; headerless 16-bit PCM is accepted when the part says so (``audio/L16;rate=...`` or a ``.pcm`` /
``.raw`` name). Results come back at the upload's own rate and length.

What decoding will cost is known from the header (rate, channels, samples) and bounded before a sample is decoded:
the duration (413 ``audio_too_long``) and the decoded size, samples x channels as float32 (413
``audio_too_large``, ``max_decoded_bytes``). The second matters for compressed uploads: a few kilobytes of FLAC
or Ogg can declare a minute of 8-channel 384 kHz audio, ~740 MB decoded. soundfile reads at most the frames the
header declares, so the bound holds for what is actually decoded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from model.audio import (
    MAX_CHANNELS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    content_type,
    encode_audio,
    encoding_rate,
    load_audio,
    resample,
)
from model.errors import AudioError

from .errors import AudioTooLarge, AudioTooLong, BadAudio, UnsupportedMediaType
from .settings import Settings
from .streaming import AAC_CONTENT_TYPE, encode_whole

RAW_PCM_TYPES = {"audio/l16", "audio/pcm", "audio/x-pcm", "audio/raw"}
RAW_PCM_SUFFIXES = (".pcm", ".raw")
PCM_DEFAULT_RATE = 16_000
# what a client may call an audio upload: audio/* and video/* (browsers label ogg/webm recordings video/...), or
# the generic labels curl and browsers use when they do not know
GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream", "application/ogg"}
# libsndfile reports bad data as LibsndfileError (a RuntimeError); odd inputs raise the others
DECODE_ERRORS = (RuntimeError, sf.SoundFileError, OSError, EOFError, TypeError, ValueError)
# 128 MiB: 60 s of 8-channel 48 kHz or stereo 192 kHz audio fits, 384 kHz x 8 does not
DEFAULT_MAX_DECODED_BYTES: int = Settings.model_fields["max_decoded_bytes"].default
DECODED_SAMPLE_BYTES = 4  # float32, as soundfile decodes it


@dataclass(frozen=True)
class DecodedAudio:
    wav: np.ndarray  # float32 mono at the rate it was decoded at: the engine's (or, for edits, its own)
    sample_rate: int  # the upload's rate: the response uses it
    num_samples: int  # the upload's length at its rate: the response has it too

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate


def parse_media_type(value: str | None) -> tuple[str, dict[str, str]]:
    """'audio/L16; rate=8000' -> ('audio/l16', {'rate': '8000'})."""
    parts = [p.strip() for p in (value or "").split(";")]
    params = {}
    for part in parts[1:]:
        name, _, val = part.partition("=")
        params[name.strip().lower()] = val.strip().strip('"')
    return parts[0].lower(), params


def check_upload_type(media_type: str | None, param: str = "file") -> None:
    mime, _ = parse_media_type(media_type)
    if mime in GENERIC_TYPES or mime.startswith(("audio/", "video/")):
        return
    raise UnsupportedMediaType(f"the uploaded file is {mime!r}, not audio; send wav, flac, ogg or raw PCM",
                               param=param)


def decode_upload(data: bytes, media_type: str | None, filename: str | None, *, target_sr: int | None,
                  max_seconds: float, param: str = "file",
                  max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> DecodedAudio:
    """Bytes of one upload -> mono float32 at ``target_sr`` (None: its own rate); the duration and decoded-size
    limits are checked from the header first. Errors name ``param``, the form field the upload came in.
    ``filename`` only says whether the part is raw PCM (its suffix): it is never opened, joined to a path or
    stored."""
    mime, params = parse_media_type(media_type)
    raw = mime in RAW_PCM_TYPES or (filename or "").lower().endswith(RAW_PCM_SUFFIXES)
    if not data:
        raise BadAudio("the uploaded file is empty", param=param)
    if raw:
        rate = _pcm_rate(params, param)
        if params.get("channels", "1") != "1":
            raise BadAudio("raw PCM uploads must be mono (channels=1)", param=param)
        if len(data) % 2:
            raise BadAudio(f"raw PCM is 16-bit: {len(data)} bytes is not a whole number of samples", param=param)
        num_samples, channels = len(data) // 2, 1
    else:
        try:
            with sf.SoundFile(io.BytesIO(data)) as f:
                rate, num_samples, channels = int(f.samplerate), int(f.frames), int(f.channels)
        except DECODE_ERRORS as e:
            raise BadAudio(f"could not decode audio: {e}", param=param) from e
    # everything below is read from the header, before a sample is decoded
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise BadAudio(f"the audio declares {rate} Hz; accepted: {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz", param=param)
    if not 1 <= channels <= MAX_CHANNELS:
        raise BadAudio(f"the audio declares {channels} channels; at most {MAX_CHANNELS} are accepted", param=param)
    if num_samples <= 0:
        raise BadAudio("the audio has no samples", param=param)
    if num_samples > max_seconds * rate:
        raise AudioTooLong(f"audio is {num_samples / rate:.1f} s long; the limit is {max_seconds:g} s", param=param)
    decoded_bytes = num_samples * channels * DECODED_SAMPLE_BYTES
    if decoded_bytes > max_decoded_bytes:
        raise AudioTooLarge(f"the audio declares {num_samples} samples x {channels} channels at {rate} Hz, "
                            f"{decoded_bytes / 2**20:.1f} MiB decoded; the limit is {max_decoded_bytes / 2**20:.1f} "
                            "MiB (max_decoded_bytes): send fewer channels or a lower rate", param=param)
    try:
        wav = load_audio(data, target_sr or rate, fmt="pcm" if raw else None, pcm_sample_rate=rate)
    except AudioError as e:
        raise BadAudio(str(e), param=param) from e
    return DecodedAudio(wav, rate, num_samples)


def _pcm_rate(params: dict[str, str], param: str) -> int:
    text = params.get("rate", str(PCM_DEFAULT_RATE))
    if not text.isdigit():
        raise BadAudio(f"invalid PCM rate {text!r}: give a whole number of Hz, e.g. audio/L16;rate=16000",
                       param=param)
    return int(text)


def render_audio(audio: np.ndarray, engine_sr: int, like: DecodedAudio, fmt: str) -> tuple[bytes, str]:
    """Engine output (n,) or (channels, n) -> file bytes at the upload's rate and exact length (opus: the next
    rate Opus codes, same duration), and a media type."""
    channels = audio[None] if audio.ndim == 1 else audio
    rate = encoding_rate(fmt, like.sample_rate)  # the upload's, unless the codec cannot carry it (opus)
    n = round(like.num_samples * rate / like.sample_rate)
    out = np.stack([_fit(resample(c, engine_sr, rate), n) for c in channels])
    data = encode_audio(out[0] if audio.ndim == 1 else out, rate, fmt)
    return data, _media_type(fmt, rate, len(channels))


def render_speech(audio: np.ndarray, source_rate: int, fmt: str, sample_rate: int | None = None) -> tuple[bytes, str]:
    """Generated speech (n,) at ``source_rate`` -> file bytes at ``sample_rate`` (default: its own), and a media
    type. The resampler is the one a stream of the same speech uses, so both give the same samples."""
    rate = source_rate if sample_rate is None else sample_rate
    data = encode_whole(resample(audio, source_rate, rate), rate, fmt)
    return data, _media_type(fmt, rate, 1)


def render_media_type(fmt: str, sample_rate: int) -> str:
    """The media type of mono speech in ``fmt`` (pcm names its rate and channels)."""
    return _media_type(fmt, sample_rate, 1)


def _media_type(fmt: str, sample_rate: int, channels: int) -> str:
    media = AAC_CONTENT_TYPE if fmt == "aac" else content_type(fmt)  # aac is speech only, not a model.audio format
    return f"{media};rate={sample_rate};channels={channels}" if fmt == "pcm" else media


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Resampling there and back can be off by a sample: trim or zero-pad to the input's length."""
    return x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))
