"""Duration model training (`model/duration.py`): masked-span regression on log(1 + frames) over manifest phones.

Data are the manifest rows that carry phone alignments ("phones": [[symbol, start, end], ...]; espeak-ng rows of the
synthetic corpus, MFA phones put there by a manifest builder, or the prompt aligner's labels from `speechflow label`);
rows without them are skipped.
Only phones and times are read, never audio, so a whole corpus sits in memory and a step costs milliseconds.

Batches hold whole utterances under a budget of padded phones (`batch_phones`), from the same Lhotse sampler as the
audio tasks (`training.data.loading`) with the phone count as a cut's length; `TrainConfig.batch_seconds` and
`max_seconds` (audio crops) do not apply here.
Flow-matching durations (Voicebox's alternative) are not built; see `model/duration.py`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lhotse.cut import Cut
from torch import Tensor, nn

from model.duration import DurationConfig, DurationModel
from model.errors import ConfigError
from model.text import PAD_ID, PhoneVocab
from training.data.alignments import durations_from_phones
from training.data.cuts import cut_phones, has_phones
from training.data.loading import CropBudget, CutBatchDataset, SamplerConfig, loader_factory
from training.data.manifest import Utterance, read_manifest, rows_with_phones
from training.tasks.masking import pretraining_masks

from .trainer import TrainConfig, Trainer

DEFAULT_BATCH_PHONES = 1024  # ~25 sentences: 0.2-0.4 s a step on 2 busy CPU cores


def default_train_config(**overrides: Any) -> TrainConfig:
    """A small model on cheap batches: a higher learning rate and a short warm-up than the acoustic model's."""
    return TrainConfig(**{"steps": 2000, "lr": 1e-3, "warmup": 100, "save_every": 500, "num_workers": 0,
                          **overrides})


def vocab_for(rows: Sequence[Utterance]) -> PhoneVocab:
    """espeak's default inventory when the data fit it (so TTS and duration checkpoints share ids), else the data's."""
    default = PhoneVocab.default()
    found = {p[0] for u in rows for p in u.meta["phones"]}
    return default if found <= set(default.symbols) else PhoneVocab.from_sequences([found])


class PhoneDurationDataset(CutBatchDataset):
    """Cut -> {"phones": (N,) int64 ids, "durations": (N,) int64 frames} of the whole utterance (no audio read)."""

    def __init__(self, vocab: PhoneVocab, fps: int) -> None:
        super().__init__(None)
        self.vocab, self.fps = vocab, fps

    def item(self, cut: Cut, seed: int) -> dict[str, np.ndarray]:
        symbols, durations = durations_from_phones(cut_phones(cut), self.fps)
        return {"phones": np.asarray(self.vocab.encode(symbols), dtype=np.int64), "durations": durations}

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, Tensor]:
        return collate_phones(items)


@dataclass
class PhoneBudget(CropBudget):
    """The frame budget in phones: a cut's length is its number of phones."""

    def measure_length(self, example: Cut) -> float:
        return float(len(cut_phones(example) or ()))


def collate_phones(items: list[dict[str, np.ndarray]]) -> dict[str, Tensor]:
    """-> {"phones": (B, N) long, 0-padded; "durations": (B, N) float32 frames; "lengths": (B,) long}."""
    lengths = torch.tensor([len(item["phones"]) for item in items])
    phones = torch.full((len(items), int(lengths.max())), PAD_ID, dtype=torch.long)
    durations = torch.zeros(phones.shape)
    for i, item in enumerate(items):
        phones[i, : lengths[i]] = torch.from_numpy(item["phones"])
        durations[i, : lengths[i]] = torch.from_numpy(item["durations"]).float()
    return {"phones": phones, "durations": durations, "lengths": lengths}


class DurationObjective:
    """Known durations = the unmasked phones'; the loss (L1 or MSE on log(1 + frames)) counts masked phones only."""

    def __init__(self, config: DurationConfig) -> None:
        self.config = config

    def loss(self, net: nn.Module, batch: dict[str, Tensor], masked: Tensor) -> Tensor:
        target = torch.log1p(batch["durations"].float())  # (B, N)
        masked = masked.to(target.device) & (batch["phones"] != PAD_ID)
        pred = net(batch["phones"], target * ~masked, ~masked).float()
        error = pred[masked] - target[masked]
        return error.abs().mean() if self.config.loss == "l1" else error.square().mean()

    def __call__(self, net: nn.Module, batch: dict[str, Tensor], rng: np.random.Generator,
                 gen: torch.Generator) -> Tensor:
        masked = pretraining_masks(rng, batch["lengths"].tolist(), batch["phones"].shape[1], self.config)
        return self.loss(net, batch, masked)


def train_duration(
    data: str | os.PathLike,
    out: str | os.PathLike,
    config: DurationConfig | None = None,
    train: TrainConfig | None = None,
    resume: bool = False,
    batch_phones: int = DEFAULT_BATCH_PHONES,
) -> Path:
    """Train (or resume) a duration model on a CutSet's phone alignments; returns the run directory (a loadable
    duration model directory). Without `config`, the vocabulary is espeak's default inventory if the data fit it."""
    train = train or default_train_config()
    out = Path(out)
    rows = rows_with_phones(read_manifest(data))
    if resume and (out / "config.json").is_file():
        model = DurationModel.from_pretrained(out)  # the architecture and vocabulary travel with the run
        if config is not None and _shape(config) != _shape(model.config):
            raise ConfigError(f"{out} holds a duration model with another config; resume without one or use a new out")
    else:
        torch.manual_seed(train.seed)  # the initial weights are part of the run's recipe
        model = DurationModel(config or DurationConfig(vocab=vocab_for(rows).to_list()))
    model.config.extra["data"] = {"manifest": str(data), "utterances": len(rows)}
    budget = max(batch_phones, max(len(u.meta["phones"]) for u in rows))  # a longest utterance still fits alone
    sampling = SamplerConfig(budget, seed=train.seed, max_cuts=1024, constraint=PhoneBudget)
    loaders = loader_factory(data, PhoneDurationDataset(model.vocab, model.config.fps), sampling, keep=has_phones)
    return Trainer(model, DurationObjective(model.config), loaders, train, out).fit(resume=resume)


def _shape(config: DurationConfig) -> dict:
    return {k: v for k, v in config.to_dict().items() if k != "extra"}
