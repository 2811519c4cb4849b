"""Fine-tuning data and objectives: enhancement (noisy -> clean) and two-speaker separation (mixture -> both).

Items are built on the fly from clean-speech cuts with seeded augmentation, so every step sees new noise and new
mixtures, and a resumed run sees the same ones. Real paired corpora are used as they are: a cut with a ``noisy``
Recording (VoiceBank-DEMAND) or ``sources`` (LibriMix) bypasses the synthetic mixing.
"""

from __future__ import annotations

import os
from itertools import islice

import numpy as np
import torch
from lhotse import CutSet
from lhotse.cut import Cut
from torch import Tensor, nn

from model.config import ModelConfig
from model.features import MelSpectrogram
from model.flow import FlowMatching, masked_mean
from model.reconstruct import enhancement_gains, speaker_shares
from training.augmentation.mixing import AugmentConfig, make_noisy, mix_speakers
from training.augmentation.noise import NoiseBank
from training.augmentation.pairing import MixtureConfig, pick_partner, speaker_keys
from training.data.loading import CutBatchDataset, crop_cut, cut_seed, load_mono
from training.data.manifest import open_cuts

from .pretraining import frame_mask

BABBLE_SOURCES = 48  # utterances kept in memory as babble material
BABBLE_POOL = 4 * BABBLE_SOURCES  # the first cuts of the data, from which they are drawn (seeded)


def babble_sources(data: str | os.PathLike, sample_rate: int, seed: int, seconds: float = 4.0) -> list[np.ndarray]:
    """The first ``seconds`` of a seeded pick of the data's first cuts (no random access into a lazy CutSet)."""
    pool = list(islice(open_cuts(data), BABBLE_POOL))
    picks = np.random.default_rng([seed, 7]).choice(len(pool), size=min(BABBLE_SOURCES, len(pool)), replace=False)
    return [load_mono(pool[int(i)].truncate(duration=min(seconds, pool[int(i)].duration)), sample_rate)
            for i in sorted(picks)]


class NoisyCropDataset(CutBatchDataset):
    """Cut -> {"clean": (n,), "noisy": (n,)}: a crop through `make_noisy` (noise at a sampled SNR; by default
    `AugmentConfig.training()`: rooms, colouration, level, clipping), or the same crop of its real noisy twin."""

    def __init__(self, data: str | os.PathLike, max_seconds: float, augment: AugmentConfig | None = None,
                 sample_rate: int = 16000, seed: int = 0) -> None:
        super().__init__(max_seconds, sample_rate, seed)
        self.augment = augment or AugmentConfig.training()
        self.bank = NoiseBank(babble_sources=babble_sources(data, sample_rate, seed))

    def item(self, cut: Cut, seed: int) -> dict[str, np.ndarray]:
        crop, _ = crop_cut(cut, self.max_seconds, seed)
        clean = load_mono(crop, self.sample_rate)
        if crop.has_custom("noisy"):  # a real pair: the same crop of the noisy twin
            noisy = load_mono(crop, self.sample_rate, "noisy")
            n = min(len(clean), len(noisy))
            return {"clean": clean[:n], "noisy": noisy[:n]}
        noisy, target, _ = make_noisy(np.random.default_rng(seed), clean, self.bank, self.augment)
        return {"clean": target, "noisy": noisy}


class MixtureDataset(CutBatchDataset):
    """Cut -> {"mix": (n,), "s1": (n,), "s2": (n,)}: a crop of the cut plus one of another speaker's cut from the same
    batch, or a real mixture's own sources. Dynamic mixing: batches are reshuffled every epoch and the partner,
    levels and offsets are drawn from (seed, epoch, cut id), so pairs change every epoch and a resumed run, any worker
    or rank, makes the same ones. `MixtureConfig.p_hard` of them pair same-engine, same-gender speakers."""

    def __init__(self, max_seconds: float, sample_rate: int = 16000, seed: int = 0,
                 mixing: MixtureConfig | None = None) -> None:
        super().__init__(max_seconds, sample_rate, seed)
        self.mixing = mixing or MixtureConfig()

    def pairs(self, batch: list[Cut], epoch: int) -> list[tuple[int, str]]:
        """(partner index, pair kind) per cut of the batch (`pick_partner`); real mixtures' entries are unused."""
        keys = speaker_keys(batch)
        return [pick_partner(np.random.default_rng(cut_seed(self.seed, epoch, cut)), i, keys, self.mixing.p_hard)
                for i, cut in enumerate(batch)]

    def items(self, cuts: CutSet, epoch: int) -> list[dict[str, np.ndarray]]:
        batch = list(cuts)
        pairs = self.pairs(batch, epoch) if not all(c.has_custom("sources") for c in batch) else []
        out = []
        for i, cut in enumerate(batch):
            seed = cut_seed(self.seed, epoch, cut)
            if cut.has_custom("sources"):
                out.append(self.real(cut, seed))
                continue
            rng = np.random.default_rng([seed, 1])  # the partner draw used (seed); the mixing has its own stream
            out.append(self.synthetic(rng, cut, batch[pairs[i][0]], seed))
        return out

    def real(self, cut: Cut, seed: int) -> dict[str, np.ndarray]:
        """A real mixture (LibriMix): mixture and sources cropped together."""
        crop, _ = crop_cut(cut, self.max_seconds, seed)
        mix, sources = load_mono(crop, self.sample_rate), load_mono(crop, self.sample_rate, "sources")
        n = min(len(mix), sources.shape[-1])
        return {"mix": mix[:n], "s1": sources[0, :n], "s2": sources[1, :n]}

    def synthetic(self, rng: np.random.Generator, cut: Cut, partner: Cut, seed: int) -> dict[str, np.ndarray]:
        cfg = self.mixing
        s1 = load_mono(crop_cut(cut, self.max_seconds, seed)[0], self.sample_rate)
        s2 = load_mono(crop_cut(partner, self.max_seconds, seed + 1)[0], self.sample_rate)
        length = int(self.max_seconds * self.sample_rate)
        mix, (a, b), _ = mix_speakers(rng, s1, s2, cfg.rel_db, max_offset_s=cfg.max_offset * self.max_seconds,
                                      length=min(length, max(len(s1), len(s2))), sr=self.sample_rate,
                                      level_dbfs=cfg.level_dbfs)
        return {"mix": mix, "s1": a, "s2": b}


def drop_condition(cond: Tensor, p: float, gen: torch.Generator) -> Tensor:
    """Zero the whole condition of each sample with probability p (trains the unconditional branch used by
    classifier-free guidance)."""
    keep = torch.rand(cond.shape[0], device=cond.device, generator=gen) >= p
    return cond * keep[:, None, None].to(cond.dtype)


class EnhanceObjective:
    """Condition on noisy features, generate clean ones; every real frame is a target. A one-step student whose
    config asks for it (``extra.student.loss == "mask"``) is scored on the band gains the mask reconstruction
    applies instead (`mask_loss`)."""

    def __init__(self, config: ModelConfig) -> None:
        self.config, self.mel, self.flow = config, MelSpectrogram(config.mel), FlowMatching(config.flow)
        self.mask_loss = config.student.get("loss") == "mask"

    def __call__(self, net: nn.Module, batch: dict[str, Tensor], rng: np.random.Generator,
                 gen: torch.Generator) -> Tensor:
        self.mel = self.mel.to(batch["clean"].device)
        x1, noisy = self.mel(batch["clean"]), self.mel(batch["noisy"])  # (B, T, n_mels) each
        mask = frame_mask(self.mel, batch["lengths"], x1.shape[1])
        if self.mask_loss:
            return mask_loss(self.mel, net, x1, noisy, mask)
        cond = drop_condition(noisy, self.config.flow.p_uncond, gen)
        return self.flow.loss(net, x1, cond, mask, mask, generator=gen)


def mask_loss(mel: MelSpectrogram, net: nn.Module, x1: Tensor, noisy: Tensor, mask: Tensor,
              log_weight: float = 0.1) -> Tensor:
    """A deterministic one-step student's loss in the domain it is used in: the squared error of the band gains
    (`model.reconstruct.enhancement_gains`) its output implies against the clean speech's, plus ``log_weight`` of
    the log-mel error (it keeps bands where both gains saturate, at 0 or 1, anchored).

    The log-mel regression alone estimates E[log mel], whose gains are a geometric mean: below the mean gain the
    teacher's averaged draws estimate wherever the speech is uncertain, so it over-suppresses; this loss's optimum
    is the posterior-mean gain itself. Gains are clipped at 1 as the reconstruction clips them; an overshoot above
    the input keeps a gradient through the log-mel term. x1, noisy (B, T, n_mels) normalised log-mels, mask (B, T)."""
    t = torch.zeros(x1.shape[0], device=x1.device)
    out = net(torch.zeros_like(x1), t, noisy, mask).float()  # from x0 = 0 at t = 0: the estimate itself
    log_noisy = mel.denormalize(noisy)
    predicted, target = (enhancement_gains(mel.denormalize(y), log_noisy) for y in (out, x1))
    return masked_mean((predicted - target) ** 2 + log_weight * (out - x1) ** 2, mask)


def separation_mask_loss(mel: MelSpectrogram, net: nn.Module, x1: Tensor, mix: Tensor, mask: Tensor,
                         log_weight: float = 0.1) -> Tensor:
    """`mask_loss` for a one-step separation student, permutation-invariant: the squared error of each speaker's
    share of the mixture (`model.reconstruct.speaker_shares`, what `separation_masks` applies) plus ``log_weight``
    of the log-mel error, in the speaker order that fits each sample better. x1 both speakers' normalised log-mels
    stacked (B, T, 2 n_mels), mix (B, T, n_mels), mask (B, T)."""
    t = torch.zeros(x1.shape[0], device=x1.device)
    out = net(torch.zeros_like(x1), t, mix, mask).float()  # from x0 = 0 at t = 0: the estimate itself
    shares = speaker_shares(mel.denormalize(out))  # (B, T, 2, n_mels)
    errors = []
    for order in (x1, torch.cat(x1.chunk(2, dim=-1)[::-1], dim=-1)):
        target = speaker_shares(mel.denormalize(order))
        err = ((shares - target) ** 2).flatten(-2) + log_weight * (out - order) ** 2  # (B, T, 2 n_mels)
        errors.append(per_sample_mean(err, mask))
    return torch.stack(errors).min(dim=0).values.mean()


def per_sample_mean(err: Tensor, mask: Tensor) -> Tensor:
    """(B, T, D) errors -> (B,) each sample's mean over its real frames (mask (B, T)), for a per-sample choice of
    speaker order."""
    weights = mask[..., None].to(err.dtype)
    return (err * weights).sum((1, 2)) / (weights.sum((1, 2)) * err.shape[-1]).clamp_min(1.0)


class SeparateObjective:
    """Condition on the mixture, generate both speakers stacked on the feature axis (B, T, 2 n_mels), with a
    permutation-invariant loss: per sample, the speaker order with the lower error counts. Both orders share the
    noise and time and run as one doubled batch. A one-step student asking for it is scored on the speakers'
    shares of the mixture instead (`separation_mask_loss`)."""

    def __init__(self, config: ModelConfig) -> None:
        self.config, self.mel, self.flow = config, MelSpectrogram(config.mel), FlowMatching(config.flow)
        self.mask_loss = config.student.get("loss") == "mask"

    def __call__(self, net: nn.Module, batch: dict[str, Tensor], rng: np.random.Generator,
                 gen: torch.Generator) -> Tensor:
        self.mel = self.mel.to(batch["mix"].device)
        s1, s2, mix = self.mel(batch["s1"]), self.mel(batch["s2"]), self.mel(batch["mix"])
        mask = frame_mask(self.mel, batch["lengths"], mix.shape[1])
        x1 = torch.cat([s1, s2], dim=-1)
        if self.mask_loss:
            return separation_mask_loss(self.mel, net, x1, mix, mask)
        cond = drop_condition(mix, self.config.flow.p_uncond, gen)
        x1_swapped = torch.cat([s2, s1], dim=-1)
        t, x0 = self.flow.draw(x1, gen)
        err = self.flow.velocity_error(net, torch.cat([x1, x1_swapped]), torch.cat([x0, x0]), torch.cat([t, t]),
                                       torch.cat([cond, cond]), torch.cat([mask, mask]))
        return per_sample_mean(err, torch.cat([mask, mask])).view(2, -1).min(dim=0).values.mean()
