"""Pre-training: masked-condition flow matching on untranscribed audio (the SpeechFlow recipe); the objective is
`training.tasks.pretraining`'s."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from model.config import ModelConfig, preset
from model.modeling import SpeechFlowModel
from training.data.loading import CutBatchDataset, loader_factory, min_duration, sampler_config
from training.tasks.pretraining import PretrainObjective

from .trainer import TrainConfig, Trainer


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
