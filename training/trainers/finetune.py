"""Fine-tuning a pre-trained SpeechFlow model for a task, with the same training loop as pre-training."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import torch
from torch import Tensor

from model.bundle import training_steps
from model.checkpoint import read_weights
from model.config import ModelConfig
from model.defaults import sampling
from model.errors import ConfigError
from model.flow import FlowMatching
from model.modeling import SpeechFlowModel
from model.solvers import step_times
from model.text import PhoneVocab
from training.augmentation.mixing import AugmentConfig
from training.data.loading import CutBatchDataset, all_of, loader_factory, min_duration, sampler_config, wideband
from training.tasks.enhance_separate import EnhanceObjective, MixtureDataset, NoisyCropDataset, SeparateObjective
from training.tasks.tts import GUIDED_LOSSES, AlignedCropDataset, TTSObjective, has_phones, require_phones

from .trainer import TrainConfig, Trainer

log = logging.getLogger(__name__)
FINETUNE_TASKS = ("enhance", "separate", "tts")


def task_config(pretrained: ModelConfig, task: str) -> ModelConfig:
    """The pre-trained config with the task's input/output widths (separation generates two speakers)."""
    if task not in FINETUNE_TASKS:
        raise ConfigError(f"unknown fine-tuning task {task!r}; choose one of {FINETUNE_TASKS}")
    n_mels = pretrained.mel.n_mels
    phones = PhoneVocab.default().to_list() if task == "tts" else []
    network = dataclasses.replace(pretrained.network, x_dim=(2 if task == "separate" else 1) * n_mels,
                                  cond_dim=n_mels, n_phones=len(phones))
    return dataclasses.replace(pretrained, task=task, network=network, phones=phones, extra={})


def _widen(weight: Tensor, width: int, dim: int, split: int | None = None) -> Tensor | None:
    """Tile a pre-trained projection to a wider stacked-streams layout, or None if it does not fit.

    Input projection (dim=1): columns [x_t | cond] -> [x_t/k ... x_t/k | cond] for k streams, so the sum of the
    streams starts out seen as the pre-trained model saw x_t. Output projection / bias (dim=0): rows repeated, so
    every stream starts out predicting what the pre-trained model would.
    """
    if dim == 1 and split is not None:
        x_part, cond_part = weight[:, :split], weight[:, split:]
        extra = width - weight.shape[1]
        if extra <= 0 or extra % split:
            return None
        k = 1 + extra // split
        return torch.cat([x_part / k] * k + [cond_part], dim=1)
    if weight.shape[0] and width % weight.shape[0] == 0:
        return weight.repeat(width // weight.shape[0], *([1] * (weight.dim() - 1)))
    return None


def init_from_pretrained(init: str | os.PathLike, task: str) -> SpeechFlowModel:
    """A task model initialised from the pre-trained checkpoint: equal shapes are copied, the wider input/output
    projections of separation are tiled from the pre-trained ones (see ``_widen``), anything else stays freshly
    initialised, and the config records what was tiled or fresh."""
    pretrained = SpeechFlowModel.from_pretrained(init)
    model = SpeechFlowModel(task_config(pretrained.config, task))
    source = {k: v.float() for k, v in read_weights(init).items()}
    target = model.net.state_dict()
    state, tiled = {}, []
    x_dim = pretrained.config.network.x_dim
    for key, value in source.items():
        if key not in target:
            continue
        if target[key].shape == value.shape:
            state[key] = value
            continue
        wide = _widen(value, target[key].shape[1] if key == "in_proj.weight" else target[key].shape[0],
                      dim=1 if key == "in_proj.weight" else 0, split=x_dim if key == "in_proj.weight" else None)
        if wide is not None and wide.shape == target[key].shape:
            state[key] = wide
            tiled.append(key)
    fresh = sorted(set(target) - set(state))
    model.net.load_state_dict({**target, **state})
    if fresh:
        log.info("initialised fresh (no pre-trained counterpart): %s", ", ".join(fresh))
    # pretrain_step: the steps behind the init (all of them when it was itself a continuation: `training_steps`)
    model.config.extra["init"] = {"from": str(init), "task": pretrained.config.task, "tiled": sorted(tiled),
                                  "fresh": fresh, "pretrain_step": training_steps(pretrained.config.to_dict()),
                                  **({"student_of": teacher} if (teacher := pretrained.config.student.get("teacher"))
                                     else {})}
    return model


def make_student(model: SpeechFlowModel, steps: int, loss: str = "flow") -> None:
    """Turn a task model into a ``steps``-step student of itself, in place: trained only at the times of its Euler
    grid, its condition never dropped (guidance folded in), served at that grid without guidance by default.

    ``loss`` "flow" (and "mask"): a uniform grid from zeros instead of noise (``prior_scale`` 0: deterministic).
    With one step this regresses the posterior mean: from x0 = 0 at t = 0 the flow-matching loss is minimised by
    v = E[x1 | condition], the average of every draw the teacher could make, which its ``ensemble`` estimates
    with 2 x NFE x draws network passes; the student makes it in one. "mask" (enhancement or separation, one
    step): scored on the masks the reconstruction applies instead (`mask_loss`, `separation_mask_loss`).
    "guided" (TTS): the teacher's own grid (its sway) from noise as before, or every k-th time of it for fewer
    steps; each step regressed on where the teacher's guided steps over it lead (`guided_loss`): guidance folded
    in (half the network passes at the teacher's steps) and, with fewer steps, k teacher steps in one.
    "trajectory" (TTS): the same targets from the states of the teacher's own guided sampling path instead of the
    data path's. A model that is already a student (a warm start) keeps learning from its own teacher.
    """
    task = model.config.task
    if steps < 1:
        raise ConfigError(f"a student takes at least one step, got {steps}")
    allowed = {"flow": True, "mask": steps == 1 and task in ("enhance", "separate"),
               **dict.fromkeys(GUIDED_LOSSES, task == "tts")}
    if not allowed.get(loss, False):
        raise ConfigError(f"a student's loss is 'flow', 'mask' for a one-step enhancement or separation student or "
                          f"'guided' / 'trajectory' for a TTS student; got {loss!r} for {task!r}")
    cfg = model.config
    teacher = sampling(task)
    guided = loss in GUIDED_LOSSES
    if guided and teacher.steps % steps:
        raise ConfigError(f"a guided student's steps must divide its teacher's {teacher.steps}, got {steps}")
    sway = teacher.sway if guided else 0.0
    grid = step_times(steps, sway=sway).tolist()[:-1]
    cfg.flow = dataclasses.replace(cfg.flow, train_times=tuple(grid), p_uncond=0.0,
                                   prior_scale=cfg.flow.prior_scale if guided else 0.0)
    cfg.sampling = {"steps": steps, "guidance": 1.0, "solver": "euler", "sway": sway, "guidance_until": 1.0,
                    "ensemble": 1}
    model.flow = FlowMatching(cfg.flow)
    init = cfg.extra.get("init", {})
    teacher_dir = init.get("student_of") or init.get("from")
    cfg.extra["student"] = {"steps": steps, "teacher": teacher_dir, "loss": loss,
                            **({"guidance": teacher.guidance, "teacher_steps": teacher.steps} if guided else {})}


def student_teacher(model: SpeechFlowModel) -> torch.nn.Module | None:
    """The frozen network of the teacher a "guided" or "trajectory" student learns from, else None."""
    student = model.config.student
    if student.get("loss") not in GUIDED_LOSSES:
        return None
    return SpeechFlowModel.from_pretrained(student["teacher"]).net.eval().requires_grad_(False)


def finetune(
    task: str,
    init: str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike,
    train: TrainConfig | None = None,
    resume: bool = False,
    augment: AugmentConfig | None = None,
    student_steps: int | None = None,
    student_loss: str = "flow",
    phone_languages: tuple[str, ...] | None = None,
) -> Path:
    """Fine-tune (or resume) on a CutSet of clean speech (or real pairs / mixtures); returns the run directory.
    ``student_steps``: train a few-step student of ``init`` instead (`make_student`). ``phone_languages`` (TTS):
    the languages whose phones are used; other cuts train with their phones dropped (`AlignedCropDataset`)."""
    train = train or TrainConfig()
    out = Path(out)
    if resume and (out / "config.json").is_file():
        model = SpeechFlowModel.from_pretrained(out)
        if model.config.task != task:
            raise ConfigError(f"{out} holds a {model.config.task!r} run, not {task!r}")
    else:
        torch.manual_seed(train.seed)
        model = init_from_pretrained(init, task)
        if student_steps is not None:
            make_student(model, student_steps, student_loss)
    sr = model.config.mel.sample_rate
    keep = min_duration(0.5)
    dataset: CutBatchDataset
    if task in ("enhance", "separate"):  # targets must be wideband; a band-limited one teaches low-passing
        keep = all_of(keep, wideband())
    if task == "enhance":
        dataset = NoisyCropDataset(data, train.max_seconds, augment, sr, seed=train.seed)
        objective = EnhanceObjective(model.config)
    elif task == "separate":
        dataset = MixtureDataset(train.max_seconds, sr, seed=train.seed)
        objective = SeparateObjective(model.config)
    else:
        keep = all_of(keep, has_phones)
        dataset = AlignedCropDataset(train.max_seconds, PhoneVocab(model.config.phones), sr,
                                     model.config.mel.hop_length, seed=train.seed, phone_languages=phone_languages)
        objective = TTSObjective(model.config, student_teacher(model))
        require_phones(data)
    loaders = loader_factory(data, dataset, sampler_config(train), train.num_workers, keep=keep)
    return Trainer(model, objective, loaders, train, out).fit(resume=resume)
