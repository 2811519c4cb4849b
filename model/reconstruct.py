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

MASK_FLOOR = 1e-5  # a mean mask of 0 (every draw silenced a band) as a finite log-mel: -100 dB


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


def enhancement_gains(log_enhanced: Tensor, log_noisy: Tensor) -> Tensor:
    """Band gains of the enhancement mask: log-mels (..., n_mels) -> (..., n_mels) in [0, 1]."""
    return torch.exp(log_enhanced - log_noisy).clamp(0.0, 1.0)


def speaker_shares(log_stacked: Tensor) -> Tensor:
    """Band gains of the separation masks: each speaker's share of the two estimated mel energies (an estimated
    ideal ratio mask, so the two outputs add up to the mixture). Stacked log-mels (..., 2 n_mels) ->
    (..., 2, n_mels)."""
    energies = torch.exp(log_stacked).unflatten(-1, (2, -1))
    return energies / energies.sum(dim=-2, keepdim=True).clamp_min(1e-10)


def mask_reconstruction(noisy: Tensor, enhanced: Tensor, mel: MelSpectrogram) -> Tensor:
    """Enhancement: noisy (B, N) waveform, enhanced normalised log-mel (B, T, n_mels) -> (B, N) waveform."""
    t = min(noisy.shape[-1] // mel.cfg.hop_length + 1, enhanced.shape[1])
    gains = enhancement_gains(mel.denormalize(enhanced[:, :t].float()), mel.log_mel(noisy)[:, :t])
    return _apply_band_gains(noisy, gains, mel)


def separation_masks(mixture: Tensor, stacked: Tensor, mel: MelSpectrogram) -> Tensor:
    """Separation: mixture (B, N), both speakers' normalised log-mels stacked (B, T, 2 n_mels) -> (B, 2, N), each
    the mixture under that speaker's `speaker_shares`."""
    shares = speaker_shares(mel.denormalize(stacked.float()))  # (B, T, 2, n_mels)
    return torch.stack([_apply_band_gains(mixture, shares[:, :, k], mel) for k in range(2)], dim=1)


def mean_mask_features(cond: Tensor, draws: list[Tensor], mel: MelSpectrogram) -> Tensor:
    """Independent draws of one window -> the features whose mask is the draws' mean mask.

    cond: the input's normalised log-mel (T, n_mels); draws: E generated windows (T, S n_mels), S = 1 (enhancement)
    or 2 (separation, stacked speakers). The masks `mask_reconstruction` / `separation_masks` would apply are
    averaged (separation: each draw's speaker order matched to the first's) and turned back into features that give
    exactly that mask; since a mask is linear in the output, this is the average of the draws' outputs, an estimate
    of the posterior-mean mask with less sampling noise than any one draw. One draw is returned as it is.
    -> (T, S n_mels).
    """
    if len(draws) == 1:
        return draws[0]
    log_input = mel.denormalize(cond.float())  # (T, n_mels)
    separation = draws[0].shape[-1] == 2 * log_input.shape[-1]
    masks: list[Tensor] = []  # (T, S, n_mels) each
    for d in draws:
        log_out = mel.denormalize(d.float())
        if not separation:
            masks.append(enhancement_gains(log_out, log_input)[:, None])
            continue
        shares = speaker_shares(log_out)
        if masks and (shares.flip(1) - masks[0]).abs().sum() < (shares - masks[0]).abs().sum():
            shares = shares.flip(1)  # the speakers came out the other way round
        masks.append(shares)
    mean = torch.stack(masks).mean(0).clamp_min(MASK_FLOOR)  # (T, S, n_mels)
    return mel.normalize(torch.log(mean) + log_input[:, None]).flatten(-2).to(draws[0].dtype)
