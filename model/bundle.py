"""Bundles: a directory of models (``pretrained/ enhance/ separate/ tts/ vocoder/``) plus ``bundle.json`` saying
which tasks it serves, how each model was trained, and its evaluation figures."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from .checkpoint import CONFIG_FILE, read_config, read_weights, save_model_dir, write_json
from .errors import CheckpointError

BUNDLE_FILE = "bundle.json"
TASK_DIRS = {"pretrain": "pretrained", "enhance": "enhance", "separate": "separate", "tts": "tts"}
VOCODER_DIR = "vocoder"  # not a task: the mel -> waveform model shared by all of them
DURATION_DIR = "tts/duration"  # the TTS model's duration model
VOICES_DIR = "voices"  # a TTS directory's built-in voices: NAME.wav + NAME.json
ALIGNER_DIR = "tts/aligner"  # the TTS model's prompt aligner (optional: durations rescaled otherwise)
STUDENT_DIR = "student"  # inside a task's directory: its few-step student (optional)
STUDENT_TASKS = ("enhance", "separate", "tts")  # the tasks that may have one
EXTRA_DIRS = {"vocoder": VOCODER_DIR, "duration": DURATION_DIR, "aligner": ALIGNER_DIR,
              **{f"{task}-student": f"{TASK_DIRS[task]}/{STUDENT_DIR}" for task in STUDENT_TASKS}}


def read_bundle_info(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path) / BUNDLE_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {' '.join(str(e).split())}") from e
    if not isinstance(info, dict):
        raise CheckpointError(f"{path} is not a JSON object (found {type(info).__name__})")
    return info


def task_dirs(bundle: str | os.PathLike) -> dict[str, Path]:
    """Task -> model directory, for the tasks present in a bundle."""
    bundle = Path(bundle)
    return {task: bundle / sub for task, sub in TASK_DIRS.items() if (bundle / sub / CONFIG_FILE).is_file()}


def student_dirs(bundle: str | os.PathLike) -> dict[str, Path]:
    """Task -> its student's directory, for the tasks of a bundle that have one."""
    return {task: d / STUDENT_DIR for task, d in task_dirs(bundle).items()
            if task in STUDENT_TASKS and (d / STUDENT_DIR / CONFIG_FILE).is_file()}


def training_steps(config: dict[str, Any]) -> int | None:
    """Steps that trained a model (a config.json as a dict): its run's, plus those of the model it continued when
    it was warm-started from a model of its own task (``speechflow finetune --init`` a fine-tuned model); None when
    the config does not say. A fine-tuning from the pre-trained model counts its own steps only."""
    extra = config.get("extra", {})
    step = extra.get("training", {}).get("step")
    init = extra.get("init", {})
    if step is not None and init.get("task") == config.get("task") and init.get("pretrain_step") is not None:
        return step + init["pretrain_step"]
    return step


def write_bundle(
    out: str | os.PathLike,
    models: dict[str, str | os.PathLike],
    dtype: torch.dtype | None = torch.float16,
    info: dict[str, Any] | None = None,
) -> Path:
    """Copy model directories (task, "vocoder" or "duration" -> run directory) into a bundle, converting weights to
    ``dtype`` (fp16 keeps the shipped bundle small), and write bundle.json with each model's training provenance.
    A TTS directory's built-in voices (``voices/``, e.g. another bundle's ``tts/``) come with it."""
    out = Path(out)
    entries: dict[str, Any] = {}
    dirs = {**TASK_DIRS, **EXTRA_DIRS}
    for task, src in models.items():
        if task not in dirs:
            raise CheckpointError(f"unknown bundle entry {task!r}; expected one of {sorted(dirs)}")
        config = read_config(src)
        save_model_dir(out / dirs[task], config, read_weights(src), dtype=dtype)
        if task == "tts" and (Path(src) / VOICES_DIR).is_dir():
            shutil.copytree(Path(src) / VOICES_DIR, out / dirs[task] / VOICES_DIR, dirs_exist_ok=True)
        entries[task] = {"dir": dirs[task], "preset": config.get("preset"), "training": training_steps(config)}
    previous = read_bundle_info(out) if (out / BUNDLE_FILE).is_file() else {}
    tasks = set(previous.get("tasks", [])) | (set(models) & set(TASK_DIRS))
    bundle = {**previous, **(info or {}), "tasks": sorted(tasks),
              "models": {**previous.get("models", {}), **entries}, "dtype": str(dtype).removeprefix("torch."),
              "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(out / BUNDLE_FILE, bundle)
    return out


def write_voices(bundle: str | os.PathLike, voices: dict[str, tuple[np.ndarray, str]],
                 sample_rate: int = 16000) -> None:
    """Built-in TTS voices: name -> (16 kHz prompt waveform, its transcript), as tts/voices/NAME.wav + NAME.json."""
    directory = Path(bundle) / "tts" / VOICES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for name, (wav, text) in voices.items():
        sf.write(directory / f"{name}.wav", wav, sample_rate, subtype="PCM_16")
        write_json(directory / f"{name}.json", {"text": text})
