"""The engine: what the step loop calls to turn requests into generation rows, step them, and make audio again.

`Engine` is the protocol the service needs (tests and the bench's simulation inject fakes); `PipelineEngine` runs
a `SpeechFlowPipeline`. ``prepare`` turns one request into a `model.generation.Plan` (decode is done already:
features, TTS text frontend, durations and prompt alignment happen here); ``new_batch`` makes the live batch of one
sampling key (`model.generation.LiveBatch`), which the loop joins rows into and steps; ``pieces`` (the vocoder,
batched over the rows that finish together) and the plan's ``assemble`` (stitching, reconstruction) are the
post-processing. Steps run on the engine thread; preparation and post-processing on one processing thread (the
engine thread itself, between steps, unless the service runs them beside it): while serving, the flow networks are
only called from the engine thread and the other models only from the processing thread (warm-up runs all of them
on the engine thread, before the first request).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from model.defaults import Sampling, sampling
from model.infilling import InfillRequest

if TYPE_CHECKING:
    from model.generation import Plan

SERVED_TASKS = ("enhance", "separate", "tts")  # the fine-tuned tasks (a bundle's pretrain model serves infilling)
TTS_FRAMES_PER_CHAR = 8  # ~12.5 characters per second of speech at 100 frames/s, at speed 1: the cost estimate
WARMUP_TEXT = "Hello there."


@dataclass(frozen=True)
class TaskParams:
    """Settings of one request (the batch key takes only the task and the solver: `SamplingKey`)."""

    sampling: Sampling
    seed: int
    reconstruction: str = "mask"


@dataclass(frozen=True)
class TtsInput:
    """What one TTS request asks for: text in a built-in ``voice``, or in the voice of ``prompt`` (16 kHz mono,
    already decoded) whose transcript is ``prompt_text``."""

    text: str
    voice: str | None = None
    prompt: np.ndarray | None = None
    prompt_text: str | None = None
    speed: float = 1.0
    alignment: tuple[tuple[str, int], ...] | None = None  # the prompt's (phone, frames), known for uploaded voices


@dataclass(frozen=True)
class EditInput:
    """What one edit request asks for: make ``wav`` (mono, at the upload's own rate ``sample_rate``, so that the
    kept audio comes back as it was sent), which says ``transcript``, say ``text``."""

    wav: np.ndarray
    sample_rate: int
    text: str
    transcript: str
    speed: float = 1.0
    span: tuple[float, float] | None = None  # set: ``text`` is what this stretch (seconds) should say instead


@dataclass(frozen=True)
class VoiceInfo:
    """A built-in voice as the API shows it (never its file path)."""

    id: str
    transcript: str
    seconds: float


# float32 mono waveform at the engine's rate (enhancement, separation), or a TTS, edit or infill request
Payload = np.ndarray | TtsInput | EditInput | InfillRequest


def tts_cost(text: str, prompt_frames: int, speed: float = 1.0) -> tuple[int, int]:
    """Estimated (rows, frames) of a TTS request before its text is phonemised: a row per sentence, as the pipeline
    splits it (a long sentence is cut), and the frames it will generate (from the text's length; ``speed`` 0.5
    makes twice as many) plus the prompt's frames once per row (every chunk is generated after the prompt). The
    step loop re-makes the estimate from the prepared plan's true frames."""
    from model.text import MAX_CHUNK_CHARS, TextError, split_sentences

    try:
        rows = len(split_sentences(text, MAX_CHUNK_CHARS))
    except TextError:  # nothing speakable: the pipeline's own error (422) will say so
        rows = max(1, math.ceil(len(text) / MAX_CHUNK_CHARS))
    return rows, math.ceil(TTS_FRAMES_PER_CHAR * len(text) / speed) + rows * prompt_frames


class StepBatch(Protocol):
    """A live batch (`model.generation.LiveBatch` or a fake): rows join at t = 0, ``step`` advances every row one
    solver step and returns the rows that reached t = 1 (each with ``output`` set), ``leave`` drops rows."""

    def join(self, rows: Sequence[Any]) -> None: ...

    def leave(self, rows: Sequence[Any]) -> None: ...

    def step(self) -> list[Any]: ...

    def __len__(self) -> int: ...


class Engine(Protocol):
    @property
    def tasks(self) -> list[str]:
        """Tasks of the loaded bundle (some may have no endpoint yet)."""

    @property
    def sample_rate(self) -> int:
        """Rate of the waveforms ``prepare`` takes and plans return."""

    @property
    def voices(self) -> dict[str, VoiceInfo]:
        """Built-in TTS voices by id (empty without a TTS model)."""

    def frames(self, num_samples: int) -> int:
        """Feature frames of a waveform: the unit of cost."""

    def warmup(self) -> float | None:
        """Run every served task once, so the first request does not pay for lazy initialisation; returns the
        measured seconds per frame per network evaluation (the cost model's start), or None."""

    def align_prompt(self, wav: np.ndarray, transcript: str) -> list[tuple[str, int]]:
        """The prompt's phones and frames (16 kHz mono audio and what it says); raises when they cannot fit."""
        ...

    def prepare(self, task: str, payload: Payload, params: TaskParams) -> Plan:
        """One request -> its plan. Raises for input only the model can judge (TTS: text with nothing to speak, a
        transcript that cannot fit its prompt), which fails only that request."""

    def task_sampling(self, task: str, quality: str | None, given: dict[str, Any]) -> Sampling:
        """A request's sampling: its few-step student's (``quality`` 'fast'), its teacher's ('full') or the
        bundle's choice (None), with ``given`` (None: the default) on top; raises ConfigError for a quality the
        bundle lacks and SettingError for a setting the student was not trained for."""

    def new_batch(self, key: SamplingKey) -> StepBatch:
        """An empty live batch for rows of ``key``."""

    def synchronize(self) -> None:
        """Wait until the device has done the work queued so far (a step's time is then the device's time)."""

    def pieces(self, finished: Sequence[tuple[Plan, int]]) -> list[Any]:
        """The pieces of rows that finished ((plan, row index), ``output`` set), made together where that pays
        (one vocoder batch for TTS chunks of several requests)."""

    def describe(self) -> dict[str, Any]:
        """What /v1/models shows about the engine (never file paths)."""


@dataclass(frozen=True)
class SamplingKey:
    """What rows must share to step together: the network and the solver (the shape of a step's network calls). NFE,
    time grid and guidance are per row in a live batch (`model.generation.LiveBatch`), the ensemble's draws are
    ordinary rows and the reconstruction is post-processing, so requests that differ in any of them step together."""

    task: str
    solver: str
    student: bool = False  # the task's few-step student: another network

    @classmethod
    def of(cls, task: str, params: TaskParams) -> SamplingKey:
        return cls(task, params.sampling.solver, params.sampling.student)


class PipelineEngine:
    def __init__(self, pipeline: Any) -> None:  # a model.SpeechFlowPipeline; typed loosely to keep imports lazy
        self.pipeline = pipeline

    @classmethod
    def load(cls, bundle: str | os.PathLike, device: str = "auto", dtype: str = "auto") -> PipelineEngine:
        from model.pipeline import SpeechFlowPipeline

        return cls(SpeechFlowPipeline.from_pretrained(bundle, device=device, dtype=dtype))

    @property
    def tasks(self) -> list[str]:
        return list(self.pipeline.tasks)

    @property
    def sample_rate(self) -> int:
        return int(self.pipeline.sample_rate)

    @property
    def voices(self) -> dict[str, VoiceInfo]:
        if "tts" not in self.pipeline.tasks:
            return {}
        sr = self.sample_rate
        return {name: VoiceInfo(name, v.text, len(v.wav) / sr) for name, v in self.pipeline.voices.items()}

    def frames(self, num_samples: int) -> int:
        return num_samples // self.pipeline.mel_config.hop_length + 1  # centred STFT frames

    def warmup(self) -> float | None:
        """Every served task once with 2 Euler steps (with the task's default guidance: guidance 1 would skip the
        doubled batch's path). TTS warms up with a short sentence in the first built-in voice; a TTS model without
        voices is not warmed up, so its first request pays for the lazy initialisation (espeak-ng, the duration
        model). Then one timed step of a 4 s enhancement-sized row gives the cost model its first figure."""
        t = np.arange(self.sample_rate, dtype=np.float32) / self.sample_rate
        tone = (0.1 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
        plans = []
        for task in self.tasks:
            quick = TaskParams(replace(sampling(task), steps=2, solver="euler"), seed=0)
            if task in ("enhance", "separate"):
                plans.append(self.prepare(task, tone, quick))
                if task in self.pipeline.students:
                    plans.append(self.prepare(task, tone, TaskParams(self.task_sampling(task, "fast", {}), seed=0)))
            elif task == "tts" and self.voices:
                plans.append(self.prepare(task, TtsInput(WARMUP_TEXT, voice=next(iter(self.voices))),
                                          replace(quick, reconstruction="vocoder")))
        self.pipeline.run(plans)
        return self._time_a_step()

    def _time_a_step(self) -> float | None:
        task = next((t for t in ("enhance", "separate") if t in self.tasks), None)
        if task is None:
            return None
        wav = np.zeros(4 * self.sample_rate, np.float32)
        params = TaskParams(Sampling(steps=1, solver="euler", guidance=1.0), seed=0)
        plan = self.prepare(task, wav, params)
        batch = self.new_batch(SamplingKey.of(task, params))
        batch.join(plan.rows)
        self.synchronize()
        start = time.perf_counter()
        batch.step()
        self.synchronize()
        return (time.perf_counter() - start) / plan.frames

    def prepare(self, task: str, payload: Payload, params: TaskParams) -> Plan:
        s = params.sampling
        if isinstance(payload, EditInput):
            return self.pipeline.plan_edit(payload.wav, payload.sample_rate, payload.text, payload.transcript,
                                           sampling=s, seed=params.seed, speed=payload.speed, span=payload.span)
        if isinstance(payload, InfillRequest):
            return self.pipeline.plan_infill(payload, sampling=s, seed=params.seed)
        if task == "tts":
            assert isinstance(payload, TtsInput), "TTS requests carry a TtsInput"
            return self.pipeline.plan_tts(payload.text, sampling=s, voice=payload.voice, prompt_wav=payload.prompt,
                                          prompt_sr=None if payload.prompt is None else self.sample_rate,
                                          prompt_text=payload.prompt_text, speed=payload.speed, seed=params.seed,
                                          prompt_alignment=payload.alignment)
        assert isinstance(payload, np.ndarray), "enhance/separate requests carry a waveform"
        return self.pipeline.plan_task(task, payload, self.sample_rate, seed=params.seed, sampling=s,
                                       reconstruction=params.reconstruction)

    def align_prompt(self, wav: np.ndarray, transcript: str) -> list[tuple[str, int]]:
        return self.pipeline.align_prompt(wav, self.sample_rate, transcript)

    def new_batch(self, key: SamplingKey) -> StepBatch:
        from model.generation import LiveBatch

        return LiveBatch(self.pipeline.model(key.task, key.student), key.solver)

    def task_sampling(self, task: str, quality: str | None, given: dict[str, Any]) -> Sampling:
        return self.pipeline.task_sampling(task, quality, **given)

    def synchronize(self) -> None:
        from model.devices import synchronize

        synchronize(self.pipeline.device)

    def pieces(self, finished: Sequence[tuple[Plan, int]]) -> list[Any]:
        return self.pipeline.pieces(finished)

    def describe(self) -> dict[str, Any]:
        info = self.pipeline.info or {}
        models = info.get("models", {})
        return {
            "device": str(self.pipeline.device),
            "dtype": self.pipeline.dtype_name,
            "vocoder": self.pipeline.vocoder_name,
            "sample_rate": self.sample_rate,
            "updated": info.get("updated"),
            "models": {task: {"preset": m.get("preset"), "training_step": m.get("training")}
                       for task, m in models.items() if isinstance(m, dict)},
            "quality": {task: self.pipeline.default_quality(task) for task in self.pipeline.students},
        }
