"""Discriminators for adversarial vocoder training (training only: a shipped vocoder never carries them).

Reconstruction losses alone leave the vocoder's high band buzzy and over-smoothed; a discriminator that learns to
tell real from generated audio supplies the missing detail (HiFi-GAN, Vocos). Two kinds look at different
structure:

- a *period* discriminator folds the waveform into rows of ``p`` samples and convolves along time within each
  phase, which exposes periodic (pitch-harmonic) structure (HiFi-GAN's MPD, periods 2, 3, 5, 7, 11);
- a *resolution* discriminator convolves a magnitude spectrogram over time and frequency at one STFT size
  (UnivNet's MRD, as Vocos uses it).

Both are slimmed far below the papers' widths (HiFi-GAN's MPD alone has 41 M parameters) so that a discriminator
step costs about what the generator's does on a CPU core. Losses are least-squares (HiFi-GAN): the discriminator
pushes real logits to 1 and generated ones to 0; the generator pushes its logits to 1 and matches the
discriminator's intermediate features of real audio (feature matching).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

PERIODS: tuple[int, ...] = (2, 3, 5, 7, 11)  # primes: no two periods share a fold of the same harmonics
RESOLUTIONS: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop)
LEAK = 0.1
# Log-magnitude statistics of speech STFTs (roughly those of our log-mel): the resolution discriminators' inputs are
# shifted and scaled by them, so that their first layer sees O(1) values rather than -11.5 for silence.
LOG_MAGNITUDE_MEAN, LOG_MAGNITUDE_STD = -5.0, 2.5
POST_GAIN = 0.1

Judgement = tuple[Tensor, list[Tensor]]  # logits (B, ...) and each layer's activations


def _conv(*args: Any, gain: float = 1.0, **kwargs: Any) -> nn.Module:
    """A weight-normalised Conv2d initialised to keep the signal's scale through leaky ReLUs (He init, zero bias).
    torch's default init shrinks the activations ~1.7x per layer, so a fresh period discriminator's logits are
    almost all bias, blind to the waveform, and take hundreds of steps to start telling real from generated.
    ``gain`` scales the initial weights: the output layers start small, so that a fresh critic's logits are near 0
    and its first adversarial gradients do not swamp the generator's reconstruction terms."""
    conv = nn.Conv2d(*args, **kwargs)
    nn.init.kaiming_normal_(conv.weight, a=LEAK, nonlinearity="leaky_relu")
    with torch.no_grad():
        conv.weight.mul_(gain)
    nn.init.zeros_(conv.bias)
    return weight_norm(conv)


def _judge(convs: nn.ModuleList, post: nn.Module, x: Tensor) -> Judgement:
    """The convolution stack with leaky ReLUs, then the logit layer; every layer's output is a feature."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LEAK)
        features.append(x)
    x = post(x)
    features.append(x)
    return x.flatten(1), features


class PeriodDiscriminator(nn.Module):
    """Waveform (B, N) -> folded (B, 1, ceil(N / p), p) -> strided (k, 1) convolutions along time, per phase."""

    def __init__(self, period: int, channels: Sequence[int] = (16, 32, 64, 128), kernel: int = 5,
                 stride: int = 3) -> None:
        super().__init__()
        self.period = period
        widths = [1, *channels]
        self.convs = nn.ModuleList(
            _conv(a, b, (kernel, 1), (stride, 1), padding=(kernel // 2, 0))
            for a, b in pairwise(widths))
        self.convs.append(_conv(widths[-1], widths[-1], (kernel, 1), padding=(kernel // 2, 0)))
        self.post = _conv(widths[-1], 1, (3, 1), padding=(1, 0), gain=POST_GAIN)

    def forward(self, wav: Tensor) -> Judgement:
        b, n = wav.shape
        pad = (-n) % self.period
        if pad:  # reflect needs pad < n; a crop is always far longer than a period
            wav = F.pad(wav[:, None], (0, pad), mode="reflect")[:, 0]
        x = wav.reshape(b, 1, (n + pad) // self.period, self.period)
        return _judge(self.convs, self.post, x)


class ResolutionDiscriminator(nn.Module):
    """Waveform (B, N) -> log-magnitude STFT (B, 1, frames, F) -> 2D convolutions, strided along frequency."""

    window: Tensor

    def __init__(self, n_fft: int, hop: int, channels: int = 16, layers: int = 4) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)
        # Every layer halves the frequency axis (UnivNet keeps the first at full resolution; halving it too is 2x
        # cheaper, and the first layer's 9-bin kernel still sees the finest detail before it strides).
        widths = [1] + [channels] * layers
        self.convs = nn.ModuleList(
            _conv(a, b, (3, 9), stride=(1, 2), padding=(1, 4))
            for a, b in pairwise(widths))
        self.convs.append(_conv(channels, channels, (3, 3), padding=(1, 1)))
        self.post = _conv(channels, 1, (3, 3), padding=(1, 1), gain=POST_GAIN)

    def forward(self, wav: Tensor) -> Judgement:
        with torch.autocast(device_type=wav.device.type, enabled=False):  # the STFT in float32, as the losses'
            spec = torch.stft(wav.float(), self.n_fft, self.hop, window=self.window, center=True,
                              pad_mode="constant", return_complex=True).abs()  # (B, F, frames)
            # log compresses the dynamic range the way hearing does; the floor keeps silence finite
            x = torch.log(spec.clamp(min=1e-5)).transpose(1, 2)[:, None]  # (B, 1, frames, F)
            x = (x - LOG_MAGNITUDE_MEAN) / LOG_MAGNITUDE_STD
        return _judge(self.convs, self.post, x)


class Discriminators(nn.Module):
    """Every sub-discriminator over one waveform batch (B, N) -> one judgement each."""

    def __init__(self, periods: Sequence[int] = PERIODS,
                 resolutions: Sequence[tuple[int, int]] = RESOLUTIONS) -> None:
        super().__init__()
        self.subs = nn.ModuleList([*(PeriodDiscriminator(p) for p in periods),
                                   *(ResolutionDiscriminator(n_fft, hop) for n_fft, hop in resolutions)])

    def forward(self, wav: Tensor) -> list[Judgement]:
        return [sub(wav) for sub in self.subs]


def discriminator_loss(real: Sequence[Judgement], fake: Sequence[Judgement]) -> Tensor:
    """Least squares: real logits toward 1, generated toward 0, summed over sub-discriminators."""
    return sum((((1 - r.float()) ** 2).mean() + (f.float() ** 2).mean()
                for (r, _), (f, _) in zip(real, fake, strict=True)), torch.zeros(()))


def generator_adversarial_loss(fake: Sequence[Judgement]) -> Tensor:
    """Least squares: the generator wants its logits at 1 ("real"), summed over sub-discriminators."""
    return sum((((1 - f.float()) ** 2).mean() for f, _ in fake), torch.zeros(()))


def feature_matching_loss(real: Sequence[Judgement], fake: Sequence[Judgement]) -> Tensor:
    """L1 between each layer's activations on real and on generated audio, real held fixed, summed over layers
    and sub-discriminators (HiFi-GAN): a dense, stable signal beside the single logit."""
    total = torch.zeros(())
    for (_, real_feats), (_, fake_feats) in zip(real, fake, strict=True):
        for r, f in zip(real_feats, fake_feats, strict=True):
            total = total + (r.detach().float() - f.float()).abs().mean()
    return total
