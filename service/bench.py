"""`speechflow bench`: load a running server and report throughput, latency and batching.

Closed loop: ``concurrency`` clients, each sending its next request when the last one is answered (throughput at
a fixed load). Poisson (open loop): requests arrive at ``rate`` per second whatever the server does (latency under
an offered load, as real traffic behaves). Both stop after ``requests`` requests or ``max_duration_s``, whichever
comes first. Only loopback URLs are accepted: this is a tool for measuring one's own server, not anyone else's.
Mean batch size and server-side rejections come from /metrics, read before and after.

With ``baseline`` (a bundle directory), the same input first goes through the pipeline alone in this process, no HTTP
and no queue, at batch sizes 1, 2, 4, ... up to the concurrency: the server is then judged against the best
throughput and the batch-1 latency the model itself reaches on this machine. Run it while the server is idle (it
is: the baseline runs before the load) so the two do not compete for the cores.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import itertools
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import soundfile as sf

from model.audio import encode_audio
from model.errors import SpeechFlowError

MAX_REQUESTS = 10_000
MAX_CONCURRENCY = 256
REJECTED = {429, 503}


@dataclass(frozen=True)
class BenchConfig:
    url: str
    task: Literal["enhance", "separate"] = "enhance"
    concurrency: int = 4
    requests: int = 32
    mode: Literal["closed", "poisson"] = "closed"
    rate: float = 4.0  # requests per second, poisson mode
    audio_seconds: float = 4.0  # length of the generated input (ignored with ``input``)
    input: str | None = None  # an audio file to send instead
    steps: int | None = None
    solver: str | None = None
    guidance: float | None = None
    timeout_s: float = 120.0  # per request
    max_duration_s: float = 600.0  # no new requests after this
    seed: int = 0
    api_key: str | None = None
    baseline: str | None = None  # bundle directory: measure the pipeline alone first
    baseline_device: str = "auto"
    baseline_repeats: int = 3  # timed runs per batch size (after one untimed warm-up)


@dataclass(frozen=True)
class Outcome:
    status: int  # 0: no HTTP answer (connection error or client timeout)
    latency_s: float


def check_loopback(url: str) -> None:
    host = httpx.URL(url).host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SpeechFlowError(f"bench only targets loopback servers (127.0.0.1, ::1, localhost), not {host!r}")


def _validate(cfg: BenchConfig) -> None:
    check_loopback(cfg.url)
    if not 1 <= cfg.requests <= MAX_REQUESTS:
        raise SpeechFlowError(f"--requests must be 1..{MAX_REQUESTS}")
    if not 1 <= cfg.concurrency <= MAX_CONCURRENCY:
        raise SpeechFlowError(f"--concurrency must be 1..{MAX_CONCURRENCY}")
    if cfg.mode == "poisson" and cfg.rate <= 0:
        raise SpeechFlowError("--rate must be positive")
    if cfg.max_duration_s <= 0 or cfg.timeout_s <= 0:
        raise SpeechFlowError("durations must be positive")


def synthetic_input(seconds: float, sr: int = 16_000, seed: int = 0) -> np.ndarray:
    """A noisy harmonic tone with a syllable-rate envelope: speech-like enough for timing."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 1.3 * t)) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 10)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    return (0.2 * voiced + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def _input_audio(cfg: BenchConfig) -> tuple[bytes, float]:
    """The bytes every request sends, and their duration in seconds."""
    if cfg.input is None:
        return encode_audio(synthetic_input(cfg.audio_seconds, seed=cfg.seed), 16_000, "wav"), cfg.audio_seconds
    data = Path(cfg.input).read_bytes()
    try:
        info = sf.info(io.BytesIO(data))
    except (RuntimeError, OSError) as e:
        raise SpeechFlowError(f"cannot read {cfg.input}: {e}") from e
    return data, info.frames / info.samplerate


def pipeline_baseline(cfg: BenchConfig, audio: bytes) -> dict[str, Any]:
    """The engine's own work on the bench input (decode, features, sampler, reconstruction), timed per batch size."""
    from model.audio import SAMPLE_RATE, load_audio
    from service.engine import PipelineEngine, TaskParams

    engine = PipelineEngine.load(cfg.baseline, device=cfg.baseline_device)
    wav = load_audio(audio, SAMPLE_RATE)  # (n,) mono 16 kHz, as the service decodes an upload
    audio_s = len(wav) / SAMPLE_RATE
    params = TaskParams(steps=cfg.steps, solver=cfg.solver, guidance=cfg.guidance, seed=cfg.seed)
    sizes = [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= cfg.concurrency]
    rows = {}
    for b in sizes:
        engine.run_batch(cfg.task, [(wav, params)] * b, {})  # warm-up at this shape
        times = []
        for _ in range(cfg.baseline_repeats):
            t0 = time.perf_counter()
            engine.run_batch(cfg.task, [(wav, params)] * b, {})
            times.append(time.perf_counter() - t0)
        best = min(times)
        rows[str(b)] = {"latency_ms": round(1000 * best, 2), "audio_seconds_per_s": round(b * audio_s / best, 3)}
    best_b = max(rows, key=lambda b: rows[b]["audio_seconds_per_s"])
    return {"bundle": cfg.baseline, "device": str(engine.pipeline.device), "by_batch_size": rows,
            "best_batch_size": int(best_b), "best_audio_seconds_per_s": rows[best_b]["audio_seconds_per_s"],
            "batch1_latency_ms": rows["1"]["latency_ms"]}


def _versus(report: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """The server against the pipeline alone: throughput share and (at concurrency 1) latency overhead."""
    out: dict[str, Any] = {}
    if report["audio_seconds_per_s"]:
        out["throughput_share"] = round(report["audio_seconds_per_s"] / baseline["best_audio_seconds_per_s"], 3)
    p50 = report["latency_ms"].get("p50")
    if report["config"]["concurrency"] == 1 and p50 is not None:
        out["latency_overhead_ms"] = round(p50 - baseline["batch1_latency_ms"], 2)
        out["latency_ratio"] = round(p50 / baseline["batch1_latency_ms"], 3)
    return out


async def run_bench(cfg: BenchConfig, transport: httpx.AsyncBaseTransport | None = None) -> dict[str, Any]:
    _validate(cfg)
    audio, audio_s = _input_audio(cfg)
    baseline = None
    if cfg.baseline is not None:  # the same sampling settings on both sides: no server defaults left implicit
        from model.defaults import sampling

        chosen = sampling(cfg.task, cfg.steps, cfg.guidance, cfg.solver)
        cfg = replace(cfg, steps=chosen.steps, solver=chosen.solver, guidance=chosen.guidance)
        baseline = await asyncio.to_thread(pipeline_baseline, cfg, audio)
    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    limits = httpx.Limits(max_connections=max(cfg.concurrency, 64), max_keepalive_connections=cfg.concurrency)
    async with httpx.AsyncClient(base_url=cfg.url, transport=transport, timeout=cfg.timeout_s, headers=headers,
                                 limits=limits) as client:
        before = await _scrape(client, cfg.task)
        start = time.perf_counter()
        send = _sender(client, cfg, audio)
        if cfg.mode == "closed":
            outcomes = await _closed_loop(send, cfg, start + cfg.max_duration_s)
        else:
            outcomes = await _open_loop(send, cfg, start)
        elapsed = time.perf_counter() - start
        after = await _scrape(client, cfg.task)
    report = _report(cfg, outcomes, elapsed, audio_s, before, after)
    if baseline is not None:
        report["baseline"] = baseline
        report["versus_baseline"] = _versus(report, baseline)
    return report


def _sender(client: httpx.AsyncClient, cfg: BenchConfig, audio: bytes):
    form = {k: str(v) for k, v in {"steps": cfg.steps, "solver": cfg.solver, "guidance": cfg.guidance}.items()
            if v is not None}

    async def send(i: int) -> Outcome:
        t0 = time.perf_counter()
        try:
            response = await client.post(f"/v1/{cfg.task}", files={"file": ("bench.wav", audio, "audio/wav")},
                                         data={**form, "seed": str(cfg.seed + i)})
            status = response.status_code
        except httpx.HTTPError:
            status = 0
        return Outcome(status, time.perf_counter() - t0)

    return send


async def _closed_loop(send, cfg: BenchConfig, stop_at: float) -> list[Outcome]:
    outcomes: list[Outcome] = []
    numbers = itertools.count()

    async def client_loop() -> None:
        while (i := next(numbers)) < cfg.requests and time.perf_counter() < stop_at:
            outcomes.append(await send(i))

    await asyncio.gather(*(client_loop() for _ in range(cfg.concurrency)))
    return outcomes


async def _open_loop(send, cfg: BenchConfig, start: float) -> list[Outcome]:
    rng = random.Random(cfg.seed)
    tasks: list[asyncio.Task[Outcome]] = []
    arrival = 0.0
    for i in range(cfg.requests):
        arrival += rng.expovariate(cfg.rate)
        if arrival > cfg.max_duration_s:
            break
        delay = start + arrival - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # the arrival schedule itself, not a wait for the server
        tasks.append(asyncio.create_task(send(i)))
    return list(await asyncio.gather(*tasks))


async def _scrape(client: httpx.AsyncClient, task: str) -> dict[str, float] | None:
    """Batch-size sum/count for the task and total rejections, from /metrics (None if unavailable)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        response = await client.get("/metrics")
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    values = {"batch_sum": 0.0, "batch_count": 0.0, "rejected": 0.0}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "speechflow_batch_size_sum" and sample.labels.get("task") == task:
                values["batch_sum"] += sample.value
            elif sample.name == "speechflow_batch_size_count" and sample.labels.get("task") == task:
                values["batch_count"] += sample.value
            elif sample.name == "speechflow_rejected_total":
                values["rejected"] += sample.value
    return values


def _report(cfg: BenchConfig, outcomes: list[Outcome], elapsed: float, audio_s: float,
            before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, Any]:
    ok = [o.latency_s for o in outcomes if o.status == 200]
    statuses = Counter(o.status for o in outcomes)
    latency = {f"p{q}": round(1000 * float(np.percentile(ok, q)), 2) for q in (50, 95, 99)} if ok else {}
    if ok:
        latency["mean"] = round(1000 * float(np.mean(ok)), 2)
    mean_batch = None
    server_rejections = None
    if before and after:
        batches = after["batch_count"] - before["batch_count"]
        mean_batch = round((after["batch_sum"] - before["batch_sum"]) / batches, 3) if batches else None
        server_rejections = int(after["rejected"] - before["rejected"])
    config = {k: v for k, v in asdict(cfg).items() if k != "api_key"}
    return {
        "config": config,
        "sent": len(outcomes),
        "ok": len(ok),
        "rejected": sum(statuses[s] for s in REJECTED),
        "errors": len(outcomes) - len(ok) - sum(statuses[s] for s in REJECTED),
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "duration_s": round(elapsed, 3),
        "audio_seconds_per_request": audio_s,
        "throughput_rps": round(len(ok) / elapsed, 3) if elapsed else None,
        "audio_seconds_per_s": round(len(ok) * audio_s / elapsed, 3) if elapsed else None,
        "latency_ms": latency,
        "mean_batch_size": mean_batch,
        "server_rejections": server_rejections,
    }
