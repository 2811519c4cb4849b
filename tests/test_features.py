"""model.features: filterbank and log-mel against librosa, config round trips, frame arithmetic, Griffin-Lim."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from model.errors import ConfigError
from model.features import (
    MelConfig,
    MelSpectrogram,
    estimate_stats,
    griffin_lim,
    mel_filterbank,
    mel_to_magnitude,
    mel_to_waveform_griffin_lim,
)

SR = 16000


def harmonic_chirp(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """(n,) float32 speech-like test signal: harmonics of a rising, vibrating f0 under a syllable-rate envelope."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 60 * t + 15 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 30))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    noise = np.random.default_rng(seed).standard_normal(t.shape) * 0.002  # a noise floor, like a recording
    return (0.1 * voiced * envelope + noise).astype(np.float32)


@pytest.fixture(scope="module")
def mel() -> MelSpectrogram:
    return MelSpectrogram(MelConfig())


# ----------------------------------------------------------------------------------------------- librosa agreement


@pytest.mark.parametrize(("n_mels", "f_max"), [(80, 8000.0), (64, 7600.0)])
def test_filterbank_matches_librosa(n_mels: int, f_max: float) -> None:
    ours = mel_filterbank(MelConfig(n_mels=n_mels, f_max=f_max))
    ref = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=n_mels, fmin=0.0, fmax=f_max)
    assert ours.dtype == torch.float32 and ours.shape == (n_mels, 513)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-6)


def test_log_mel_matches_librosa(mel: MelSpectrogram) -> None:
    wav = harmonic_chirp(0.5)
    ours = mel.log_mel(torch.from_numpy(wav))[0].numpy()  # (T, 80)
    spec = librosa.feature.melspectrogram(
        y=wav, sr=SR, n_fft=1024, win_length=640, hop_length=160, center=True, pad_mode="reflect",
        window="hann", power=1.0, n_mels=80, fmin=0.0, fmax=8000.0,
    )  # fmt: skip
    ref = np.log(np.clip(spec, 1e-5, None)).T
    assert ours.shape == ref.shape == (len(wav) // 160 + 1, 80)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------------------ the transform


def test_normalisation_round_trip(mel: MelSpectrogram) -> None:
    wav = torch.from_numpy(harmonic_chirp(0.3))
    log_mel, feats = mel.log_mel(wav), mel(wav)
    assert torch.allclose(feats, (log_mel - mel.cfg.mean) / mel.cfg.std, atol=1e-6)
    assert torch.allclose(mel.denormalize(mel.normalize(log_mel)), log_mel, atol=1e-5)
    # the default statistics roughly standardise speech-like audio
    assert abs(feats.mean().item()) < 1.0 and 0.5 < feats.std().item() < 2.0


@pytest.mark.parametrize("n", [0, 1, 100, 159, 160, 512, 513, 1000, 16000, 16001])
def test_frame_count_and_short_inputs(mel: MelSpectrogram, n: int) -> None:
    feats = mel(torch.full((n,), 0.01))
    assert feats.shape == (1, mel.num_frames(n), 80) and mel.num_frames(n) == n // 160 + 1
    assert torch.isfinite(feats).all()
    assert mel.stft(torch.zeros(2, n)).shape == (2, 513, n // 160 + 1)
    assert mel.num_samples(mel.num_frames(n)) == (n // 160 + 1) * 160


def test_batch_matches_single_items(mel: MelSpectrogram) -> None:
    a, b = harmonic_chirp(0.3, seed=1), harmonic_chirp(0.3, seed=2)[::-1].copy()
    batch = mel(torch.from_numpy(np.stack([a, b])))
    assert torch.allclose(batch[1:], mel(torch.from_numpy(b)), atol=1e-5)
    assert torch.allclose(batch[:1], mel(torch.from_numpy(a)), atol=1e-5)


def test_float32_under_autocast_and_no_state(mel: MelSpectrogram) -> None:
    wav = torch.from_numpy(harmonic_chirp(0.2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = mel(wav)
    assert feats.dtype == torch.float32
    assert torch.allclose(feats, mel(wav), atol=1e-6)
    assert mel.state_dict() == {}  # window and filterbank are rebuilt from the config, never checkpointed
    assert {name for name, _ in mel.named_buffers()} == {"window", "filterbank"}


def test_estimate_stats_matches_concatenation() -> None:
    gen = torch.Generator().manual_seed(0)
    parts = [torch.randn(n, 80, generator=gen) * 2 - 5 for n in (7, 30, 101)]
    mean, std = estimate_stats(parts)
    flat = torch.cat(parts).double()
    assert mean == pytest.approx(flat.mean().item(), abs=1e-9)
    assert std == pytest.approx(flat.std(unbiased=False).item(), abs=1e-9)
    with pytest.raises(ValueError):
        estimate_stats([])


# ------------------------------------------------------------------------------------------------------- config


def test_config_round_trip_and_strictness() -> None:
    cfg = MelConfig(n_mels=64, f_max=7600.0, mean=-4.0, std=2.5)
    assert MelConfig.from_dict(cfg.to_dict()) == cfg
    assert MelConfig.from_dict({}) == MelConfig()
    with pytest.raises(ConfigError, match="n_mel"):
        MelConfig.from_dict({**cfg.to_dict(), "n_mel": 80})


@pytest.mark.parametrize(
    "bad",
    [{"win_length": 2048}, {"f_max": 9000.0}, {"std": 0.0}, {"hop_length": 0}, {"f_min": 8000.0}, {"log_floor": 0.0}],
)
def test_config_validation(bad: dict) -> None:
    with pytest.raises(ConfigError):
        MelConfig(**bad)


# ------------------------------------------------------------------------------------- Griffin-Lim fallback


def test_mel_to_magnitude_is_a_non_negative_inverse(mel: MelSpectrogram) -> None:
    wav = torch.from_numpy(harmonic_chirp(0.5))
    feats = mel(wav)
    magnitude = mel_to_magnitude(feats, mel.cfg)
    assert magnitude.shape == (1, 513, feats.shape[1]) and (magnitude >= 0).all()
    remelled = torch.log(torch.clamp(mel.filterbank @ magnitude, min=1e-5)).transpose(1, 2)
    # measured: 0.0022 with 20 projected-gradient steps, 0.027 for the clamped pseudo-inverse alone
    assert (remelled - mel.log_mel(wav)).abs().mean() < 0.01


def test_griffin_lim_reproduces_the_log_mel(mel: MelSpectrogram) -> None:
    wav = torch.from_numpy(harmonic_chirp(1.0))
    feats = mel(wav)  # (1, 101, 80)
    target, frames = mel.log_mel(wav), feats.shape[1]
    out = mel_to_waveform_griffin_lim(feats, mel.cfg, n_iter=32)
    assert out.shape == (1, mel.num_samples(frames))
    error = (mel.log_mel(out)[:, :frames] - target).abs().mean().item()
    # Baseline: noise with the same length and RMS. Measured (mean abs log-mel error): Griffin-Lim 0.091, noise 1.86.
    noise = torch.randn(wav.shape, generator=torch.Generator().manual_seed(0)) * wav.std()
    noise_error = (mel.log_mel(noise) - target).abs().mean().item()
    assert error < 0.15
    assert noise_error > 1.5 and noise_error > 10 * error


def test_griffin_lim_is_deterministic_per_seed(mel: MelSpectrogram) -> None:
    magnitude = mel.stft(torch.from_numpy(harmonic_chirp(0.2))).abs().repeat(2, 1, 1)  # (2, 513, T)
    a, b = griffin_lim(magnitude, mel.cfg, n_iter=4, seed=3), griffin_lim(magnitude, mel.cfg, n_iter=4, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, griffin_lim(magnitude, mel.cfg, n_iter=4, seed=4))
    assert a.shape == (2, mel.num_samples(magnitude.shape[-1]))
