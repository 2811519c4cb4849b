"""Test doubles for the service: a fake engine and an in-process client. Used by the tests and handy for trying
the HTTP layer (or the demo page) without a model."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from .engine import Item, TtsInput, VoiceInfo

FAKE_VOICES = {"alice": VoiceInfo("alice", "The quick brown fox jumps over the lazy dog.", 2.5)}
FAKE_SECONDS_PER_CHAR = 0.05  # the fake TTS speaks 20 characters a second (at speed 1)


@dataclass(frozen=True)
class SeenBatch:
    task: str
    lengths: list[int]  # samples per item (TTS: characters of text), in the order the engine got them
    seeds: list[int]
    frames: list[int]
    requests: list[TtsInput] | None = None  # TTS only


class FakeEngine:
    """Deterministic and instant: enhancement halves the input, separation returns (x/2, x/2), TTS returns a quiet
    220 Hz tone of ``FAKE_SECONDS_PER_CHAR`` per character / speed (unknown voices fail like the pipeline's). Records
    every batch it is given; ``hold()`` keeps the worker inside ``run_batch`` until ``release()``, so tests can queue
    requests behind a running batch; seeds in ``fail_seeds`` make a batch raise."""

    def __init__(self, tasks: Sequence[str] = ("enhance", "separate"), *, fail_seeds: Sequence[int] = (),
                 sample_rate: int = 16_000, hop_length: int = 160,
                 voices: dict[str, VoiceInfo] | None = None) -> None:
        self.tasks = list(tasks)
        self._voices = dict(FAKE_VOICES if voices is None else voices)
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.fail_seeds = set(fail_seeds)
        self.batches: list[SeenBatch] = []
        self.warm_gate = threading.Event()
        self.warm_gate.set()
        self._gate = threading.Event()
        self._gate.set()

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    @property
    def voices(self) -> dict[str, VoiceInfo]:
        return self._voices if "tts" in self.tasks else {}

    def frames(self, num_samples: int) -> int:
        return num_samples // self.hop_length + 1

    def warmup(self) -> None:
        if not self.warm_gate.wait(timeout=30):
            raise RuntimeError("warm-up gate never opened")

    def run_batch(self, task: str, items: Sequence[Item], timings: dict[str, float]) -> list[np.ndarray | Exception]:
        if task == "tts":
            requests = [r for r, _ in items if isinstance(r, TtsInput)]
            lengths = [len(r.text) for r in requests]
            frames = [self.frames(int(self.sample_rate * FAKE_SECONDS_PER_CHAR * n)) for n in lengths]
            self.batches.append(SeenBatch(task, lengths, [p.seed for _, p in items], frames, requests))
        else:
            lengths = [len(wav) for wav, _ in items]
            self.batches.append(SeenBatch(task, lengths, [p.seed for _, p in items], [self.frames(n) for n in lengths]))
        if not self._gate.wait(timeout=30):  # bounded, so a failing test cannot hang the worker thread forever
            raise RuntimeError("the fake engine was held for 30 s")
        if self.fail_seeds & {p.seed for _, p in items}:
            raise RuntimeError("this input is poisoned")
        timings["sampler"] = 0.0
        if task == "tts":
            return [self._speak(r) for r, _ in items]
        half = [0.5 * wav for wav, _ in items]
        return [h if task == "enhance" else np.stack([h, h]) for h in half]

    def _speak(self, request: Any) -> np.ndarray | Exception:
        if request.voice is not None and request.voice not in self.voices:
            from model.errors import ConfigError

            return ConfigError(f"unknown voice {request.voice!r}")
        n = int(self.sample_rate * FAKE_SECONDS_PER_CHAR * len(request.text) / request.speed)
        return (0.1 * np.sin(2 * np.pi * 220 * np.arange(n) / self.sample_rate)).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        return {"device": "fake", "sample_rate": self.sample_rate}


@asynccontextmanager
async def serving(app: Any, base_url: str = "http://testserver") -> AsyncIterator[Any]:
    """Run ``app``'s lifespan and yield an httpx.AsyncClient that calls it in process; shutdown on exit."""
    import httpx

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Yield to the event loop until ``predicate()`` holds (a state change, not a timing assumption); fail after
    ``timeout_s`` so a broken test cannot hang."""
    import asyncio

    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout_s
    while not predicate():
        if loop.time() > give_up:
            raise AssertionError(f"condition not reached within {timeout_s} s")
        await asyncio.sleep(0.001)
