"""What one `speechflow bench` run is asked to do (`BenchConfig`), and the checks on it: only loopback servers are
measured, and the traffic is bounded."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

import httpx

from model.errors import SpeechFlowError

TASKS = ("enhance", "separate", "tts")
MAX_REQUESTS = 10_000
MAX_CONCURRENCY = 256


@dataclass(frozen=True)
class BenchConfig:
    url: str | None = None  # None only with ``simulate``
    task: Literal["enhance", "separate"] = "enhance"  # one task, unless ``mix`` (TTS: ``mix="tts"``)
    concurrency: int = 4
    requests: int = 32
    mode: Literal["closed", "poisson"] = "closed"
    rate: float = 4.0  # requests per second, poisson mode
    audio_seconds: float = 4.0  # length of the generated input, one task (ignored with ``input``)
    input: str | None = None  # an audio file to send instead
    steps: int | None = None
    solver: str | None = None
    guidance: float | None = None
    ensemble: int | None = None  # enhance / separate: draws averaged
    quality: str | None = None  # fast (the task's student) or full (the teacher); None: the server's
    timeout_s: float = 120.0  # per request
    max_duration_s: float = 600.0  # no new requests after this
    seed: int = 0
    api_key: str | None = None
    baseline: str | None = None  # bundle directory: measure the pipeline alone first
    baseline_device: str = "auto"
    baseline_repeats: int = 3  # timed runs per batch size (after one untimed warm-up)
    mix: str | None = None  # e.g. "enhance:0.5,tts:0.5": a mixed run, reported per task
    enhance_seconds: tuple[float, ...] = (2.0, 4.0, 8.0)  # lengths of the generated uploads in a mix
    voice: str | None = None  # TTS voice (default: the first of /v1/voices)
    label: str | None = None  # names the run in the tables (e.g. the server's --scheduling)
    simulate: tuple[float, float] | None = None  # (a, b): the in-process fake server, both policies


def check_loopback(url: str) -> None:
    host = httpx.URL(url).host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SpeechFlowError(f"bench only targets loopback servers (127.0.0.1, ::1, localhost), not {host!r}")


def validate(cfg: BenchConfig) -> None:
    if cfg.simulate is None:
        if cfg.url is None:
            raise SpeechFlowError("give the server's --url, or --simulate A,B")
        check_loopback(cfg.url)
    else:
        if cfg.url is not None:
            raise SpeechFlowError("--simulate builds its own server: give no --url")
        if len(cfg.simulate) != 2 or min(cfg.simulate) < 0:
            raise SpeechFlowError("--simulate takes A,B: seconds per step and per row, both >= 0")
        if cfg.baseline is not None:
            raise SpeechFlowError("--baseline measures a real bundle; it has no place in a simulation")
    if cfg.mix is not None:
        parse_mix(cfg.mix)  # raises on a malformed mix
        if cfg.baseline is not None:
            raise SpeechFlowError("--baseline compares one task (--task), not a --mix")
        if any(s <= 0 for s in cfg.enhance_seconds) or not cfg.enhance_seconds:
            raise SpeechFlowError("--enhance-seconds must be positive lengths")
    if not 1 <= cfg.requests <= MAX_REQUESTS:
        raise SpeechFlowError(f"--requests must be 1..{MAX_REQUESTS}")
    if not 1 <= cfg.concurrency <= MAX_CONCURRENCY:
        raise SpeechFlowError(f"--concurrency must be 1..{MAX_CONCURRENCY}")
    if cfg.mode == "poisson" and cfg.rate <= 0:
        raise SpeechFlowError("--rate must be positive")
    if cfg.max_duration_s <= 0 or cfg.timeout_s <= 0:
        raise SpeechFlowError("durations must be positive")


def parse_mix(text: str) -> dict[str, float]:
    """``enhance:0.5,tts:0.5`` (a bare task weighs 1) -> normalised weights by task."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        task, _, weight = part.partition(":")
        task = task.strip()
        if task not in TASKS:
            raise SpeechFlowError(f"--mix: unknown task {task!r} (tasks: {', '.join(TASKS)})")
        if task in weights:
            raise SpeechFlowError(f"--mix names {task!r} twice")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise SpeechFlowError(f"--mix: {part!r} is not TASK:WEIGHT") from None
        if not w > 0:
            raise SpeechFlowError(f"--mix: the weight of {task!r} must be positive")
        weights[task] = w
    if not weights:
        raise SpeechFlowError("--mix is empty; e.g. enhance:0.5,tts:0.5")
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}
