"""Vocoder training: teach a Vocos-style network (`model/vocos.py`) to turn our log-mel back into the waveform.

The reconstruction objective is a multi-resolution STFT loss (spectral convergence + log-magnitude L1, as in Parallel
WaveGAN) plus 45 x the L1 between the log-mel of the output and of the input (the HiFi-GAN / Vocos weighting), both
counted on real (non-padded) audio only. Reconstruction alone gives intelligible audio with a slightly buzzy,
over-smoothed high band; ``adversarial=True`` adds period and resolution discriminators
(`training/trainers/discriminators.py`) with least-squares and feature-matching losses, as HiFi-GAN and Vocos do. The
usual way to use it: train on reconstruction first, then warm-start an adversarial run from that vocoder (``--init``),
so the discriminators start against a generator that already speaks.
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
from training.data.loading import CutBatchDataset, all_of, loader_factory, min_duration, sampler_config, wideband
from training.tasks.pretraining import frame_mask

from .discriminators import Discriminators, discriminator_loss, feature_matching_loss, generator_adversarial_loss
from .trainer import TrainConfig, Trainer

# (n_fft, hop) pairs, window = n_fft: 32 ms to 128 ms at 16 kHz, around the 40 ms mel window, as in Parallel WaveGAN.
STFT_RESOLUTIONS: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512))
MEL_WEIGHT = 45.0
FEATURE_MATCHING_WEIGHT = 2.0  # HiFi-GAN's weights: adversarial 1, feature matching 2, mel 45
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

    def reconstruct(self, net: nn.Module, wav: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """wav (B, N), lengths (B,) -> (output (B, N), target (B, N), both float32 and zero past each length;
        the target's log-mel (B, T, n_mels))."""
        self.mel = self.mel.to(wav.device)
        target_log_mel = self.mel.log_mel(wav)  # (B, T, n_mels), float32
        pred = net(self.mel.normalize(target_log_mel))  # (B, T * hop), a little longer than N
        keep = sample_mask(lengths, wav.shape[1])
        return pred[:, : wav.shape[1]].float() * keep, wav.float() * keep, target_log_mel

    def reconstruction_terms(self, pred: Tensor, target: Tensor, target_log_mel: Tensor,
                             lengths: Tensor) -> dict[str, Tensor]:
        """{"stft": multi-resolution STFT loss, "mel": log-mel L1} (unweighted) of a reconstruction."""
        with torch.autocast(device_type=pred.device.type, enabled=False):
            frames = frame_mask(self.mel, lengths, target_log_mel.shape[1])[..., None].expand_as(target_log_mel)
            mel_l1 = (self.mel.log_mel(pred) - target_log_mel)[frames].abs().mean()
            return {"stft": self.stft_loss(pred, target, lengths), "mel": mel_l1}

    def terms(self, net: nn.Module, wav: Tensor, lengths: Tensor) -> dict[str, Tensor]:
        """The separate reconstruction terms (unweighted) of the network on a batch."""
        return self.reconstruction_terms(*self.reconstruct(net, wav, lengths), lengths)

    def __call__(self, net: nn.Module, batch: dict[str, Tensor], rng: np.random.Generator,
                 gen: torch.Generator) -> Tensor:
        """The Trainer's objective; deterministic, so rng and gen go unused."""
        terms = self.terms(net, batch["wav"], batch["lengths"])
        return terms["stft"] + self.mel_weight * terms["mel"]


class AdversarialVocoderObjective(VocoderObjective):
    """Reconstruction + least-squares adversarial + feature-matching losses against ``critic``, the discriminators,
    which the Trainer steps after the generator on the same batch (`critic_loss`)."""

    def __init__(self, config: VocosConfig, critic: Discriminators | None = None, mel_weight: float = MEL_WEIGHT,
                 feature_weight: float = FEATURE_MATCHING_WEIGHT) -> None:
        super().__init__(config, mel_weight)
        self.critic = critic or Discriminators()
        self.feature_weight = feature_weight
        self.metrics: dict[str, float] = {}  # the last step's separate terms, for the training log
        self._judged: tuple[Tensor, list] | None = None

    def __call__(self, net: nn.Module, batch: dict[str, Tensor], rng: np.random.Generator,
                 gen: torch.Generator) -> Tensor:
        lengths = batch["lengths"]
        pred, target, target_log_mel = self.reconstruct(net, batch["wav"], lengths)
        terms = self.reconstruction_terms(pred, target, target_log_mel, lengths)
        real = self.critic(target)  # kept with its graph: the critic's own step reuses it
        self.critic.requires_grad_(False)  # the generator's loss needs gradients for its input only
        try:
            fake = self.critic(pred)
        finally:
            self.critic.requires_grad_(True)
        adversarial, features = generator_adversarial_loss(fake), feature_matching_loss(real, fake)
        self._judged = (pred.detach(), real)
        parts = {**terms, "adv": adversarial, "fm": features}
        self.metrics = {k: float(v.detach()) for k, v in parts.items()}
        return terms["stft"] + self.mel_weight * terms["mel"] + adversarial + self.feature_weight * features

    def critic_loss(self) -> Tensor:
        """The discriminators' loss on the batch the generator was just scored on (its output held fixed)."""
        if self._judged is None:
            raise RuntimeError("critic_loss() needs a generator step on a batch first")
        pred, real = self._judged
        self._judged = None
        loss = discriminator_loss(real, self.critic(pred))
        self.metrics["critic"] = float(loss.detach())
        return loss


def train_vocoder(
    data: str | os.PathLike,
    out: str | os.PathLike,
    config: VocosConfig | None = None,
    train: TrainConfig | None = None,
    resume: bool = False,
    init: str | os.PathLike | None = None,
    adversarial: bool = False,
) -> Path:
    """Train (or resume) a vocoder on a CutSet of clean speech; returns the run directory (a vocoder directory).
    ``init`` warm-starts a new run from a vocoder directory (a bundle's ``vocoder/`` or an earlier run, when that
    run's state is gone with its machine); its architecture is kept. ``adversarial`` trains against discriminators
    too (their weights and optimizer live in the run's state; a run is resumed the way it was started)."""
    train = train or TrainConfig()
    out = Path(out)
    resuming = resume and (out / "config.json").is_file()
    source = out if resuming else init  # the architecture travels with the run (or the warm start)
    if source is None:
        torch.manual_seed(train.seed)  # the initial weights are part of the run's recipe
        vocoder = VocosVocoder(config or VocosConfig())
    else:
        vocoder = VocosVocoder.from_pretrained(source)
        if config is not None and _shape(config) != _shape(vocoder.config):
            advice = "resume it without one or use a new --out" if resuming else "warm-start it without one"
            raise ConfigError(f"{source} holds a vocoder with another config; {advice}")
        if not resuming:
            vocoder.config.extra = {"init": {"from": str(init),
                                             "step": vocoder.config.extra.get("training", {}).get("step")}}
    dataset = CutBatchDataset(train.max_seconds, vocoder.config.mel.sample_rate, seed=train.seed)
    # A band-limited cut (an 8 kHz source) would teach the vocoder to leave the high band empty.
    keep = all_of(min_duration(0.1), wideband())
    loaders = loader_factory(data, dataset, sampler_config(train), train.num_workers, keep=keep)
    vocoder.config.extra["objective"] = "adversarial" if adversarial else "reconstruction"
    if adversarial:
        torch.manual_seed(train.seed + 1)  # the discriminators' initial weights: part of the recipe, apart from G's
        objective: VocoderObjective = AdversarialVocoderObjective(vocoder.config)
    else:
        objective = VocoderObjective(vocoder.config)
    return Trainer(vocoder, objective, loaders, train, out).fit(resume=resume)


def _shape(config: VocosConfig) -> dict:
    """A config without its provenance: what must agree for weights to be resumed."""
    return {k: v for k, v in config.to_dict().items() if k != "extra"}
