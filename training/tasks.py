"""Fine-tuning data and objectives: enhancement (noisy -> clean) and two-speaker separation (mixture -> both).

Items are built on the fly from a clean-speech manifest with seeded augmentation, so every step sees new noise and
new mixtures, and a resumed run sees the same ones. Real paired corpora are used as they are: a manifest row with a
``noisy`` path (VoiceBank-DEMAND) or ``sources`` (LibriMix) bypasses the synthetic mixing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from model.config import ModelConfig
from model.features import MelSpectrogram
from model.flow import FlowMatching

from .augment import AugmentConfig, NoiseBank, make_noisy, mix_speakers
from .data import CropKey, read_crop
from .manifest import Utterance
from .pretrain import frame_mask

BABBLE_SOURCES = 48  # utterances kept in memory as babble material


def _resolve(utt: Utterance, key: str) -> Path:
    path = Path(utt.meta[key])
    return path if path.is_absolute() else utt.audio.parent / path  # relative to the manifest, like "audio"


class NoisyCropDataset(Dataset):
    """(index, seed) -> {"clean": (n,), "noisy": (n,)}: a crop, mixed with sampled noise at a sampled SNR."""

    def __init__(self, utterances: Sequence[Utterance], max_seconds: float, augment: AugmentConfig | None = None,
                 sample_rate: int = 16000, seed: int = 0) -> None:
        self.utterances, self.max_seconds, self.sample_rate = list(utterances), max_seconds, sample_rate
        self.augment = augment or AugmentConfig()
        rng = np.random.default_rng([seed, 7])
        picks = rng.choice(len(self.utterances), size=min(BABBLE_SOURCES, len(self.utterances)), replace=False)
        babble = [read_crop(self.utterances[i].audio, 4.0, int(i), sample_rate)[0] for i in picks]
        self.bank = NoiseBank(babble_sources=babble)

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, key: CropKey) -> dict[str, np.ndarray]:
        index, seed = key
        utt = self.utterances[index]
        clean, start = read_crop(utt.audio, self.max_seconds, seed, self.sample_rate)
        if "noisy" in utt.meta:  # a real pair: the same crop of the noisy twin
            noisy = read_crop(_resolve(utt, "noisy"), self.max_seconds, seed, self.sample_rate, start_s=start)[0]
            n = min(len(clean), len(noisy))
            return {"clean": clean[:n], "noisy": noisy[:n]}
        noisy, target, _ = make_noisy(np.random.default_rng(seed), clean, self.bank, self.augment)
        return {"clean": target, "noisy": noisy}


class MixtureDataset(Dataset):
    """(index, seed) -> {"mix": (n,), "s1": (n,), "s2": (n,)}: utterance ``index`` plus one of another speaker."""

    def __init__(self, utterances: Sequence[Utterance], max_seconds: float, sample_rate: int = 16000,
                 rel_db: tuple[float, float] = (-5.0, 5.0)) -> None:
        self.utterances, self.max_seconds, self.sample_rate = list(utterances), max_seconds, sample_rate
        self.rel_db = rel_db
        self.speakers = np.array([str(u.meta.get("speaker", i)) for i, u in enumerate(self.utterances)])

    def __len__(self) -> int:
        return len(self.utterances)

    def _partner(self, rng: np.random.Generator, index: int) -> int:
        others = np.flatnonzero(self.speakers != self.speakers[index])
        return int(rng.choice(others)) if len(others) else int(rng.integers(len(self.utterances)))

    def __getitem__(self, key: CropKey) -> dict[str, np.ndarray]:
        index, seed = key
        utt = self.utterances[index]
        if "sources" in utt.meta:  # a real mixture (LibriMix): crop mixture and sources together
            mix, start = read_crop(utt.audio, self.max_seconds, seed, self.sample_rate)
            s1, s2 = (read_crop(Path(p) if Path(p).is_absolute() else utt.audio.parent / p, self.max_seconds, seed,
                                self.sample_rate, start_s=start)[0] for p in utt.meta["sources"][:2])
            n = min(len(mix), len(s1), len(s2))
            return {"mix": mix[:n], "s1": s1[:n], "s2": s2[:n]}
        rng = np.random.default_rng(seed)
        s1 = read_crop(utt.audio, self.max_seconds, seed, self.sample_rate)[0]
        partner = self.utterances[self._partner(rng, index)]
        s2 = read_crop(partner.audio, self.max_seconds, seed + 1, self.sample_rate)[0]
        length = int(self.max_seconds * self.sample_rate)
        mix, (a, b), _ = mix_speakers(rng, s1, s2, self.rel_db, max_offset_s=0.5 * self.max_seconds,
                                      length=min(length, max(len(s1), len(s2))), sr=self.sample_rate)
        return {"mix": mix, "s1": a, "s2": b}


def drop_condition(cond: Tensor, p: float, gen: torch.Generator) -> Tensor:
    """Zero the whole condition of each sample with probability p (trains the unconditional branch used by
    classifier-free guidance)."""
    keep = torch.rand(cond.shape[0], device=cond.device, generator=gen) >= p
    return cond * keep[:, None, None].to(cond.dtype)


class EnhanceObjective:
    """Condition on noisy features, generate clean ones; every real frame is a target."""

    def __init__(self, config: ModelConfig) -> None:
        self.config, self.mel, self.flow = config, MelSpectrogram(config.mel), FlowMatching(config.flow)

    def __call__(self, net: nn.Module, batch: dict[str, Tensor], rng: np.random.Generator,
                 gen: torch.Generator) -> Tensor:
        self.mel = self.mel.to(batch["clean"].device)
        x1, noisy = self.mel(batch["clean"]), self.mel(batch["noisy"])  # (B, T, n_mels) each
        mask = frame_mask(self.mel, batch["lengths"], x1.shape[1])
        cond = drop_condition(noisy, self.config.flow.p_uncond, gen)
        return self.flow.loss(net, x1, cond, mask, mask, generator=gen)


class SeparateObjective:
    """Condition on the mixture, generate both speakers stacked on the feature axis (B, T, 2 n_mels), with a
    permutation-invariant loss: per sample, the speaker order with the lower error counts. Both orders share the
    noise and time and run as one doubled batch."""

    def __init__(self, config: ModelConfig) -> None:
        self.config, self.mel, self.flow = config, MelSpectrogram(config.mel), FlowMatching(config.flow)

    def __call__(self, net: nn.Module, batch: dict[str, Tensor], rng: np.random.Generator,
                 gen: torch.Generator) -> Tensor:
        self.mel = self.mel.to(batch["mix"].device)
        s1, s2, mix = self.mel(batch["s1"]), self.mel(batch["s2"]), self.mel(batch["mix"])
        mask = frame_mask(self.mel, batch["lengths"], mix.shape[1])
        cond = drop_condition(mix, self.config.flow.p_uncond, gen)
        x1 = torch.cat([s1, s2], dim=-1)
        x1_swapped = torch.cat([s2, s1], dim=-1)
        t, x0 = self.flow.draw(x1, gen)
        err = self.flow.velocity_error(net, torch.cat([x1, x1_swapped]), torch.cat([x0, x0]), torch.cat([t, t]),
                                       torch.cat([cond, cond]), torch.cat([mask, mask]))
        weights = torch.cat([mask, mask])[..., None].to(err.dtype)
        per_sample = (err * weights).sum((1, 2)) / (weights.sum((1, 2)) * err.shape[-1]).clamp_min(1.0)
        return per_sample.view(2, -1).min(dim=0).values.mean()
