"""Vocoder training: teach a Vocos-style network (`model/vocos.py`) to turn our log-mel back into the waveform.

The objective is reconstruction only: a multi-resolution STFT loss (spectral convergence + log-magnitude L1, as in
Parallel WaveGAN) plus 45 x the L1 between the log-mel of the output and of the input (the HiFi-GAN / Vocos
weighting), both counted on real (non-padded) audio only. Reconstruction losses alone give intelligible audio with a
slightly buzzy, over-smoothed high band; adversarial training (multi-period and multi-resolution discriminators, with
feature matching, as HiFi-GAN and Vocos do) is the known remedy and a possible later addition, not part of this
module.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from model.errors import ConfigError
from model.features import MelSpectrogram
from model.vocos import VocosConfig, VocosVocoder

from .data import CutBatchDataset, loader_factory, min_duration, sampler_config
from .pretrain import frame_mask
from .trainer import TrainConfig, Trainer

# (n_fft, hop) pairs, window = n_fft: 32 ms to 128 ms at 16 kHz, around the 40 ms mel window, as in Parallel WaveGAN.
STFT_RESOLUTIONS: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512))
MEL_WEIGHT = 45.0
LOG_FLOOR = 1e-5  # the mel features' floor too: below it, differences are inaudible and log() would explode


def sample_mask(lengths: Tensor, num_samples: int) -> Tensor:
    """Lengths (B,) -> (B, num_samples) bool, True on real samples."""
    return torch.arange(num_samples, device=lengths.device)[None, :] < lengths[:, None]


class MultiResolutionSTFTLoss:
    """Spectral convergence + log-magnitude L1, averaged over STFT resolutions, on the frames of real audio.

    Both waveforms must already be zero beyond their lengths, so a frame that straddles the end compares like with
    like; frames centred in the padding are not counted.
    """

    def __init__(self, resolutions: Sequence[tuple[int, int]] = STFT_RESOLUTIONS, floor: float = LOG_FLOOR) -> None:
        self.resolutions = tuple(resolutions)
        self.floor = floor

    def __call__(self, pred: Tensor, target: Tensor, lengths: Tensor) -> Tensor:
        """pred, target (B, N) float32, lengths (B,) -> scalar."""
        total = pred.new_zeros(())
        for n_fft, hop in self.resolutions:
            window = torch.hann_window(n_fft, periodic=True, device=pred.device)
            # Zero (not reflect) padding: the loss must work on crops shorter than n_fft / 2.
            spec = {name: torch.stft(x, n_fft, hop, window=window, center=True, pad_mode="constant",
                                     return_complex=True).abs()
                    for name, x in (("pred", pred), ("target", target))}  # each (B, F, frames)
            frames = spec["pred"].shape[-1]
            keep = (torch.arange(frames, device=pred.device)[None, :] * hop < lengths[:, None])[:, None, :]  # (B,1,T)
            keep = keep.expand_as(spec["pred"])
            p, t = spec["pred"][keep], spec["target"][keep]
            # Batch-level norms (not per item): a silent crop must not divide by ~0.
            convergence = torch.linalg.vector_norm(t - p) / torch.linalg.vector_norm(t).clamp(min=self.floor)
            log_l1 = (torch.log(t.clamp(min=self.floor)) - torch.log(p.clamp(min=self.floor))).abs().mean()
            total = total + convergence + log_l1
        return total / len(self.resolutions)


class VocoderObjective:
    """Batch {"wav": (B, N), "lengths": (B,)} -> features -> network -> reconstruction loss (scalar)."""

    def __init__(
        self,
        config: VocosConfig,
        mel_weight: float = MEL_WEIGHT,
        resolutions: Sequence[tuple[int, int]] = STFT_RESOLUTIONS,
    ) -> None:
        self.config = config
        self.mel = MelSpectrogram(config.mel)
        self.mel_weight = mel_weight
        self.stft_loss = MultiResolutionSTFTLoss(resolutions)

    def terms(self, net: nn.Module, wav: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """The separate loss terms (unweighted): {"stft": multi-resolution STFT loss, "mel": log-mel L1}."""
        self.mel = self.mel.to(wav.device)
        target_log_mel = self.mel.log_mel(wav)  # (B, T, n_mels), float32
        pred = net(self.mel.normalize(target_log_mel))  # (B, T * hop), a little longer than N
        with torch.autocast(device_type=wav.device.type, enabled=False):
            keep = sample_mask(lengths, wav.shape[1])
            pred = pred[:, : wav.shape[1]].float() * keep
            target = wav.float() * keep
            frames = frame_mask(self.mel, lengths, target_log_mel.shape[1])[..., None].expand_as(target_log_mel)
            mel_l1 = (self.mel.log_mel(pred) - target_log_mel)[frames].abs().mean()
            return {"stft": self.stft_loss(pred, target, lengths), "mel": mel_l1}

    def __call__(self, net: nn.Module, batch: dict[str, Tensor], rng: np.random.Generator,
                 gen: torch.Generator) -> Tensor:
        """The Trainer's objective; deterministic, so rng and gen go unused."""
        terms = self.terms(net, batch["wav"], batch["lengths"])
        return terms["stft"] + self.mel_weight * terms["mel"]


def train_vocoder(
    data: str | os.PathLike,
    out: str | os.PathLike,
    config: VocosConfig | None = None,
    train: TrainConfig | None = None,
    resume: bool = False,
    init: str | os.PathLike | None = None,
) -> Path:
    """Train (or resume) a vocoder on a CutSet of clean speech; returns the run directory (a vocoder directory).
    ``init`` warm-starts a new run from a vocoder directory (a bundle's ``vocoder/`` or an earlier run, when that
    run's state is gone with its machine); its architecture is kept."""
    train = train or TrainConfig()
    out = Path(out)
    if resume and (out / "config.json").is_file():
        vocoder = VocosVocoder.from_pretrained(out)  # the architecture travels with the run
        if config is not None and _shape(config) != _shape(vocoder.config):
            raise ConfigError(f"{out} holds a vocoder with another config; resume it without one or use a new --out")
    elif init is not None:
        vocoder = VocosVocoder.from_pretrained(init)
        if config is not None and _shape(config) != _shape(vocoder.config):
            raise ConfigError(f"{init} holds a vocoder with another config; warm-start it without one")
        vocoder.config.extra = {"init": {"from": str(init),
                                         "step": vocoder.config.extra.get("training", {}).get("step")}}
    else:
        torch.manual_seed(train.seed)  # the initial weights are part of the run's recipe
        vocoder = VocosVocoder(config or VocosConfig())
    dataset = CutBatchDataset(train.max_seconds, vocoder.config.mel.sample_rate, seed=train.seed)
    loaders = loader_factory(data, dataset, sampler_config(train), train.num_workers, keep=min_duration(0.1))
    return Trainer(vocoder, VocoderObjective(vocoder.config), loaders, train, out).fit(resume=resume)


def _shape(config: VocosConfig) -> dict:
    """A config without its provenance: what must agree for weights to be resumed."""
    return {k: v for k, v in config.to_dict().items() if k != "extra"}
