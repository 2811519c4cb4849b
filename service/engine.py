"""The engine: what the batcher calls to turn a batch of requests into outputs.

`Engine` is the protocol the app needs (tests inject a tiny fake); `PipelineEngine` runs a `SpeechFlowPipeline`.
Enhancement and separation go through the pipeline's batched calls with per-request seeds and stage timings
(features -> windowed ODE sampling -> reconstruction), so one call serves a whole batch.

TTS requests run one after another inside `run_batch`: `SpeechFlowPipeline.tts` serves one request (the chunks of
its text are sampled as one batch inside it). Cross-request TTS batching (all chunks of all requests in one sampler
call, each after its own prompt) is future work; until then the service caps TTS batches at
``Settings.max_tts_batch_size`` (1 by default), because a batch of sequential runs only delays its first members.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from model.defaults import sampling

SERVED_TASKS = ("enhance", "separate", "tts")  # tasks with an endpoint (a bundle may hold others, e.g. pretrain)
TTS_FRAMES_PER_CHAR = 8  # ~12.5 characters per second of speech at 100 frames/s: the batcher's cost estimate
TTS_CHUNK_CHARS = 200  # the pipeline splits text into chunks of about this size, each generated after the prompt
WARMUP_TEXT = "Hello there."


@dataclass(frozen=True)
class TaskParams:
    """Sampling settings of one request. All but ``seed`` are part of the batch key, so a batch shares them."""

    steps: int
    solver: str
    guidance: float
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


@dataclass(frozen=True)
class VoiceInfo:
    """A built-in voice as the API shows it (never its file path)."""

    id: str
    transcript: str
    seconds: float


# (float32 mono waveform at the engine's rate, or a TTS request; its settings)
Item = tuple[np.ndarray | TtsInput, TaskParams]


def tts_frames(text: str, prompt_frames: int) -> int:
    """The batcher's cost of a TTS request: the frames it will generate (estimated from the text's length) plus the
    prompt's frames once per chunk (every chunk is generated after the prompt)."""
    chunks = max(1, math.ceil(len(text) / TTS_CHUNK_CHARS))
    return TTS_FRAMES_PER_CHAR * len(text) + chunks * prompt_frames


class Engine(Protocol):
    @property
    def tasks(self) -> list[str]:
        """Tasks of the loaded bundle (some may have no endpoint yet)."""

    @property
    def sample_rate(self) -> int:
        """Rate of the waveforms `run_batch` takes and returns."""

    @property
    def voices(self) -> dict[str, VoiceInfo]:
        """Built-in TTS voices by id (empty without a TTS model)."""

    def frames(self, num_samples: int) -> int:
        """Feature frames of a waveform: the batcher's unit of cost."""

    def warmup(self) -> None:
        """Run every served task once, so the first request does not pay for lazy initialisation."""

    def run_batch(self, task: str, items: Sequence[Item], timings: dict[str, float]) -> list[np.ndarray | Exception]:
        """One output per item, in order: (n,) for enhancement and TTS, (2, n) for separation, at ``sample_rate``
        (enhancement and separation: each input's length). Fills ``timings`` with seconds per stage. An item that
        fails on its own (TTS: bad text, a transcript that does not fit its prompt) may be returned as its exception,
        which fails only that request; raising fails the batch."""

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

    @property
    def voices(self) -> dict[str, VoiceInfo]:
        if "tts" not in self.pipeline.tasks:
            return {}
        sr = self.sample_rate
        return {name: VoiceInfo(name, v.text, len(v.wav) / sr) for name, v in self.pipeline.voices.items()}

    def frames(self, num_samples: int) -> int:
        return num_samples // self.pipeline.mel_config.hop_length + 1  # centred STFT frames

    def warmup(self) -> None:
        """Every served task once with 2 Euler steps. TTS warms up with a short sentence in the first built-in voice;
        a TTS model without voices is not warmed up (there is no prompt to speak with), so its first request pays
        for the lazy initialisation (espeak-ng, the duration model)."""
        t = np.arange(self.sample_rate, dtype=np.float32) / self.sample_rate
        tone = (0.1 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
        for task in self.tasks:  # with the task's default guidance: guidance 1 would skip the doubled batch's path
            quick = TaskParams(steps=2, solver="euler", guidance=sampling(task).guidance, seed=0)
            if task in ("enhance", "separate"):
                self.run_batch(task, [(tone, quick)], {})
            elif task == "tts" and self.voices:
                request = TtsInput(WARMUP_TEXT, voice=next(iter(self.voices)))
                [out] = self.run_batch(task, [(request, replace(quick, reconstruction="vocoder"))], {})
                if isinstance(out, Exception):
                    raise out

    def run_batch(self, task: str, items: Sequence[Item], timings: dict[str, float]) -> list[np.ndarray | Exception]:
        params = items[0][1]
        if any((p.steps, p.solver, p.guidance, p.reconstruction) !=
               (params.steps, params.solver, params.guidance, params.reconstruction) for _, p in items):
            raise ValueError("a batch must share steps, solver, guidance and reconstruction")
        if task == "tts":
            return self._tts(items, timings)
        run = self.pipeline.enhance_batch if task == "enhance" else self.pipeline.separate_batch
        outs = run([(wav, self.sample_rate) for wav, _ in items], seed=[p.seed for _, p in items],
                   steps=params.steps, solver=params.solver, guidance=params.guidance,
                   reconstruction=params.reconstruction, timings=timings)
        return [out for out, _ in outs]

    def _tts(self, items: Sequence[Item], timings: dict[str, float]) -> list[np.ndarray | Exception]:
        """One request after another (see the module docstring); a request's own error fails only that request.
        The pipeline's TTS has no per-stage timings, so the whole call is one stage, "synthesis"."""
        outputs: list[np.ndarray | Exception] = []
        for request, p in items:
            assert isinstance(request, TtsInput), "TTS items carry a TtsInput"
            start = time.perf_counter()
            try:
                wav, sr = self.pipeline.tts(request.text, voice=request.voice, prompt_wav=request.prompt,
                                            prompt_sr=None if request.prompt is None else self.sample_rate,
                                            prompt_text=request.prompt_text, speed=request.speed, steps=p.steps,
                                            solver=p.solver, guidance=p.guidance, seed=p.seed)
                if sr != self.sample_rate:
                    raise RuntimeError(f"the pipeline's TTS returned {sr} Hz, the engine serves {self.sample_rate} Hz")
                outputs.append(np.asarray(wav, dtype=np.float32))
            except Exception as e:
                outputs.append(e)
            finally:
                timings["synthesis"] = timings.get("synthesis", 0.0) + time.perf_counter() - start
        return outputs

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
