"""Log-mel features: the one feature path shared by training, inference and the vocoders.

The model works on normalised log-mel frames (B, T, n_mels) at 100 frames/s. The transform is magnitude STFT ->
Slaney mel filterbank -> log of a clamped value -> global mean/std, numerically the same as librosa's
`melspectrogram(power=1.0)` so features can be checked against a reference implementation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from model.errors import ConfigError

# Global log-mel statistics, measured with `estimate_stats` on espeak-ng speech (`espeak-ng -w`): 12 English sentences
# x 6 voices (en, en-us, en+f3, en+m7, en-gb-scotland+f2, en-us+klatt) at pitch 35..70 and 140..185 wpm, 251 s in
# all, loaded with `load_audio` (22.05 -> 16 kHz), leading/trailing digital silence trimmed: real recordings have a
# noise floor, not exact zeros at log(log_floor). Without trimming: mean -5.41, std 2.79.
DEFAULT_MEAN = -4.948
DEFAULT_STD = 2.324


@dataclass
class MelConfig:
    """Everything that defines the features; it travels in every checkpoint's config.json."""

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 640
    hop_length: int = 160
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0
    log_floor: float = 1e-5
    mean: float = DEFAULT_MEAN
    std: float = DEFAULT_STD

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"MelConfig.{name} must be a positive integer, got {value!r}")
        for name in ("f_min", "f_max", "log_floor", "mean", "std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"MelConfig.{name} must be a finite number, got {value!r}")
        if self.win_length > self.n_fft:
            raise ConfigError(f"MelConfig.win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        if self.hop_length > self.win_length:
            raise ConfigError(f"MelConfig.hop_length ({self.hop_length}) must be <= win_length ({self.win_length})")
        if not 0.0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ConfigError(
                f"MelConfig needs 0 <= f_min < f_max <= sample_rate/2, got f_min={self.f_min}, f_max={self.f_max}, "
                f"sample_rate={self.sample_rate}"
            )
        if self.log_floor <= 0:
            raise ConfigError(f"MelConfig.log_floor must be > 0, got {self.log_floor}")
        if self.std <= 0:
            raise ConfigError(f"MelConfig.std must be > 0, got {self.std}")

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MelConfig:
        """Strict: an unknown key means a config from another version or a typo, never something to ignore."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown MelConfig keys: {', '.join(unknown)}")
        return cls(**d)


# --------------------------------------------------------------------------------------------------------- mel scale


# Slaney's mel scale: linear (200/3 Hz per mel) below 1 kHz, logarithmic above (27 mels per factor 6.4).
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz: Tensor) -> Tensor:
    """Slaney mel of frequencies in Hz (any shape, float64 recommended)."""
    linear = hz / _F_SP
    log = _MIN_LOG_MEL + torch.log(torch.clamp(hz, min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return torch.where(hz >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel: Tensor) -> Tensor:
    """Inverse of `hz_to_mel`."""
    linear = mel * _F_SP
    log = _MIN_LOG_HZ * torch.exp(_LOG_STEP * (torch.clamp(mel, min=_MIN_LOG_MEL) - _MIN_LOG_MEL))
    return torch.where(mel >= _MIN_LOG_MEL, log, linear)


def mel_filterbank(cfg: MelConfig) -> Tensor:
    """Triangular Slaney-scale filters with area (Slaney) normalisation -> float32 (n_mels, n_fft//2+1).

    Computed in float64 so it agrees with librosa.filters.mel's defaults to ~1e-8.
    """
    return _mel_weights(*_filterbank_key(cfg)).to(torch.float32)


def _filterbank_key(cfg: MelConfig) -> tuple[int, int, int, float, float]:
    """The config fields that define the filterbank (hashable, for caching)."""
    return cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max


def _mel_weights(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> Tensor:
    """-> float64 (n_mels, n_fft//2+1)."""
    fft_freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    mel_lo, mel_hi = hz_to_mel(torch.tensor([f_min, f_max], dtype=torch.float64))
    edges = mel_to_hz(torch.linspace(float(mel_lo), float(mel_hi), n_mels + 2, dtype=torch.float64))  # (M+2,)
    widths = edges[1:] - edges[:-1]  # (M+1,)
    ramps = edges[:, None] - fft_freqs[None, :]  # (M+2, F)
    rising = -ramps[:-2] / widths[:-1, None]  # (M, F): 0 at the lower edge, 1 at the centre
    falling = ramps[2:] / widths[1:, None]  # (M, F): 1 at the centre, 0 at the upper edge
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    # Equal area per filter, so a flat spectrum gives a flat mel spectrum whatever the filter width.
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


# ------------------------------------------------------------------------------------------------------- transform


class MelSpectrogram(nn.Module):
    """Waveform (B, N) at cfg.sample_rate -> normalised log-mel (B, T, n_mels), T = N // hop + 1.

    The window and filterbank are derived from the config, so they are non-persistent buffers: they follow
    `.to(device)` but never enter a checkpoint (the config does).
    """

    window: Tensor
    filterbank: Tensor

    def __init__(self, cfg: MelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or MelConfig()
        # Periodic Hann of win_length; torch.stft zero-pads it to n_fft, centred (as librosa does).
        self.register_buffer("window", torch.hann_window(self.cfg.win_length, periodic=True), persistent=False)
        self.register_buffer("filterbank", mel_filterbank(self.cfg), persistent=False)

    def forward(self, wav: Tensor) -> Tensor:
        """(B, N) or (N,) -> (B, T, n_mels) normalised log-mel (a 1-D input gives B = 1)."""
        return self.normalize(self.log_mel(wav))

    def log_mel(self, wav: Tensor) -> Tensor:
        """(B, N) or (N,) -> (B, T, n_mels) log of the clamped magnitude mel spectrogram, not normalised."""
        with torch.autocast(device_type=wav.device.type, enabled=False):
            magnitude = self.stft(wav).abs()  # (B, F, T)
            mel = torch.matmul(self.filterbank.float(), magnitude)  # (B, n_mels, T)
            return torch.log(torch.clamp(mel, min=self.cfg.log_floor)).transpose(1, 2)

    def stft(self, wav: Tensor) -> Tensor:
        """(B, N) or (N,) -> complex (B, n_fft//2+1, T), float32 math; the exact analysis the features use.

        Reflect padding needs N > n_fft//2; shorter inputs are zero-padded instead (same frame count).
        """
        x = (wav.unsqueeze(0) if wav.dim() == 1 else wav).float()
        if x.dim() != 2:
            raise ValueError(f"expected a waveform of shape (B, N) or (N,), got {tuple(wav.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            return _stft(x, self.cfg, self.window.float())

    def normalize(self, log_mel: Tensor) -> Tensor:
        """Log-mel -> model features (any shape)."""
        return (log_mel - self.cfg.mean) / self.cfg.std

    def denormalize(self, feats: Tensor) -> Tensor:
        """Model features -> log-mel (any shape)."""
        return feats * self.cfg.std + self.cfg.mean

    def num_frames(self, num_samples: int) -> int:
        """Frames that `forward` returns for `num_samples` samples."""
        return num_samples // self.cfg.hop_length + 1

    def num_samples(self, num_frames: int) -> int:
        """Nominal waveform length of `num_frames` frames (each frame stands for one hop); what vocoders return."""
        return num_frames * self.cfg.hop_length


def estimate_stats(log_mels: Iterable[Tensor]) -> tuple[float, float]:
    """Global (mean, std) over every value of un-normalised log-mels of any shape; streaming, float64 sums.

    Pass only real frames (no padding): padded frames sit at log(log_floor) and would drag the mean down.
    """
    count, total, total_sq = 0, 0.0, 0.0
    for x in log_mels:
        x = x.detach().to(torch.float64)
        count += x.numel()
        total += float(x.sum())
        total_sq += float((x * x).sum())
    if count == 0:
        raise ValueError("estimate_stats needs at least one non-empty log-mel")
    mean = total / count
    return mean, math.sqrt(max(total_sq / count - mean * mean, 0.0))


# ---------------------------------------------------------------------------------- Griffin-Lim (last resort only)


def mel_to_magnitude(feats: Tensor, cfg: MelConfig, n_iter: int = 20) -> Tensor:
    """Normalised log-mel (B, T, n_mels) -> non-negative linear magnitude (B, n_fft//2+1, T).

    Part of the last-resort Griffin-Lim fallback. Inverts the filterbank as a cheap non-negative least-squares
    problem: the clamped pseudo-inverse, refined by `n_iter` projected-gradient steps. Measured on a harmonic chirp,
    20 steps cut the final Griffin-Lim log-mel error from 0.185 (pseudo-inverse alone) to 0.125 for about 8 % of
    Griffin-Lim's run time; on espeak-ng speech both give 0.17.
    """
    fb, inverse, step = (t.to(feats.device) for t in _filterbank_inverse(*_filterbank_key(cfg)))
    mel = torch.exp(feats.float() * cfg.std + cfg.mean).transpose(1, 2)  # (B, n_mels, T)
    mag = torch.clamp(inverse @ mel, min=0.0)  # (B, F, T)
    for _ in range(n_iter):
        mag = torch.clamp(mag - step * (fb.T @ (fb @ mag - mel)), min=0.0)
    return mag


@functools.lru_cache(maxsize=8)
def _filterbank_inverse(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> tuple[Tensor, ...]:
    """-> filterbank (n_mels, F), its pseudo-inverse (F, n_mels), gradient step 1/||fb||^2 (scalar tensor).

    Cached, and the SVDs run in numpy: torch's threaded LAPACK took over a second for this 80 x 513 matrix on a busy
    2-core machine, numpy a few milliseconds.
    """
    fb = _mel_weights(sample_rate, n_fft, n_mels, f_min, f_max).to(torch.float32)
    fb64 = fb.double().numpy()
    step = 1.0 / np.linalg.norm(fb64, ord=2) ** 2  # 1/L for the gradient of 0.5 ||fb s - mel||^2
    return fb, torch.from_numpy(np.linalg.pinv(fb64)).float(), torch.tensor(step, dtype=torch.float32)


def griffin_lim(magnitude: Tensor, cfg: MelConfig, n_iter: int = 32, seed: int = 0, momentum: float = 0.99) -> Tensor:
    """Magnitude (B, n_fft//2+1, T) -> waveform (B, T * hop) by fast Griffin-Lim (Perraudin et al. 2013).

    A LAST-RESORT FALLBACK for when no trained vocoder is available: it is audibly phasey. Uses the same window and
    STFT parameters as the features; the random initial phase comes from `seed`, so the result is deterministic.
    """
    mag = magnitude.float()
    window = torch.hann_window(cfg.win_length, periodic=True, device=mag.device)
    frames = mag.shape[-1]
    inner_len = frames * cfg.hop_length - 1  # the longest waveform whose STFT has exactly `frames` frames
    gen = torch.Generator(device="cpu").manual_seed(seed)
    phase = torch.exp(2j * math.pi * torch.rand(mag.shape, generator=gen)).to(mag.device)
    previous = torch.zeros_like(phase)
    for _ in range(n_iter):
        rebuilt = _stft(_istft(mag * phase, cfg, window, inner_len), cfg, window)
        # Momentum extrapolates from the last projection; the phase of the extrapolation is what we keep.
        accelerated = rebuilt + momentum * (rebuilt - previous)
        previous = rebuilt
        phase = accelerated / (accelerated.abs() + 1e-16)
    return _istft(mag * phase, cfg, window, frames * cfg.hop_length)


def mel_to_waveform_griffin_lim(feats: Tensor, cfg: MelConfig, n_iter: int = 32, seed: int = 0) -> Tensor:
    """Normalised log-mel (B, T, n_mels) -> waveform (B, T * hop). Last-resort fallback: NNLS mel inverse + GL."""
    return griffin_lim(mel_to_magnitude(feats, cfg), cfg, n_iter=n_iter, seed=seed)


def _stft(wav: Tensor, cfg: MelConfig, window: Tensor) -> Tensor:
    """(B, N) -> complex (B, F, N // hop + 1). Reflect padding needs N > n_fft//2, so shorter input is zero-padded."""
    pad_mode = "reflect" if wav.shape[-1] > cfg.n_fft // 2 else "constant"
    return torch.stft(
        wav,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window=window,
        center=True,
        pad_mode=pad_mode,
        return_complex=True,
    )


def _istft(spec: Tensor, cfg: MelConfig, window: Tensor, length: int) -> Tensor:
    """Complex (B, F, T) -> (B, length)."""
    return torch.istft(
        spec,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window=window,
        center=True,
        length=length,
    )
