"""The engine: what the batcher calls to turn a batch of 16 kHz waveforms into outputs.

`Engine` is the protocol the app needs (tests inject a tiny fake); `PipelineEngine` runs a `SpeechFlowPipeline`
through its public steps (features -> windowed ODE sampling -> reconstruction), so it can time each stage without
changing the pipeline, and so one call serves a whole batch with per-request seeds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

SERVED_TASKS = ("enhance", "separate")  # tasks with an endpoint in this version (tts comes with its endpoints)


@dataclass(frozen=True)
class TaskParams:
    """Sampling settings of one request. All but ``seed`` are part of the batch key, so a batch shares them."""

    steps: int
    solver: str
    guidance: float
    seed: int
    reconstruction: str = "mask"


Item = tuple[np.ndarray, TaskParams]  # (float32 mono waveform at the engine's rate, its settings)


class Engine(Protocol):
    @property
    def tasks(self) -> list[str]:
        """Tasks of the loaded bundle (some may have no endpoint yet)."""

    @property
    def sample_rate(self) -> int:
        """Rate of the waveforms `run_batch` takes and returns."""

    def frames(self, num_samples: int) -> int:
        """Feature frames of a waveform: the batcher's unit of cost."""

    def warmup(self) -> None:
        """Run every served task once, so the first request does not pay for lazy initialisation."""

    def run_batch(self, task: str, items: Sequence[Item], timings: dict[str, float]) -> list[np.ndarray]:
        """One output per item, in order: (n,) for enhancement, (2, n) for separation, at ``sample_rate`` and each
        input's length. Fills ``timings`` with seconds per stage."""

    def describe(self) -> dict[str, Any]:
        """What /v1/models shows about the engine (never file paths)."""


class PipelineEngine:
    def __init__(self, pipeline: Any) -> None:  # a model.SpeechFlowPipeline; typed loosely to keep imports lazy
        self.pipeline = pipeline

    @classmethod
    def load(cls, bundle: str | os.PathLike, device: str = "auto") -> PipelineEngine:
        from model.pipeline import SpeechFlowPipeline

        return cls(SpeechFlowPipeline.from_pretrained(bundle, device=device))

    @property
    def tasks(self) -> list[str]:
        return list(self.pipeline.tasks)

    @property
    def sample_rate(self) -> int:
        return int(self.pipeline.sample_rate)

    def frames(self, num_samples: int) -> int:
        return num_samples // self.pipeline.mel_config.hop_length + 1  # centred STFT frames

    def warmup(self) -> None:
        t = np.arange(self.sample_rate, dtype=np.float32) / self.sample_rate
        tone = (0.1 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
        for task in self.tasks:
            if task in SERVED_TASKS:
                self.run_batch(task, [(tone, TaskParams(steps=2, solver="euler", guidance=1.0, seed=0))], {})

    def run_batch(self, task: str, items: Sequence[Item], timings: dict[str, float]) -> list[np.ndarray]:
        params = items[0][1]
        if any((p.steps, p.solver, p.guidance, p.reconstruction) !=
               (params.steps, params.solver, params.guidance, params.reconstruction) for _, p in items):
            raise ValueError("a batch must share steps, solver, guidance and reconstruction")
        run = self.pipeline.enhance_batch if task == "enhance" else self.pipeline.separate_batch
        outs = run([(wav, self.sample_rate) for wav, _ in items], seed=[p.seed for _, p in items],
                   steps=params.steps, solver=params.solver, guidance=params.guidance,
                   reconstruction=params.reconstruction, timings=timings)
        return [out for out, _ in outs]

    def describe(self) -> dict[str, Any]:
        info = self.pipeline.info or {}
        models = info.get("models", {})
        return {
            "device": str(self.pipeline.device),
            "vocoder": self.pipeline.vocoder_name,
            "sample_rate": self.sample_rate,
            "updated": info.get("updated"),
            "models": {task: {"preset": m.get("preset"), "training_step": m.get("training")}
                       for task, m in models.items() if isinstance(m, dict)},
        }
