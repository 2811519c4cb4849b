"""model.audio: decoding, validation, resampling and encoding; every bad input is an AudioError."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from model.audio import (
    AUDIO_FORMATS,
    SAMPLE_RATE,
    content_type,
    encode_audio,
    load_audio,
    prepare_waveform,
    resample,
    save_audio,
)
from model.errors import AudioError


def sine(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    """(n,) float32 sine."""
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(wav: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(wav * np.hanning(len(wav))))
    return float(np.fft.rfftfreq(len(wav), 1 / sr)[np.argmax(spectrum)])


def wav_bytes(wav: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, wav, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_encode_load_round_trip(fmt: str) -> None:
    wav = sine(440, 0.5, SAMPLE_RATE)
    data = encode_audio(wav, SAMPLE_RATE, fmt)
    out = load_audio(data, fmt="pcm" if fmt == "pcm" else None)
    assert out.dtype == np.float32 and out.shape == wav.shape
    assert peak_hz(out, SAMPLE_RATE) == pytest.approx(440, abs=2)
    if fmt in ("ogg", "mp3", "opus"):  # lossy: close away from the edges, where the codecs' frames ramp
        assert np.abs(out - wav)[800:-800].max() <= 0.05
    else:  # exact 16-bit PCM
        assert np.abs(out - wav).max() <= 1 / 32768


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg"])
def test_encode_keeps_rate_and_channels(fmt: str) -> None:
    stereo = np.stack([sine(440, 0.5, 22050), sine(880, 0.5, 22050)])  # (2, n), as separation returns
    info = sf.info(io.BytesIO(encode_audio(stereo, 22050, fmt)))
    assert (info.channels, info.samplerate, info.frames) == (2, 22050, stereo.shape[1])
    decoded, _ = sf.read(io.BytesIO(encode_audio(stereo, 22050, fmt)), dtype="float32")  # (n, 2)
    assert peak_hz(decoded[:, 0], 22050) == pytest.approx(440, abs=3)
    assert peak_hz(decoded[:, 1], 22050) == pytest.approx(880, abs=3)


def test_pcm_is_raw_int16_little_endian() -> None:
    data = encode_audio(np.array([0.0, 0.5, -1.0, 2.0], dtype=np.float32), SAMPLE_RATE, "pcm")
    assert np.frombuffer(data, dtype="<i2").tolist() == [0, 16384, -32768, 32767]  # clipped, not wrapped


def test_load_resamples_and_reads_paths(tmp_path) -> None:
    path = tmp_path / "a.flac"
    save_audio(path, sine(440, 1.0, 44100), 44100)
    out = load_audio(path)
    assert out.shape == (SAMPLE_RATE,)
    assert peak_hz(out, SAMPLE_RATE) == pytest.approx(440, abs=2)
    assert load_audio(str(path), target_sr=8000).shape == (8000,)
    with open(path, "rb") as f:  # a binary stream works too
        assert load_audio(f).shape == (SAMPLE_RATE,)


def test_content_types() -> None:
    assert [content_type(f) for f in AUDIO_FORMATS] == ["audio/wav", "audio/flac", "audio/ogg", "audio/L16",
                                                        "audio/mpeg", "audio/ogg; codecs=opus"]


# -------------------------------------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resample_to_16k_keeps_length_and_pitch(sr: int) -> None:
    out = prepare_waveform(sine(440, 1.0, sr), sr)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    assert out.shape == (SAMPLE_RATE,)
    assert peak_hz(out, SAMPLE_RATE) == pytest.approx(440, abs=1.5)


def test_resample_identity_when_rates_match() -> None:
    wav = sine(440, 0.1, SAMPLE_RATE)
    np.testing.assert_array_equal(resample(wav, SAMPLE_RATE, SAMPLE_RATE), wav)


# ---------------------------------------------------------------------------------------------- layouts and dtypes


def test_stereo_is_downmixed_by_mean() -> None:
    left, right = sine(440, 0.5, SAMPLE_RATE), np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    expected = (left + right) / 2
    np.testing.assert_allclose(prepare_waveform(np.stack([left, right], axis=1), SAMPLE_RATE), expected, atol=1e-7)
    # (channels, n) is recognised and gives the same result
    np.testing.assert_allclose(prepare_waveform(np.stack([left, right]), SAMPLE_RATE), expected, atol=1e-7)


def test_eight_channel_file_is_downmixed() -> None:
    channels = np.stack([sine(440, 0.5, SAMPLE_RATE, amp=0.1 * (c + 1)) for c in range(8)], axis=1)  # (n, 8)
    buf = io.BytesIO()
    sf.write(buf, channels, SAMPLE_RATE, format="WAV", subtype="FLOAT")
    out = load_audio(buf.getvalue())
    np.testing.assert_allclose(out, channels.mean(axis=1), atol=1e-6)


def test_int16_and_int32_are_scaled() -> None:
    pcm16 = np.full(1000, 16384, dtype=np.int16)
    np.testing.assert_allclose(prepare_waveform(pcm16, SAMPLE_RATE), 0.5)
    pcm32 = np.full(1000, -(2**30), dtype=np.int32)
    np.testing.assert_allclose(prepare_waveform(pcm32, SAMPLE_RATE), -0.5)


def test_silence_and_clipping_are_valid_and_untouched() -> None:
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
    np.testing.assert_array_equal(load_audio(wav_bytes(silence, SAMPLE_RATE)), silence)
    clipped = np.clip(sine(440, 1.0, SAMPLE_RATE, amp=3.0), -1.0, 1.0)
    np.testing.assert_array_equal(prepare_waveform(clipped, SAMPLE_RATE), clipped)  # no loudness normalisation


# ------------------------------------------------------------------------------------------------------ bad inputs


def test_empty_bytes() -> None:
    with pytest.raises(AudioError, match="could not decode"):
        load_audio(b"")


def test_garbage_bytes() -> None:
    with pytest.raises(AudioError, match="could not decode"):
        load_audio(np.random.default_rng(0).bytes(4096))


def test_truncated_wav() -> None:
    data = wav_bytes(sine(440, 1.0, SAMPLE_RATE), SAMPLE_RATE)
    with pytest.raises(AudioError, match="could not decode"):
        load_audio(data[:30])  # cut inside the header
    with pytest.raises(AudioError, match="too short"):
        load_audio(data[:44 + 100])  # header intact, 50 samples left
    # cut inside the data: libsndfile returns what survives, which is usable audio
    assert load_audio(data[: 44 + 2 * 8000]).shape == (8000,)


def test_non_finite_samples() -> None:
    wav = sine(440, 0.1, SAMPLE_RATE)
    wav[10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        prepare_waveform(wav, SAMPLE_RATE)
    wav[10] = np.inf
    with pytest.raises(AudioError, match="NaN or infinite"):
        prepare_waveform(wav, SAMPLE_RATE)
    buf = io.BytesIO()
    sf.write(buf, wav, SAMPLE_RATE, format="WAV", subtype="FLOAT")  # a float file can carry them too
    with pytest.raises(AudioError):
        load_audio(buf.getvalue())


@pytest.mark.parametrize(
    "wav",
    [np.zeros(0, np.float32), np.zeros((0, 2), np.float32), np.zeros(100, np.float32), np.zeros((2, 2, 400))],
    ids=["empty", "empty-stereo", "shorter-than-a-hop", "3-d"],
)
def test_unusable_arrays(wav: np.ndarray) -> None:
    with pytest.raises(AudioError):
        prepare_waveform(wav, SAMPLE_RATE)


@pytest.mark.parametrize("sr", [0, -16000, 999, 400000])
def test_bad_sample_rates(sr: int) -> None:
    with pytest.raises(AudioError, match="sample rate"):
        prepare_waveform(sine(440, 0.1, SAMPLE_RATE), sr)


def test_nonexistent_path(tmp_path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match=r"nope\.wav"):
        load_audio(missing)


def test_max_seconds_checked_before_decoding(monkeypatch) -> None:
    data = wav_bytes(np.zeros(3 * SAMPLE_RATE, np.float32), SAMPLE_RATE)
    assert load_audio(data, max_seconds=3.0).shape == (3 * SAMPLE_RATE,)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a file that is over the limit")

    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    with pytest.raises(AudioError, match="limit is 2 s"):
        load_audio(data, max_seconds=2.0)


@pytest.mark.parametrize(("fmt", "rate"), [("mp3", 16000), ("mp3", 44100), ("opus", 16000), ("opus", 48000)])
def test_mp3_and_opus_encode_and_decode(tmp_path, fmt, rate) -> None:
    wav = sine(440, 1.0, rate)
    data = encode_audio(wav, rate, fmt)
    back, sr = sf.read(io.BytesIO(data), dtype="float32")
    assert abs(len(back) - len(wav)) < 0.05 * rate and sr == rate
    corr = np.corrcoef(back[rate // 10 : rate // 2], wav[rate // 10 : rate // 2])[0, 1]
    assert corr > 0.95  # a delay of whole samples would break this: decoders compensate the encoder delay
    save_audio(tmp_path / f"out.{fmt}", wav, rate)
    assert (tmp_path / f"out.{fmt}").stat().st_size == len(data)


def test_bad_formats_and_paths(tmp_path) -> None:
    wav = sine(440, 0.1, SAMPLE_RATE)
    with pytest.raises(AudioError, match="wav, flac, ogg, pcm, mp3, opus"):
        encode_audio(wav, SAMPLE_RATE, "aac")
    with pytest.raises(AudioError):
        content_type("aac")
    with pytest.raises(AudioError):
        save_audio(tmp_path / "out.aac", wav, SAMPLE_RATE)
    with pytest.raises(AudioError, match="resample to 48000 Hz"):
        encode_audio(wav, 44100, "opus")
    with pytest.raises(AudioError):
        encode_audio(np.array([0.0, np.nan], dtype=np.float32), SAMPLE_RATE)
