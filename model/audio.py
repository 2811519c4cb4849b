"""Audio in and out: decode, validate, downmix and resample to the model's rate; encode results for responses.

Every way audio can be unusable surfaces as `AudioError` (a `ValueError`), so the CLI and the service can map it to a
clear message / HTTP 400 without knowing about soundfile or soxr. Loudness is never normalised here: silence and
clipped audio are valid inputs, and the features must see what the user sent.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from model.errors import AudioError

SAMPLE_RATE = 16000
AUDIO_FORMATS = ("wav", "flac", "ogg", "pcm", "mp3", "opus")  # pcm = raw little-endian int16; opus in Ogg
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # the only rates Opus codes
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)  # MPEG-1, 2 and 2.5 layer III

HOP_LENGTH = 160  # one feature frame; anything shorter cannot produce a meaningful frame
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384000
MAX_CHANNELS = 8  # bound for the (channels, n) layout heuristic and for encoding

_CONTENT_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "pcm": "audio/L16",
                  "mp3": "audio/mpeg", "opus": "audio/ogg; codecs=opus"}
_SF_FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"),
               "mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}
_FLOAT_CODECS = ("ogg", "mp3", "opus")  # lossy encoders take floats directly
_SUFFIX_FORMATS = {".wav": "wav", ".flac": "flac", ".ogg": "ogg", ".mp3": "mp3", ".opus": "opus"}
# soundfile raises LibsndfileError (a RuntimeError) for bad data, TypeError/ValueError for odd inputs
_DECODE_ERRORS = (RuntimeError, sf.SoundFileError, OSError, EOFError, TypeError, ValueError)

AudioSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


# ---------------------------------------------------------------------------------------------------------- decoding


def load_audio(
    source: AudioSource,
    target_sr: int = SAMPLE_RATE,
    max_seconds: float | None = None,
    *,
    fmt: str | None = None,
    pcm_sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Decode a file path, bytes or binary stream -> float32 mono (n,) at `target_sr`.

    The container is detected from the data; headerless input needs `fmt="pcm"` (mono int16 LE at
    `pcm_sample_rate`). `max_seconds` is checked from the header before decoding, so an over-long upload costs
    nothing. A WAV truncated inside its data decodes to the samples that survive (libsndfile's leniency); a header
    that is cut off, or too few samples left, raises `AudioError`.
    """
    if fmt is not None and fmt not in AUDIO_FORMATS:
        raise AudioError(f"unsupported audio format {fmt!r}; expected one of {', '.join(AUDIO_FORMATS)}")
    stream = _open_source(source)
    raw = {}
    if fmt == "pcm":
        raw = {"format": "RAW", "subtype": "PCM_16", "endian": "LITTLE", "channels": 1, "samplerate": pcm_sample_rate}
    try:
        with sf.SoundFile(stream, **raw) as f:
            sr = int(f.samplerate)
            if max_seconds is not None and f.frames > max_seconds * sr:
                raise AudioError(f"audio is {f.frames / sr:.1f} s long; the limit is {max_seconds:g} s")
            data = f.read(dtype="float32", always_2d=True)  # (n, channels)
    except AudioError:
        raise
    except _DECODE_ERRORS as e:
        raise AudioError(f"could not decode audio: {e}") from e
    return prepare_waveform(data, sr, target_sr)


def _open_source(source: AudioSource) -> str | BinaryIO:
    """Bytes -> a seekable stream; a path must name an existing file (soundfile would only say 'System error')."""
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise AudioError("could not decode audio: no data")
        return io.BytesIO(bytes(source))
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise AudioError(f"audio file not found: {path}")
        return str(path)
    return source


# ------------------------------------------------------------------------------------------------------ validation


def prepare_waveform(wav: np.ndarray, sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Validate, downmix, scale and resample any waveform -> contiguous float32 (n,) at `target_sr`.

    Layouts: (n,) or soundfile's (n, channels). A 2-D array with at most 8 rows and more than 100x as many columns as
    rows can only sensibly be (channels, n) (e.g. torch/librosa style, or our own separation output), so it is
    transposed. Integer arrays are full-scale PCM: int16 / 32768, int32 / 2**31 (any signed width alike), uint8 is
    offset binary.
    """
    _check_rate(sr, "sample rate")
    _check_rate(target_sr, "target sample rate")
    x = _to_channels_last(np.asarray(wav))
    if x.size == 0:
        raise AudioError("audio is empty (0 samples)")
    x = _to_float(x)
    if not np.isfinite(x).all():
        raise AudioError("audio contains NaN or infinite samples")
    mono = x.mean(axis=1, dtype=np.float32) if x.ndim == 2 else x
    out = resample(mono, sr, target_sr)
    if out.shape[0] < HOP_LENGTH:
        raise AudioError(f"audio is too short: {out.shape[0]} samples at {target_sr} Hz, need at least {HOP_LENGTH}")
    return out


def _check_rate(sr: int, what: str) -> None:
    if isinstance(sr, bool) or not isinstance(sr, int | np.integer):
        raise AudioError(f"{what} must be an integer, got {sr!r}")
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioError(f"{what} {sr} Hz is outside {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")


def _to_channels_last(x: np.ndarray) -> np.ndarray:
    """(n,) stays; (n, C) stays; an obvious (C, n) becomes (n, C). Anything else is not a waveform."""
    if x.ndim == 1:
        return x
    if x.ndim != 2:
        raise AudioError(f"audio must be (n,) or (n, channels), got an array with shape {x.shape}")
    rows, cols = x.shape
    if rows <= MAX_CHANNELS and cols > rows * 100:
        return x.T
    return x


def _to_float(x: np.ndarray) -> np.ndarray:
    """Any numeric dtype -> float32 in the nominal [-1, 1] range (floats are kept as they are, clipping included)."""
    if x.dtype == np.uint8:
        return ((x.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    if np.issubdtype(x.dtype, np.signedinteger):
        scale = float(2 ** (8 * x.dtype.itemsize - 1))
        return (x.astype(np.float64) / scale).astype(np.float32)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32, copy=False)
    raise AudioError(f"audio samples must be integers or floats, got dtype {x.dtype}")


def resample(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """(n,) float32 at `sr_in` -> (m,) float32 at `sr_out`, m = round(n * sr_out / sr_in); identity when equal."""
    x = np.ascontiguousarray(wav, dtype=np.float32)
    if x.ndim != 1:
        raise AudioError(f"resample expects a 1-D waveform, got shape {x.shape}")
    if sr_in == sr_out:
        return x
    try:
        out = soxr.resample(x, sr_in, sr_out, quality="HQ")
    except (RuntimeError, ValueError, TypeError) as e:
        raise AudioError(f"could not resample from {sr_in} Hz to {sr_out} Hz: {e}") from e
    return np.ascontiguousarray(out, dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------- encoding


def encoding_rate(fmt: str, sr: int) -> int:
    """The rate audio at ``sr`` is encoded at in ``fmt``: its own, except that Opus and mp3 code only their own
    rates (OPUS_RATES, MP3_RATES): then the next one up, or the highest."""
    rates = {"opus": OPUS_RATES, "mp3": MP3_RATES}.get(fmt)
    if rates is None or sr in rates:
        return sr
    return next((r for r in rates if r >= sr), rates[-1])


def encode_audio(wav: np.ndarray, sr: int, fmt: str = "wav") -> bytes:
    """(n,) or (channels, n) float waveform -> file bytes in `fmt` (wav/flac PCM_16, ogg vorbis, mp3 (MPEG layer
    III), opus (in Ogg), pcm raw int16 LE). Opus and mp3 need a rate they can carry (see ``encoding_rate``).

    Samples are clipped to [-1, 1] first, so an over-range model output saturates instead of wrapping around.
    Multi-channel pcm is interleaved.
    """
    if fmt not in AUDIO_FORMATS:
        raise AudioError(f"unsupported audio format {fmt!r}; expected one of {', '.join(AUDIO_FORMATS)}")
    _check_rate(sr, "sample rate")
    if encoding_rate(fmt, sr) != sr:
        raise AudioError(f"{fmt} cannot carry {sr} Hz audio; resample to {encoding_rate(fmt, sr)} Hz first")
    frames = _frames_for_encoding(wav)  # (n, channels) float32 in [-1, 1]
    if fmt in _FLOAT_CODECS:
        return _sf_write(frames, sr, fmt)
    pcm16 = np.clip(np.round(frames * 32768.0), -32768, 32767).astype("<i2")
    if fmt == "pcm":
        return pcm16.tobytes()
    return _sf_write(pcm16, sr, fmt)


def _frames_for_encoding(wav: np.ndarray) -> np.ndarray:
    """(n,) or (C, n) -> clipped float32 (n, C); rejects what would make a broken or surprising file."""
    x = np.asarray(wav)
    if x.ndim == 1:
        x = x[:, None]
    elif x.ndim == 2 and x.shape[0] <= MAX_CHANNELS:
        x = x.T
    else:
        raise AudioError(f"audio to encode must be (n,) or (channels<={MAX_CHANNELS}, n), got shape {x.shape}")
    if x.shape[0] == 0:
        raise AudioError("cannot encode empty audio")
    x = _to_float(x)
    if not np.isfinite(x).all():
        raise AudioError("cannot encode audio that contains NaN or infinite samples")
    return np.ascontiguousarray(np.clip(x, -1.0, 1.0))


def _sf_write(frames: np.ndarray, sr: int, fmt: str) -> bytes:
    container, subtype = _SF_FORMATS[fmt]
    buf = io.BytesIO()
    try:
        sf.write(buf, frames, sr, format=container, subtype=subtype)
    except _DECODE_ERRORS as e:
        raise AudioError(f"could not encode {fmt} audio: {e}") from e
    return buf.getvalue()


def save_audio(path: str | os.PathLike, wav: np.ndarray, sr: int) -> None:
    """Write (n,) or (channels, n) audio to `path`; the format comes from the suffix (.wav, .flac, .ogg)."""
    fmt = _SUFFIX_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise AudioError(f"cannot tell the audio format of {str(path)!r}; use one of {', '.join(_SUFFIX_FORMATS)}")
    Path(path).write_bytes(encode_audio(wav, sr, fmt))


def content_type(fmt: str) -> str:
    """MIME type for a response in `fmt` (pcm is audio/L16: raw 16-bit PCM, little-endian here)."""
    try:
        return _CONTENT_TYPES[fmt]
    except KeyError:
        raise AudioError(f"unsupported audio format {fmt!r}; expected one of {', '.join(AUDIO_FORMATS)}") from None
