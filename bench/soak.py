"""Soak test: `python -m bench.soak --url URL [--duration-s 600] [--pid PID] [--json OUT]`.

Mixed traffic against a running server for a long while, to show what a short benchmark cannot: that nothing leaks
(memory, connections, rows), that overload is refused cleanly and that the server is still ready at the end.

- ``concurrency`` steady clients send enhancement uploads and OpenAI-style TTS requests (``tts_share`` of them),
  each the next when the last is answered;
- a share of those requests (``disconnect_share``) is abandoned by its client after a random 50-500 ms, mid-request
  (the server must cancel its rows; the client counts it as ``disconnected``, not lost);
- every ``burst_every_s`` a burst of ``burst_size`` requests arrives at once, more than the queue admits, so that
  some are refused with 429;
- every ``sample_every_s`` the server's resident memory is read: from ``/proc/<pid>/status`` with ``--pid`` (same
  machine), else from ``process_resident_memory_bytes`` on /metrics if the server exposes it.

The report (JSON): requests ``answered`` (200), ``refused`` (429), ``failed`` (any other HTTP status), ``lost`` (no
HTTP answer and not abandoned on purpose, or an answer that echoes another request's id), ``disconnected``, latency
percentiles of the answered ones (all and per task), the memory samples with their first, peak, last and growth, and
``ready_after`` (``/readyz`` once the traffic has stopped). Only loopback URLs, like `speechflow bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from model.audio import encode_audio
from service import paths

from .config import check_loopback
from .traffic import emit, first_voice, percentiles_ms, synthetic_input, tts_text


@dataclass(frozen=True)
class SoakConfig:
    url: str
    duration_s: float = 600.0
    concurrency: int = 4
    tts_share: float = 0.5
    disconnect_share: float = 0.1
    burst_every_s: float = 30.0
    burst_size: int = 96  # above the default max_queue (64), so a burst is partly refused
    sample_every_s: float = 5.0
    enhance_seconds: float = 2.0
    pid: int | None = None
    api_key: str | None = None
    voice: str | None = None  # TTS voice (default: the first of /v1/voices)
    timeout_s: float = 120.0
    seed: int = 0


@dataclass(frozen=True)
class SoakOutcome:
    kind: str  # steady, burst
    task: str  # enhance, tts
    status: int  # 0: no HTTP answer
    latency_s: float
    request_id: str
    echoed_id: str | None = None
    abandoned: bool = False  # the client gave up on purpose, mid-request
    error: str | None = None  # why there was no HTTP answer (the httpx exception's name)


def read_rss_bytes(pid: int) -> int | None:
    """VmRSS of ``pid`` from /proc (Linux); None when the process or the file is not there."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


async def metrics_rss_bytes(client: httpx.AsyncClient) -> int | None:
    """``process_resident_memory_bytes`` from /metrics, if the server exposes it."""
    try:
        response = await client.get(paths.METRICS)
    except httpx.HTTPError:
        return None
    for line in response.text.splitlines() if response.status_code == 200 else []:
        if line.startswith("process_resident_memory_bytes "):
            return int(float(line.split()[1]))
    return None


class Soak:
    def __init__(self, cfg: SoakConfig, client: httpx.AsyncClient, voice: str) -> None:
        self.cfg, self.client, self.voice = cfg, client, voice
        self.rng = random.Random(f"speechflow-soak-{cfg.seed}")
        self.upload = encode_audio(synthetic_input(cfg.enhance_seconds, seed=cfg.seed), 16_000, "wav")
        self.run_id = secrets.token_hex(4)
        self.outcomes: list[SoakOutcome] = []
        self.memory: list[tuple[float, int]] = []  # (seconds since start, resident bytes)
        self.count = 0

    async def send(self, kind: str, abandon_after_s: float | None = None) -> None:
        task = "tts" if self.rng.random() < self.cfg.tts_share else "enhance"
        self.count += 1
        rid = f"soak-{self.run_id}-{self.count}"
        headers = {"X-Request-ID": rid}
        if task == "tts":
            body = {"model": "tts", "input": tts_text(self.rng, self.rng.choice(("short", "sentence"))),
                    "voice": self.voice, "response_format": "wav", "seed": self.count}
            call = self.client.post(paths.SPEECH, json=body, headers=headers)
        else:
            call = self.client.post(paths.ENHANCE, headers=headers, data={"seed": str(self.count)},
                                    files={"file": ("soak.wav", self.upload, "audio/wav")})
        t0 = time.perf_counter()
        try:
            # wait_for cancels the request when it runs out: httpx closes the connection, as a client that leaves
            response = await asyncio.wait_for(call, abandon_after_s)
        except asyncio.TimeoutError:
            self.outcomes.append(SoakOutcome(kind, task, 0, time.perf_counter() - t0, rid, abandoned=True))
            return
        except httpx.HTTPError as e:
            self.outcomes.append(SoakOutcome(kind, task, 0, time.perf_counter() - t0, rid, error=type(e).__name__))
            return
        self.outcomes.append(SoakOutcome(kind, task, response.status_code, time.perf_counter() - t0, rid,
                                         response.headers.get("x-request-id")))

    async def steady(self, stop_at: float) -> None:
        while time.perf_counter() < stop_at:
            leave = self.rng.random() < self.cfg.disconnect_share
            await self.send("steady", self.rng.uniform(0.05, 0.5) if leave else None)

    async def bursts(self, stop_at: float) -> None:
        tasks: list[asyncio.Task[None]] = []
        while time.perf_counter() + self.cfg.burst_every_s < stop_at:
            await asyncio.sleep(self.cfg.burst_every_s)
            tasks += [asyncio.create_task(self.send("burst")) for _ in range(self.cfg.burst_size)]
        await asyncio.gather(*tasks)

    async def sample_memory(self, start: float, stop_at: float) -> None:
        while True:
            rss = read_rss_bytes(self.cfg.pid) if self.cfg.pid is not None else await metrics_rss_bytes(self.client)
            if rss is not None:
                self.memory.append((round(time.perf_counter() - start, 1), rss))
            if time.perf_counter() >= stop_at:
                return
            await asyncio.sleep(min(self.cfg.sample_every_s, max(0.0, stop_at - time.perf_counter())))


def report(cfg: SoakConfig, outcomes: list[SoakOutcome], memory: list[tuple[float, int]], elapsed: float,
           ready_after: bool) -> dict[str, Any]:
    answered = [o for o in outcomes if o.status == 200]
    crossed = sum(1 for o in outcomes if o.status != 0 and o.echoed_id != o.request_id)
    statuses = Counter(o.status for o in outcomes if o.status != 0)
    mb = [round(rss / 2**20, 1) for _, rss in memory]
    return {
        "config": {k: v for k, v in asdict(cfg).items() if k != "api_key"},
        "duration_s": round(elapsed, 1),
        "sent": len(outcomes),
        "answered": len(answered),
        "refused": statuses[429],
        "failed": sum(n for s, n in statuses.items() if s not in (200, 429)),
        "lost": sum(1 for o in outcomes if o.status == 0 and not o.abandoned) + crossed,
        "disconnected": sum(o.abandoned for o in outcomes),
        "status_counts": {str(s): n for s, n in sorted(statuses.items())},
        "errors": dict(Counter(f"{o.kind}: {o.error}" for o in outcomes if o.error is not None)),
        "latency_ms": percentiles_ms([o.latency_s for o in answered], (50, 95, 99)),
        "tasks": {t: {"answered": len(group), "latency_ms": percentiles_ms([o.latency_s for o in group])}
                  for t in ("enhance", "tts") if (group := [o for o in answered if o.task == t])},
        "bursts": {"sent": sum(o.kind == "burst" for o in outcomes),
                   "refused": sum(o.kind == "burst" and o.status == 429 for o in outcomes)},
        "memory": {"source": "proc" if cfg.pid is not None else "metrics", "samples_mb": list(zip(
                       [t for t, _ in memory], mb, strict=True)),
                   "first_mb": mb[0] if mb else None, "peak_mb": max(mb) if mb else None,
                   "last_mb": mb[-1] if mb else None, "growth_mb": round(mb[-1] - mb[0], 1) if mb else None},
        "ready_after": ready_after,
    }


async def run_soak(cfg: SoakConfig) -> dict[str, Any]:
    check_loopback(cfg.url)
    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    # more connections than any burst, so that the client pool never becomes the queue being measured
    limits = httpx.Limits(max_connections=cfg.concurrency + cfg.burst_size + 8)
    async with httpx.AsyncClient(base_url=cfg.url, timeout=cfg.timeout_s, headers=headers, limits=limits) as client:
        voice = cfg.voice or (await first_voice(client) if cfg.tts_share > 0 else "")
        soak = Soak(cfg, client, voice)
        start = time.perf_counter()
        stop_at = start + cfg.duration_s
        await asyncio.gather(*(soak.steady(stop_at) for _ in range(cfg.concurrency)), soak.bursts(stop_at),
                             soak.sample_memory(start, stop_at))
        elapsed = time.perf_counter() - start
        try:
            ready_after = (await client.get(paths.READYZ)).status_code == 200
        except httpx.HTTPError:
            ready_after = False
    return report(cfg, soak.outcomes, soak.memory, elapsed, ready_after)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--pid", type=int, help="the server's process id: its memory from /proc (same machine)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--tts-share", type=float, default=0.5)
    parser.add_argument("--disconnect-share", type=float, default=0.1)
    parser.add_argument("--burst-every-s", type=float, default=30.0)
    parser.add_argument("--burst-size", type=int, default=96)
    parser.add_argument("--sample-every-s", type=float, default=5.0)
    parser.add_argument("--api-key")
    parser.add_argument("--voice")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    cfg = SoakConfig(url=args.url, duration_s=args.duration_s, concurrency=args.concurrency, tts_share=args.tts_share,
                     disconnect_share=args.disconnect_share, burst_every_s=args.burst_every_s,
                     burst_size=args.burst_size, sample_every_s=args.sample_every_s, pid=args.pid,
                     api_key=args.api_key, voice=args.voice, seed=args.seed)
    emit(asyncio.run(run_soak(cfg)), args.json)


if __name__ == "__main__":
    main()
