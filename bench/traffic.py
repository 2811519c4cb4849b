"""What `speechflow bench` sends and how each answer is measured: the request plan (which task, which input, in
which order), the HTTP sender, the closed- and open-loop drivers, the /metrics snapshots and the mixed report.

A run's whole plan is drawn from its seed before the first request is sent: each request's task (``--mix``
apportioned exactly over the requests, then shuffled, so 0.5/0.5 really is half and half), the enhancement input's
length (one of ``enhance_seconds``) and the TTS text (short, one sentence, or a few sentences). Arrival times come
from the seed too. So runs with the same seed (the two scheduling policies, two servers) see the same traffic.

Every request carries its own ``X-Request-ID``, which the server echoes: counting answers by the echoed id shows
whether each request got exactly one answer (nothing lost, nothing duplicated or crossed between connections).
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf

from model.audio import encode_audio
from model.errors import SpeechFlowError
from service import paths

from .config import BenchConfig, parse_mix

UPLOAD_TASKS = {"enhance": paths.ENHANCE, "separate": paths.SEPARATE}
REJECTED = {429, 503}
TEXT_KINDS = ("short", "sentence", "paragraph")
_WORDS = ("the", "a", "small", "river", "runs", "past", "old", "house", "every", "morning", "we", "walked", "along",
          "quiet", "road", "before", "sun", "came", "up", "over", "green", "hills", "and", "children", "played",
          "near", "water", "while", "birds", "sang", "softly", "in", "tall", "trees", "after", "long", "winter",
          "people", "gathered", "market", "to", "sell", "bread", "fresh", "fruit", "warm", "coffee")


@dataclass(frozen=True)
class RequestSpec:
    """One planned request."""

    index: int
    task: str
    seed: int
    audio: bytes | None = None  # enhance/separate: the upload
    audio_s: float = 0.0  # its duration
    text: str | None = None  # tts


@dataclass(frozen=True)
class Outcome:
    status: int  # 0: no HTTP answer (connection error or client timeout)
    latency_s: float
    task: str = "enhance"
    request_id: str = ""  # the X-Request-ID sent
    echoed_id: str | None = None  # the X-Request-ID answered
    audio_s: float = 0.0  # audio seconds returned (200 only): the input's length, or the TTS answer's
    first_chunk_ms: float | None = None  # X-First-Chunk-Ms: server-side admission -> first chunk ready (TTS)
    live_rows: float | None = None  # X-Batch-Size: mean rows of the request's live batch over its steps


Send = Callable[[RequestSpec], Awaitable[Outcome]]


# --- the plan -----------------------------------------------------------------------------------------------------
def apportion(n: int, weights: dict[str, float]) -> list[str]:
    """``n`` task names in exact proportion to ``weights`` (largest remainder), in weight order."""
    exact = {t: n * w for t, w in weights.items()}
    counts = {t: int(x) for t, x in exact.items()}
    for t in sorted(exact, key=lambda t: counts[t] - exact[t])[: n - sum(counts.values())]:
        counts[t] += 1
    return [t for t in weights for _ in range(counts[t])]


def tts_text(rng: random.Random, kind: str) -> str:
    """Deterministic filler text: ``short`` (2-4 words), ``sentence`` (8-16 words), ``paragraph`` (3-5 sentences;
    the fake engine and the pipeline make one or more rows of it)."""
    def sentence(lo: int, hi: int) -> str:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(lo, hi))]
        return " ".join(words).capitalize() + "."

    if kind == "short":
        return sentence(2, 4)
    if kind == "sentence":
        return sentence(8, 16)
    return " ".join(sentence(8, 16) for _ in range(rng.randint(3, 5)))


def synthetic_input(seconds: float, sr: int = 16_000, seed: int = 0) -> np.ndarray:
    """A noisy harmonic tone with a syllable-rate envelope: speech-like enough for timing."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 1.3 * t)) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 10)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    return (0.2 * voiced + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def input_audio(cfg: BenchConfig) -> list[tuple[bytes, float]]:
    """The uploads to choose from, with their durations: the ``input`` file, else one generated input per length
    (``audio_seconds`` for one task, ``enhance_seconds`` in a mix)."""
    if cfg.input is not None:
        data = Path(cfg.input).read_bytes()
        try:
            info = sf.info(io.BytesIO(data))
        except (RuntimeError, OSError) as e:
            raise SpeechFlowError(f"cannot read {cfg.input}: {e}") from e
        return [(data, info.frames / info.samplerate)]
    lengths = cfg.enhance_seconds if cfg.mix else (cfg.audio_seconds,)
    return [(encode_audio(synthetic_input(s, seed=cfg.seed), 16_000, "wav"), s) for s in lengths]


def build_plan(cfg: BenchConfig, inputs: Sequence[tuple[bytes, float]]) -> list[RequestSpec]:
    """Every request of the run, in sending order (seeds ``seed + index``, so results are reproducible too)."""
    if not cfg.mix:
        audio, seconds = inputs[0]
        return [RequestSpec(i, cfg.task, cfg.seed + i, audio, seconds) for i in range(cfg.requests)]
    rng = random.Random(f"speechflow-bench-plan-{cfg.seed}")  # apart from the arrival times' generator
    tasks = apportion(cfg.requests, parse_mix(cfg.mix))
    rng.shuffle(tasks)
    specs = []
    for i, task in enumerate(tasks):
        if task == "tts":
            specs.append(RequestSpec(i, task, cfg.seed + i, text=tts_text(rng, rng.choice(TEXT_KINDS))))
        else:
            audio, seconds = rng.choice(list(inputs))
            specs.append(RequestSpec(i, task, cfg.seed + i, audio, seconds))
    return specs


# --- sending ------------------------------------------------------------------------------------------------------
async def first_voice(client: httpx.AsyncClient) -> str:
    try:
        response = await client.get(paths.VOICES)
        voices = response.json().get("voices", []) if response.status_code == 200 else []
    except (httpx.HTTPError, ValueError):
        voices = []
    if not voices:
        raise SpeechFlowError("the server lists no TTS voices (GET /v1/voices); give --voice or leave tts out of "
                              "--mix")
    return str(voices[0]["id"])


def make_sender(client: httpx.AsyncClient, cfg: BenchConfig, voice: str | None) -> Send:
    form = {k: str(v) for k, v in {"steps": cfg.steps, "solver": cfg.solver, "guidance": cfg.guidance,
                                   "ensemble": cfg.ensemble, "quality": cfg.quality}.items() if v is not None}
    speech = {k: v for k, v in {"steps": cfg.steps, "solver": cfg.solver, "cfg": cfg.guidance,
                                "quality": cfg.quality}.items() if v is not None}
    run = secrets.token_hex(4)  # ids unique across runs, so the server's log tells runs apart

    async def send(spec: RequestSpec) -> Outcome:
        rid = f"bench-{run}-{spec.index}"
        headers = {"X-Request-ID": rid}
        t0 = time.perf_counter()
        try:
            if spec.task == "tts":
                body = {"model": "tts", "input": spec.text, "voice": voice, "response_format": "pcm",
                        "seed": spec.seed, **speech}
                response = await client.post(paths.SPEECH, json=body, headers=headers)
            else:
                response = await client.post(UPLOAD_TASKS[spec.task], headers=headers,
                                             files={"file": ("bench.wav", spec.audio or b"", "audio/wav")},
                                             data={**form, "seed": str(spec.seed)})
        except httpx.HTTPError:
            return Outcome(0, time.perf_counter() - t0, spec.task, rid)
        latency = time.perf_counter() - t0
        h = response.headers
        ok = response.status_code == 200
        if not ok:
            audio_s = 0.0
        elif spec.task == "tts":
            audio_s = speech_seconds(response)
        else:
            audio_s = spec.audio_s  # the input's length, as the one-task report counts it
        return Outcome(response.status_code, latency, spec.task, rid, h.get("x-request-id"), audio_s,
                       _number(h.get("x-first-chunk-ms")), _number(h.get("x-batch-size")))

    return send


def _number(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


async def closed_loop(send: Send, specs: Sequence[RequestSpec], concurrency: int, stop_at: float) -> list[Outcome]:
    """``concurrency`` clients, each sending the next planned request when its last one is answered."""
    outcomes: list[Outcome] = []
    queue = iter(specs)

    async def client_loop() -> None:
        while time.perf_counter() < stop_at and (spec := next(queue, None)) is not None:
            outcomes.append(await send(spec))

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return outcomes


async def open_loop(send: Send, specs: Sequence[RequestSpec], rate: float, seed: int, max_duration_s: float,
                    start: float) -> list[Outcome]:
    """Poisson arrivals at ``rate`` per second, whatever the server does (the schedule is drawn from ``seed``)."""
    rng = random.Random(seed)
    tasks: list[asyncio.Task[Outcome]] = []
    arrival = 0.0
    for spec in specs:
        arrival += rng.expovariate(rate)
        if arrival > max_duration_s:
            break
        delay = start + arrival - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # the arrival schedule itself, not a wait for the server
        tasks.append(asyncio.create_task(send(spec)))
    return list(await asyncio.gather(*tasks))


# --- /metrics -----------------------------------------------------------------------------------------------------
_SERIES = {"speechflow_batch_size_sum": "batch_sum", "speechflow_batch_size_count": "batch_count",
           "speechflow_padding_ratio_sum": "padding_sum", "speechflow_padding_ratio_count": "padding_count",
           "speechflow_steps_total": "steps", "speechflow_step_seconds_sum": "step_s"}


@dataclass(frozen=True)
class Snapshot:
    tasks: dict[str, dict[str, float]]  # per task: batch_sum/count, padding_sum/count, steps, step_s
    rejected: float
    dropped: float = 0.0  # rows that left before finishing (all reasons)


async def scrape(client: httpx.AsyncClient) -> Snapshot | None:
    """The per-step batching series, total rejections and dropped rows, from /metrics (None if unavailable)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        response = await client.get(paths.METRICS)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    tasks: dict[str, dict[str, float]] = {}
    rejected = dropped = 0.0
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name in _SERIES and "task" in sample.labels:
                series = tasks.setdefault(sample.labels["task"], dict.fromkeys(_SERIES.values(), 0.0))
                series[_SERIES[sample.name]] += sample.value
            elif sample.name == "speechflow_rejected_total":
                rejected += sample.value
            elif sample.name == "speechflow_rows_dropped_total":
                dropped += sample.value
    return Snapshot(tasks, rejected, dropped)


def server_delta(before: Snapshot | None, after: Snapshot | None, task: str) -> dict[str, Any] | None:
    """What the server saw of ``task`` during the run: mean rows and padding per step, steps run."""
    if before is None or after is None:
        return None
    zero = dict.fromkeys(_SERIES.values(), 0.0)
    a, b = after.tasks.get(task, zero), before.tasks.get(task, zero)
    d = {k: a[k] - b[k] for k in zero}
    return {"mean_batch_size": round(d["batch_sum"] / d["batch_count"], 3) if d["batch_count"] else None,
            "mean_padding": round(d["padding_sum"] / d["padding_count"], 4) if d["padding_count"] else None,
            "steps": int(d["steps"])}


# --- the mixed report ---------------------------------------------------------------------------------------------
def percentiles_ms(values_s: Sequence[float], qs: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    return {f"p{q}": round(1000 * float(np.percentile(values_s, q)), 2) for q in qs} if values_s else {}


def integrity(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Whether every sent request got exactly one answer, counted by the echoed X-Request-ID: ``lost`` requests
    got none (no HTTP answer, or their id came back on no answer), ``duplicated`` ones more than one, and
    ``unexpected`` answers carry an id that was never sent (or none)."""
    sent = [o.request_id for o in outcomes]
    answers = Counter(o.echoed_id for o in outcomes if o.status != 0)
    sent_set = set(sent)
    lost = sum(1 for rid in sent_set if answers[rid] == 0)
    duplicated = sum(1 for rid in sent_set if answers[rid] > 1)
    unexpected = sum(n for rid, n in answers.items() if rid not in sent_set)
    report = {"sent": len(sent), "unique_ids": len(sent_set), "answered": sum(answers.values()),
              "no_answer": sum(o.status == 0 for o in outcomes), "lost": lost, "duplicated": duplicated,
              "unexpected": unexpected}
    report["ok"] = lost == duplicated == unexpected == 0 and len(sent_set) == len(sent)
    return report


def task_report(outcomes: Sequence[Outcome], elapsed: float, server: dict[str, Any] | None) -> dict[str, Any]:
    ok = [o for o in outcomes if o.status == 200]
    statuses = Counter(o.status for o in outcomes)
    rejected = sum(statuses[s] for s in REJECTED)
    latency = percentiles_ms([o.latency_s for o in ok])
    if ok:
        latency["mean"] = round(1000 * float(np.mean([o.latency_s for o in ok])), 2)
    audio = sum(o.audio_s for o in ok)
    rows = [o.live_rows for o in ok if o.live_rows is not None]
    report: dict[str, Any] = {
        "sent": len(outcomes), "ok": len(ok), "rejected": rejected, "errors": len(outcomes) - len(ok) - rejected,
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "latency_ms": latency,
        "audio_seconds": round(audio, 3),
        "audio_seconds_per_s": round(audio / elapsed, 3) if elapsed else None,
        "throughput_rps": round(len(ok) / elapsed, 3) if elapsed else None,
        "mean_live_rows": round(float(np.mean(rows)), 3) if rows else None,
        "server": server,
    }
    firsts = [(o.first_chunk_ms, 1000 * o.latency_s) for o in ok if o.first_chunk_ms is not None]
    if firsts:  # chunked tasks (TTS): the streaming latency, server side
        report["first_chunk_ms"] = {f"p{q}": round(float(np.percentile([f for f, _ in firsts], q)), 2)
                                    for q in (50, 95)}
        report["first_chunk_after_latency"] = sum(f > lat for f, lat in firsts)  # must be 0
    return report


def mixed_report(cfg: BenchConfig, outcomes: Sequence[Outcome], elapsed: float, before: Snapshot | None,
                 after: Snapshot | None) -> dict[str, Any]:
    by_task = {t: [o for o in outcomes if o.task == t] for t in parse_mix(cfg.mix or cfg.task)}
    ok = [o for o in outcomes if o.status == 200]
    return {
        "config": {k: v for k, v in asdict(cfg).items() if k != "api_key"},
        "label": cfg.label,
        "sent": len(outcomes),
        "ok": len(ok),
        "duration_s": round(elapsed, 3),
        "latency_ms": percentiles_ms([o.latency_s for o in ok]),
        "audio_seconds_per_s": round(sum(o.audio_s for o in ok) / elapsed, 3) if elapsed else None,
        "integrity": integrity(outcomes),
        "server_rejections": None if before is None or after is None else int(after.rejected - before.rejected),
        "tasks": {t: task_report(group, elapsed, server_delta(before, after, t)) for t, group in by_task.items()},
    }


def emit(report: dict[str, Any], path: str | None) -> None:
    """Print a bench tool's report as JSON, and write it to ``path`` as well when one is given."""
    text = json.dumps(report, indent=2)
    if path:
        Path(path).write_text(text + "\n")
    print(text)


def speech_seconds(response: httpx.Response) -> float:
    """Seconds of a ``pcm`` speech answer: 16-bit mono at ``X-Sample-Rate``, whether it was streamed (a stream
    cannot carry ``X-Audio-Seconds``, which is known only at its end) or whole."""
    return len(response.content) / 2 / float(response.headers["x-sample-rate"])
