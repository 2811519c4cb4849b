"""Task outputs without a vocoder: the paper's noisy-phase path, as per-band masks on the input's STFT.

Gains g = exp(enhanced log-mel - noisy log-mel) per mel band, clipped to [0, 1], are spread over STFT bins by the
filterbank's own weights and applied to the noisy spectrum; iSTFT with the analysis window. Calibration on this
project's data: for an imperfect model this beat both the noisy-phase magnitude inverse and an NNLS inverse, and
costs one STFT/iSTFT.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .features import MelConfig, MelSpectrogram, mel_filterbank


@functools.lru_cache(maxsize=4)
def _band_to_bin(cfg_key: tuple) -> Tensor:
    """(F, n_mels): each bin's gain is the filterbank-weighted mean of its bands' gains; bins no filter covers (DC)
    take their nearest band."""
    fb = mel_filterbank(MelConfig(**dict(cfg_key)))  # (n_mels, F)
    weights = fb.T.clone()  # (F, n_mels)
    empty = weights.sum(1) == 0
    if empty.any():
        nearest = fb.argmax(dim=1)  # centre bin of each band
        for f in torch.nonzero(empty).flatten().tolist():
            weights[f, int((nearest - f).abs().argmin())] = 1.0
    return weights / weights.sum(1, keepdim=True)


def _apply_band_gains(wav: Tensor, gains: Tensor, mel: MelSpectrogram) -> Tensor:
    """wav (B, N), band gains (B, T, n_mels) -> (B, N): gains spread over bins, applied to the STFT, inverted."""
    cfg = mel.cfg
    spec = mel.stft(wav)  # (B, F, T)
    t = min(spec.shape[-1], gains.shape[1])
    band_to_bin = _band_to_bin(tuple(sorted(cfg.to_dict().items()))).to(wav.device)
    masked = spec[..., :t] * torch.einsum("fm,btm->bft", band_to_bin, gains[:, :t])
    return torch.istft(masked, cfg.n_fft, cfg.hop_length, cfg.win_length, mel.window.float(), center=True,
                       length=wav.shape[-1])


def mask_reconstruction(noisy: Tensor, enhanced: Tensor, mel: MelSpectrogram) -> Tensor:
    """Enhancement: noisy (B, N) waveform, enhanced normalised log-mel (B, T, n_mels) -> (B, N) waveform."""
    t = min(noisy.shape[-1] // mel.cfg.hop_length + 1, enhanced.shape[1])
    gains = torch.exp(mel.denormalize(enhanced[:, :t].float()) - mel.log_mel(noisy)[:, :t]).clamp(0.0, 1.0)
    return _apply_band_gains(noisy, gains, mel)


def separation_masks(mixture: Tensor, stacked: Tensor, mel: MelSpectrogram) -> Tensor:
    """Separation: mixture (B, N), both speakers' normalised log-mels stacked (B, T, 2 n_mels) -> (B, 2, N).

    Each speaker's band gain is its share of the two estimated mel energies (an estimated ideal ratio mask), so the
    two outputs add up to the mixture.
    """
    energies = torch.exp(mel.denormalize(stacked.float())).unflatten(-1, (2, -1))  # (B, T, 2, n_mels)
    shares = energies / energies.sum(dim=2, keepdim=True).clamp_min(1e-10)
    return torch.stack([_apply_band_gains(mixture, shares[:, :, k], mel) for k in range(2)], dim=1)
