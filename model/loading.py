"""Reading a bundle (or a single model directory) into the parts a `SpeechFlowPipeline` is made of."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .aligner import PromptAligner
from .bundle import ALIGNER_DIR, BUNDLE_FILE, DURATION_DIR, VOCODER_DIR, read_bundle_info, student_dirs, task_dirs
from .checkpoint import CONFIG_FILE
from .duration import DurationModel
from .errors import CheckpointError
from .modeling import SpeechFlowModel
from .tts import VOICES_DIR, load_voices
from .vocos import VocosVocoder


def load_parts(path: str | os.PathLike, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """The pipeline's constructor arguments: the task models (and their students) in ``dtype``, the small models
    (vocoder, durations, aligner) in float32, the built-in voices and bundle.json; for a single model directory
    (e.g. a training run), that model alone: a student is its task's model and its default quality."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file():
        model = SpeechFlowModel.from_pretrained(path, device=device, dtype=dtype)
        task, info = model.config.task, {"source": str(path)}
        if model.config.flow.train_times:
            return {"models": {task: model}, "students": {task: model}, "info": {**info, "quality": {task: "fast"}}}
        return {"models": {task: model}, "info": info}
    if not (path / BUNDLE_FILE).is_file():
        raise CheckpointError(f"{path} is neither a bundle ({BUNDLE_FILE}) nor a model directory ({CONFIG_FILE})")

    def optional(kind: Any, sub: str) -> Any:
        return kind.from_pretrained(path / sub, device=device) if (path / sub / CONFIG_FILE).is_file() else None

    tts_dir = task_dirs(path).get("tts")
    return {
        "models": {task: SpeechFlowModel.from_pretrained(d, device=device, dtype=dtype)
                   for task, d in task_dirs(path).items()},
        "students": {task: _student(d, task, device, dtype) for task, d in student_dirs(path).items()},
        "info": read_bundle_info(path),
        "vocoder": optional(VocosVocoder, VOCODER_DIR),
        "durations": optional(DurationModel, DURATION_DIR),
        "aligner": optional(PromptAligner, ALIGNER_DIR),
        "voices": load_voices(tts_dir / VOICES_DIR) if tts_dir is not None else {},
    }


def _student(directory: Path, task: str, device: torch.device, dtype: torch.dtype) -> SpeechFlowModel:
    """A task's student, refused unless it is one: its task, its training grid and the defaults it samples with."""
    model = SpeechFlowModel.from_pretrained(directory, device=device, dtype=dtype)
    cfg = model.config
    if cfg.task != task or not cfg.flow.train_times or not cfg.sampling:
        raise CheckpointError(f"{directory} is not a few-step student of the {task!r} model (train it with "
                              "`speechflow finetune --student-steps N`)")
    return model
