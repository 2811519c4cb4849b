"""A fake engine for the service: the step loop, scheduler and HTTP layer without a model (the tests, the simulated
bench, and trying the demo page)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.defaults import Sampling, sampling
from model.errors import ConfigError, SettingError
from model.generation import Plan
from model.infilling import InfillRequest
from model.solvers import num_steps
from model.tts import WordTime
from service.engine import EditInput, Payload, SamplingKey, TaskParams, TtsInput, VoiceInfo

FAKE_VOICES = {"alice": VoiceInfo("alice", "The quick brown fox jumps over the lazy dog.", 2.5)}
FAKE_SECONDS_PER_CHAR = 0.05  # the fake TTS speaks 20 characters a second (at speed 1)


@dataclass(frozen=True)
class SeenStep:
    task: str
    seeds: list[int]  # seeds of the rows in the live batch at this step, in batch order
    frames: list[int]
    joined: list[int]  # seeds of the rows that joined just before this step


@dataclass(eq=False)
class FakeRow:
    frames: int
    seed: int
    step: int = 0
    output: Any = None
    sampling: Any = None  # its plan's Sampling (set by Plan): how many steps it takes


class FakeBatch:
    """A live batch of fake rows: ``steps`` steps per row, each step recorded, held, poisoned or slept as its
    engine says."""

    def __init__(self, engine: FakeEngine, key: SamplingKey) -> None:
        self.engine, self.key = engine, key
        self.rows: list[FakeRow] = []
        self._joined: list[FakeRow] = []

    def __len__(self) -> int:
        return len(self.rows)

    def join(self, rows: Sequence[FakeRow]) -> None:
        for row in rows:
            if row.sampling.solver != self.key.solver:
                raise ValueError(f"a {row.sampling.solver} row cannot join a {self.key.solver} batch")
            row.step, row.output = 0, None
        self.rows.extend(rows)
        self._joined.extend(rows)

    def leave(self, rows: Sequence[FakeRow]) -> None:
        gone = {id(r) for r in rows}
        self.rows = [r for r in self.rows if id(r) not in gone]

    def step(self) -> list[FakeRow]:
        e = self.engine
        e.steps.append(SeenStep(self.key.task, [r.seed for r in self.rows], [r.frames for r in self.rows],
                                [r.seed for r in self._joined]))
        self._joined = []
        if e._held:
            e.blocked.set()  # this step (the last one recorded) waits for release() or step_once()
            if not e._permits.acquire(timeout=30):  # bounded, so a failing test cannot hang the thread forever
                raise RuntimeError("the fake engine was held for 30 s")
        if e.fail_seeds & {r.seed for r in self.rows}:
            raise RuntimeError("this input is poisoned")
        if e.step_cost is not None:
            a, b = e.step_cost
            time.sleep(a + b * len(self.rows))
        for row in self.rows:
            row.step += 1
        done = [r for r in self.rows if r.step >= num_steps(r.sampling.solver, r.sampling.steps)]
        for row in done:
            row.output = row.seed
        self.leave(done)
        return done


class FakeEngine:
    """Deterministic and instant: enhancement halves the input, separation returns (x/2, x/2), TTS returns a quiet
    220 Hz tone of ``FAKE_SECONDS_PER_CHAR`` per character / speed, one row (chunk) per sentence (unknown voices
    fail like the pipeline's). Records every request it prepares and every step; ``hold()`` keeps the engine thread
    inside each step until ``step_once()`` or ``release()``, so tests can queue requests behind a running step;
    seeds in ``fail_seeds`` make every step of their live batch raise; ``post_calls`` counts the rows of each
    post-processing call. ``step_cost=(a, b)`` makes a step take
    a + b x rows seconds (the bench's simulation of a GPU)."""

    def __init__(self, tasks: Sequence[str] = ("enhance", "separate"), *, fail_seeds: Sequence[int] = (),
                 sample_rate: int = 16_000, hop_length: int = 160, voices: dict[str, VoiceInfo] | None = None,
                 step_cost: tuple[float, float] | None = None) -> None:
        self.tasks = list(tasks)
        self._voices = dict(FAKE_VOICES if voices is None else voices)
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.fail_seeds = set(fail_seeds)
        self.step_cost = step_cost
        self.prepared: list[tuple[str, Payload, TaskParams]] = []
        self.steps: list[SeenStep] = []
        self.post_calls: list[int] = []  # rows post-processed per call
        self.warm_gate = threading.Event()
        self.warm_gate.set()
        self._held = False
        self._permits = threading.Semaphore(0)
        self.blocked = threading.Event()  # set while a step waits for permission

    def hold(self) -> None:
        """From now on every step waits (``blocked`` is set while one does) until ``step_once`` or ``release``."""
        self.blocked.clear()
        self._permits = threading.Semaphore(0)
        self._held = True

    def step_once(self) -> None:
        """Let the held step finish; the next one will wait again."""
        self.blocked.clear()
        self._permits.release()

    def release(self) -> None:
        self._held = False
        self._permits.release(1_000)

    @property
    def voices(self) -> dict[str, VoiceInfo]:
        return self._voices if "tts" in self.tasks else {}

    def frames(self, num_samples: int) -> int:
        return num_samples // self.hop_length + 1

    def warmup(self) -> float | None:
        if not self.warm_gate.wait(timeout=30):
            raise RuntimeError("warm-up gate never opened")
        return None

    def task_sampling(self, task: str, quality: str | None, given: dict[str, Any]) -> Sampling:
        if quality == "fast":
            raise ConfigError(f"this bundle has no few-step student for {task!r}")
        return sampling(task, **given)

    def new_batch(self, key: SamplingKey) -> FakeBatch:
        return FakeBatch(self, key)

    def align_prompt(self, wav: np.ndarray, transcript: str) -> list[tuple[str, int]]:
        """One "phone" per word, the prompt's frames shared out evenly (the pipeline's contract, not its model)."""
        words = transcript.split()
        if not words:
            raise ConfigError("the transcript has nothing to align")
        frames = self.frames(len(wav))
        share = [frames // len(words) + (i < frames % len(words)) for i in range(len(words))]
        return list(zip(words, share, strict=True))

    def prepare(self, task: str, payload: Payload, params: TaskParams) -> Plan:
        self.prepared.append((task, payload, params))
        sampling = params.sampling
        if task == "tts":
            assert isinstance(payload, TtsInput)
            if payload.voice is not None and payload.voice not in self.voices:
                raise ConfigError(f"unknown voice {payload.voice!r}")
            sentences = [p for p in re.split(r"(?<=[.!?])\s+", payload.text.strip()) if p]
            tones = [self._speak(p, payload.speed) for p in sentences]
            rows = [FakeRow(self.frames(len(t)), params.seed + i, sampling=sampling) for i, t in enumerate(tones)]
            words = self._words(sentences, [len(t) for t in tones])
            return Plan(task, sampling, rows, piece=lambda i, _: tones[i],
                        assemble=lambda pieces: np.concatenate(pieces), chunk_fade=0, words=words,
                        phones=[[p for w in chunk for p in _letters(w)] for chunk in words])
        if isinstance(payload, EditInput | InfillRequest):  # the recording comes back, a tone where it was "edited"
            if isinstance(payload, EditInput) and payload.text.split() == payload.transcript.split():
                raise SettingError("text says what the recording already says: nothing to edit", param="text")
            edited = payload.wav.copy()
            rate = payload.sr if isinstance(payload, InfillRequest) else payload.sample_rate
            t = np.arange(len(edited) // 4) / rate
            edited[: len(t)] = 0.1 * np.sin(2 * np.pi * 220 * t)
            return Plan(task, sampling, [FakeRow(self.frames(len(edited)), params.seed, sampling=sampling)],
                        piece=lambda i, _: edited, assemble=lambda pieces: pieces[0])
        assert isinstance(payload, np.ndarray)
        half = 0.5 * payload
        out = half if task == "enhance" else np.stack([half, half])
        return Plan(task, sampling, [FakeRow(self.frames(len(payload)), params.seed, sampling=sampling)],
                    piece=lambda i, _: out,
                    assemble=lambda pieces: pieces[0])

    def synchronize(self) -> None:
        pass  # the fake's steps are done when they return

    def pieces(self, finished: Sequence[tuple[Plan, int]]) -> list[Any]:
        self.post_calls.append(len(finished))
        return [plan.piece(i, plan.rows[i].output) for plan, i in finished]

    def _speak(self, text: str, speed: float) -> np.ndarray:
        n = int(self.sample_rate * FAKE_SECONDS_PER_CHAR * len(text) / speed)
        return (0.1 * np.sin(2 * np.pi * 220 * np.arange(n) / self.sample_rate)).astype(np.float32)

    def _words(self, sentences: list[str], lengths: list[int]) -> list[list[WordTime]]:
        """Each sentence's words share its tone evenly; the tones are concatenated (no fade)."""
        out, start = [], 0.0
        for sentence, n in zip(sentences, lengths, strict=True):
            words, seconds = [w.strip(".,;:!?") for w in sentence.split()], n / self.sample_rate
            out.append([WordTime(w, start + seconds * k / len(words), start + seconds * (k + 1) / len(words))
                        for k, w in enumerate(words)])
            start += seconds
        return out

    def describe(self) -> dict[str, Any]:
        return {"device": "fake", "sample_rate": self.sample_rate}


def _letters(word: WordTime) -> list[WordTime]:
    """The fake's phones: a word's letters, sharing its span evenly."""
    n, length = len(word.word), word.end - word.start
    return [WordTime(c, word.start + length * k / n, word.start + length * (k + 1) / n)
            for k, c in enumerate(word.word)]
