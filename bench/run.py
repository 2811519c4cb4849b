"""`speechflow bench`: load a running server and report throughput, latency and batching.

Closed loop: ``concurrency`` clients, each sending its next request when the last one is answered (throughput at
a fixed load). Poisson (open loop): requests arrive at ``rate`` per second whatever the server does (latency under
an offered load, as real traffic behaves). Both stop after ``requests`` requests or ``max_duration_s``, whichever
comes first. Only loopback URLs are accepted: this is a tool for measuring one's own server, not anyone else's.
Mean batch size, padding and server-side rejections come from /metrics, read before and after.

One task (``task``): every request sends the same input. A mix (``mix="enhance:0.5,tts:0.5"``): enhancement
uploads of lengths drawn from ``enhance_seconds`` and OpenAI-style TTS requests (``POST /v1/audio/speech``, the
first voice of /v1/voices) with short, one-sentence and few-sentence texts, planned from the seed
(bench/traffic.py); the report is per task: latency percentiles, audio seconds out per second, the TTS
time to first chunk (``X-First-Chunk-Ms``, server side), the mean live rows each request saw (``X-Batch-Size``),
the server's mean rows and padding per step, status counts, and a check that every request got exactly one
answer (by its ``X-Request-ID``).

Simulation (``simulate=(a, b)``): no server and no model. The same traffic goes to the app built in process with
the fake engine, whose ODE step takes a + b x rows seconds, once per scheduling policy (step, then request), and
the two reports come back side by side with the p99 ratio request / step. GPU-like: a = 0.015 s, b = 0.0005 s. A
step of a small model on a GPU is bound by kernel launches and weight reads, not by the rows (midpoint + guidance:
two evaluations of a doubled batch, ~15 ms whatever the batch), and an extra 4 s row adds well under a millisecond
of matmul, so a 16-row step costs ~1.5x a 1-row step: batching pays, and how rows join a running batch decides
the latency. With b close to a (CPU-like, e.g. 0.02,0.02) batching buys little and both policies queue alike.

With ``baseline`` (a bundle directory), the same input first goes through the pipeline alone in this process, no HTTP
and no queue, at batch sizes 1, 2, 4, ... up to the concurrency: the server is then judged against the best
throughput and the batch-1 latency the model itself reaches on this machine. Run it while the server is idle (it
is: the baseline runs before the load) so the two do not compete for the cores.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import asdict, replace
from typing import Any

import httpx
import numpy as np

from .config import TASKS, BenchConfig, parse_mix, validate
from .traffic import (
    REJECTED,
    Outcome,
    Snapshot,
    build_plan,
    closed_loop,
    first_voice,
    input_audio,
    integrity,
    make_sender,
    mixed_report,
    open_loop,
    percentiles_ms,
    scrape,
    server_delta,
)

OPEN_LOOP_CONNECTIONS = 1_024
# The simulated server: a new live batch waits 5 ms for company, a GPU-sized frame budget, and a queue and timeout
# large enough that an overloaded policy shows as latency rather than as refusals.
SIM_SETTINGS: dict[str, Any] = {"max_wait_ms": 5.0, "max_batch_frames": 24_000, "max_queue": 1_024}
SIM_URL = "http://127.0.0.1"  # the in-process app's base URL (no socket)

def pipeline_baseline(cfg: BenchConfig, audio: bytes) -> dict[str, Any]:
    """The engine's own work on the bench input, timed per batch size: the offline path (plan: features and rows;
    generate every row; reconstruct and assemble), so no step loop, HTTP or queue. Decoding is done once, before,
    as the service does it before queueing."""
    from model.audio import SAMPLE_RATE, load_audio
    from service.engine import PipelineEngine, TaskParams

    engine = PipelineEngine.load(cfg.baseline or "", device=cfg.baseline_device)
    wav = load_audio(audio, SAMPLE_RATE)  # (n,) mono 16 kHz, as the service decodes an upload
    audio_s = len(wav) / SAMPLE_RATE
    # the model's full defaults under the bench's choices, as the service resolves them (its time grid included)
    chosen = engine.pipeline.task_sampling(cfg.task, cfg.quality, steps=cfg.steps, guidance=cfg.guidance,
                                           solver=cfg.solver, ensemble=cfg.ensemble)
    params = TaskParams(chosen, seed=cfg.seed)

    def run(b: int) -> None:  # fresh plans each time: a plan's rows carry their generation state
        engine.pipeline.run([engine.prepare(cfg.task, wav, params) for _ in range(b)])

    sizes = [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= cfg.concurrency]
    rows = {}
    for b in sizes:
        run(b)  # warm-up at this shape
        times = []
        for _ in range(cfg.baseline_repeats):
            t0 = time.perf_counter()
            run(b)
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
    validate(cfg)
    if cfg.simulate is not None:
        return await simulate(cfg)
    assert cfg.url is not None
    inputs = input_audio(cfg)
    baseline = None
    if cfg.baseline is not None:  # the same sampling settings on both sides: no server defaults left implicit
        from model.defaults import sampling

        if cfg.quality is None:  # the teacher's; a student's defaults are its own, the same on both sides
            cfg = replace(cfg, quality="full")
        if cfg.quality == "full":
            chosen = sampling(cfg.task, cfg.steps, cfg.guidance, cfg.solver, ensemble=cfg.ensemble)
            cfg = replace(cfg, steps=chosen.steps, solver=chosen.solver, guidance=chosen.guidance,
                          ensemble=chosen.ensemble)
        baseline = await asyncio.to_thread(pipeline_baseline, cfg, inputs[0][0])
    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    # open loop: the client's connection pool must not become the queue (nor turn server queueing into pool
    # timeouts), so it allows far more connections than a server admits
    connections = max(cfg.concurrency, 64) if cfg.mode == "closed" else OPEN_LOOP_CONNECTIONS
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=min(connections, 256))
    async with httpx.AsyncClient(base_url=cfg.url, transport=transport, timeout=cfg.timeout_s, headers=headers,
                                 limits=limits) as client:
        voice = cfg.voice
        if voice is None and cfg.mix is not None and "tts" in parse_mix(cfg.mix):
            voice = await first_voice(client)
        send = make_sender(client, cfg, voice)
        specs = build_plan(cfg, inputs)
        before = await scrape(client)
        start = time.perf_counter()
        if cfg.mode == "closed":
            outcomes = await closed_loop(send, specs, cfg.concurrency, start + cfg.max_duration_s)
        else:
            outcomes = await open_loop(send, specs, cfg.rate, cfg.seed, cfg.max_duration_s, start)
        elapsed = time.perf_counter() - start
        after = await scrape(client)
    if cfg.mix is not None:
        return mixed_report(cfg, outcomes, elapsed, before, after)
    report = _report(cfg, outcomes, elapsed, inputs[0][1], before, after)
    if baseline is not None:
        report["baseline"] = baseline
        report["versus_baseline"] = _versus(report, baseline)
    return report


async def simulate(cfg: BenchConfig) -> dict[str, Any]:
    """The same traffic against the in-process app with a fake engine of step cost ``cfg.simulate``, once per
    scheduling policy; the reports side by side and the p99 ratio request / step (> 1: step scheduling wins)."""
    from service.app import create_app
    from service.scheduler import POLICIES
    from service.settings import Settings

    from .fake_engine import FakeEngine
    from .inprocess import serving

    assert cfg.simulate is not None
    a, b = cfg.simulate
    inner = replace(cfg, url=SIM_URL, simulate=None, api_key=None)
    reports: dict[str, dict[str, Any]] = {}
    for policy in POLICIES:
        settings = Settings(scheduling=policy, request_timeout_s=cfg.timeout_s, api_keys=[], **SIM_SETTINGS)
        app = create_app(settings, FakeEngine(tasks=TASKS, step_cost=(a, b)))
        async with serving(app):
            await app.state.runtime.wait_ready()
            reports[policy] = await run_bench(replace(inner, label=policy), transport=httpx.ASGITransport(app=app))
    step, request = reports["step"], reports["request"]
    ratios = {"all": _ratio(request["latency_ms"], step["latency_ms"])}
    for task in step.get("tasks", {}):
        ratios[task] = _ratio(request["tasks"][task]["latency_ms"], step["tasks"][task]["latency_ms"])
    return {"simulate": {"step_cost_s": [a, b], "settings": {**SIM_SETTINGS, "request_timeout_s": cfg.timeout_s},
                         "engine": "bench.fake_engine.FakeEngine"},
            "config": {k: v for k, v in asdict(cfg).items() if k != "api_key"},
            "policies": reports, "p99_ratio_request_over_step": ratios}


def _ratio(request: dict[str, float], step: dict[str, float]) -> float | None:
    if not request.get("p99") or not step.get("p99"):
        return None
    return round(request["p99"] / step["p99"], 3)


def _report(cfg: BenchConfig, outcomes: list[Outcome], elapsed: float, audio_s: float,
            before: Snapshot | None, after: Snapshot | None) -> dict[str, Any]:
    ok = [o.latency_s for o in outcomes if o.status == 200]
    statuses = Counter(o.status for o in outcomes)
    latency = percentiles_ms(ok)
    if ok:
        latency["mean"] = round(1000 * float(np.mean(ok)), 2)
    server = server_delta(before, after, cfg.task)
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
        "mean_batch_size": server and server["mean_batch_size"],
        "mean_padding": server and server["mean_padding"],
        "server_rejections": None if before is None or after is None else int(after.rejected - before.rejected),
        "integrity": integrity(outcomes),
    }
