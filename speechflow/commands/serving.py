"""Serving commands: the HTTP service and its load generator."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model.errors import SpeechFlowError

from .common import DEFAULT_BUNDLE, add_device_args


def cmd_serve(args: argparse.Namespace) -> None:
    from service.server import serve
    from service.settings import Settings

    flags = {k: getattr(args, k) for k in ("bundle", "host", "port", "device", "dtype", "scheduling",
                                           "processing", "stream_order", "max_batch_frames")
             if getattr(args, k) is not None}
    serve(Settings(**flags))  # flags win over SPEECHFLOW_* variables, which win over defaults


def cmd_bench(args: argparse.Namespace) -> None:
    import asyncio

    try:
        from bench.config import BenchConfig
        from bench.run import run_bench
    except ModuleNotFoundError as e:
        if e.name != "bench":
            raise
        raise SpeechFlowError("speechflow bench runs from a source checkout (pip install -e '.[serve]'); the "
                              "serving image ships no benchmark code") from None

    if (args.task is None) == (args.mix is None):
        raise SpeechFlowError("give either --task (one task) or --mix (e.g. enhance:0.5,tts:0.5)")
    cfg = BenchConfig(url=args.url, task=args.task or "enhance", concurrency=args.concurrency,
                      requests=args.requests, mode=args.mode, rate=args.rate, audio_seconds=args.audio_seconds,
                      input=args.input, steps=args.steps, solver=args.solver, guidance=args.guidance,
                      ensemble=args.ensemble, quality=args.quality,
                      timeout_s=args.timeout, max_duration_s=args.max_duration,
                      seed=args.seed, api_key=args.api_key, baseline=args.baseline,
                      baseline_device=args.baseline_device, mix=args.mix,
                      enhance_seconds=_parse_floats(args.enhance_seconds, "--enhance-seconds"), voice=args.voice,
                      label=args.label, simulate=_simulate_cost(args.simulate))
    report = asyncio.run(run_bench(cfg))
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)


def _parse_floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SpeechFlowError(f"{flag} expects comma-separated numbers, got {text!r}") from None


def _simulate_cost(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    cost = _parse_floats(text, "--simulate")
    if len(cost) != 2:
        raise SpeechFlowError(f"--simulate expects A,B (seconds per step, per row), got {text!r}")
    return cost[0], cost[1]


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the HTTP service (settings: SPEECHFLOW_* variables; flags win)")
    p.add_argument("--bundle", help=f"bundle directory (default: SPEECHFLOW_BUNDLE or {DEFAULT_BUNDLE})")
    p.add_argument("--host", help="interface to listen on (default: SPEECHFLOW_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: SPEECHFLOW_PORT or 8000)")
    add_device_args(p, default=None)
    p.add_argument("--scheduling", choices=["step", "request"],
                   help="step: rows join and leave the live batch between ODE steps (default); request: request-level "
                        "batching, kept for comparison")
    p.add_argument("--processing", choices=["auto", "engine", "worker"],
                   help="where pre- and post-processing run: engine = between steps on the engine thread, worker = "
                        "on a thread beside the steps; auto (default) = worker on a GPU, engine on a CPU")
    p.add_argument("--stream-order", choices=["auto", "sequential", "together"],
                   help="a streamed TTS request's sentences: sequential = one after another (first audio after one "
                        "sentence), together = side by side; auto (default) = sequential on a CPU, together on a GPU")
    p.add_argument("--max-batch-frames", type=int, help="padded frames of one live batch (default: by device)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("bench", help="load a running server (loopback only), or a simulated one: throughput, "
                                     "latency, batching")
    p.add_argument("--url", help="e.g. http://127.0.0.1:8000 (or --simulate)")
    p.add_argument("--task", choices=["enhance", "separate"], help="one task, the same input every request")
    p.add_argument("--mix", metavar="TASK:WEIGHT,...",
                   help="a mix of tasks, reported per task, e.g. enhance:0.5,tts:0.5 (enhance, separate, tts; TTS "
                        "via /v1/audio/speech with short, one-sentence and few-sentence texts from --seed)")
    p.add_argument("--enhance-seconds", default="2,4,8",
                   help="lengths of the generated uploads in a --mix, drawn per request (default 2,4,8)")
    p.add_argument("--voice", help="TTS voice in a --mix (default: the first of /v1/voices)")
    p.add_argument("--simulate", metavar="A,B",
                   help="no server: the same traffic against the in-process app with a fake engine whose ODE "
                        "step takes A + B x rows seconds (max wait 5 ms, 24000-frame budget), once per scheduling "
                        "policy (step, request), side by side with the p99 ratio. GPU-like: 0.015,0.0005 (a small "
                        "model's step is launch-bound and an extra row nearly free: 16 rows cost ~1.5x one, so "
                        "batching pays and how rows join decides latency); CPU-like: B close to A. E.g. --mix "
                        "enhance:0.5,tts:0.5 --mode poisson --rate 10 --requests 300")
    p.add_argument("--label", help="names this run in `python -m bench.table --mixed` (e.g. the server's "
                                   "--scheduling)")
    p.add_argument("--concurrency", type=int, default=4, help="clients (closed loop)")
    p.add_argument("--requests", type=int, default=32, help="requests in all (at most 10000)")
    p.add_argument("--mode", choices=["closed", "poisson"], default="closed")
    p.add_argument("--rate", type=float, default=4.0, help="arrivals per second (poisson)")
    p.add_argument("--audio-seconds", type=float, default=4.0, help="length of the generated input (--task)")
    p.add_argument("--input", help="send this audio file instead of a generated one")
    p.add_argument("--steps", type=int, help="NFE (default: the server's)")
    p.add_argument("--solver", choices=["euler", "midpoint", "heun", "rk4"])
    p.add_argument("--guidance", type=float, help="classifier-free guidance (default: the server's)")
    p.add_argument("--ensemble", type=int, help="draws averaged per enhancement / separation (default: the server's)")
    p.add_argument("--quality", choices=["fast", "full"],
                   help="the task's few-step student (fast) or its teacher (full) (default: the server's choice)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--max-duration", type=float, default=600.0, help="no new requests after this many seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--api-key", help="Bearer key, when the server has keys")
    p.add_argument("--baseline", metavar="BUNDLE", help="first time the pipeline alone on the same input "
                                                        "(the server's bundle), and compare the server with it")
    p.add_argument("--baseline-device", default="auto")
    p.add_argument("--json", help="also write the report here")
    p.set_defaults(func=cmd_bench)
