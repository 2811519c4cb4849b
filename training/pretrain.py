"""Pre-training: masked-condition flow matching on untranscribed audio (the SpeechFlow recipe)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from model.config import ModelConfig, preset
from model.features import MelSpectrogram
from model.flow import FlowMatching
from model.modeling import SpeechFlowModel

from .data import CutBatchDataset, loader_factory, min_duration, sampler_config
from .masking import pretraining_masks
from .trainer import TrainConfig, Trainer


def frame_mask(mel: MelSpectrogram, lengths: Tensor, num_frames: int) -> Tensor:
    """Sample lengths (B,) -> (B, num_frames) bool, True on frames computed from real (non-padding) audio."""
    frames = torch.tensor([mel.num_frames(int(n)) for n in lengths], device=lengths.device)
    return torch.arange(num_frames, device=lengths.device)[None, :] < frames[:, None]


class PretrainObjective:
    """Features of the crops; condition = features with masked frames zeroed; loss on masked, real frames."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.mel = MelSpectrogram(config.mel)
        self.flow = FlowMatching(config.flow)

    def __call__(self, net: nn.Module, batch: dict[str, Tensor], rng: np.random.Generator,
                 gen: torch.Generator) -> Tensor:
        self.mel = self.mel.to(batch["wav"].device)
        x1 = self.mel(batch["wav"])  # (B, T, n_mels)
        mask = frame_mask(self.mel, batch["lengths"], x1.shape[1])
        masked = pretraining_masks(rng, mask.sum(1).tolist(), x1.shape[1], self.config.flow).to(x1.device)
        cond = x1 * (~masked)[..., None]
        return self.flow.loss(net, x1, cond, mask, masked, generator=gen)


def pretrain(
    data: str | os.PathLike,
    out: str | os.PathLike,
    preset_name: str = "tiny",
    train: TrainConfig | None = None,
    resume: bool = False,
    init: str | os.PathLike | None = None,
) -> Path:
    """Pre-train (or resume) a model on a CutSet (a manifest or Shar shards); returns the run directory (a loadable
    model directory).

    ``init`` warm-starts a new run from a model directory (e.g. the shipped bundle's ``pretrained/`` when the run
    state of an earlier machine is gone); its architecture is kept and ``preset_name`` ignored.
    """
    train = train or TrainConfig()
    out = Path(out)
    if resume and (out / "config.json").is_file():
        model = SpeechFlowModel.from_pretrained(out)  # the architecture travels with the run
    elif init is not None:
        model = SpeechFlowModel.from_pretrained(init)
        model.config.extra = {"init": {"from": str(init), "step": model.config.extra.get("training", {}).get("step")}}
    else:
        torch.manual_seed(train.seed)  # the initial weights are part of the run's recipe
        model = SpeechFlowModel(ModelConfig(task="pretrain", preset=preset_name, network=preset(preset_name)))
    dataset = CutBatchDataset(train.max_seconds, model.config.mel.sample_rate, seed=train.seed)
    loaders = loader_factory(data, dataset, sampler_config(train), train.num_workers, keep=min_duration(0.1))
    return Trainer(model, PretrainObjective(model.config), loaders, train, out).fit(resume=resume)
