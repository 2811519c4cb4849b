"""The prepared GPU check (scripts/gpu-check.sh): one run on a CUDA machine that answers "does it work there, and how
fast", written to one JSON report. Parts, each timed and bounded so the whole stays under 8 minutes on a GPU:

1. ``cuda_tests``: the tests that need CUDA (tests/test_cuda.py; they skip on a machine without one),
2. ``training_step``: one training step of the ``base`` preset under bf16 autocast: seconds, achieved FLOP/s and
   MFU against the measured bf16 matmul peak of the device,
3. ``live_batch``: the served path's step: the bundle's models in the served dtype, `LiveBatch` steps of 1-64
   rows of mixed lengths (2-10 s, seeded, so the batch is padded as a served one is) under each served task's
   default sampling (TTS rows with phones and a known prompt): ms per step, real and padded frames, real frames
   per second, peak memory,
4. ``host_syncs``: host synchronisations inside each `LiveBatch.step` per task (``model.profiling.count_syncs``:
   CUDA's sync debug mode; on the CPU a dispatch-mode guard); anything but 0 fails the check,
5. ``service``: ``speechflow serve`` on the shipped bundle under the ``speechflow bench`` load (closed loop, run in
   this process) at concurrency 1-64 for every served task (enhance, separate, TTS): throughput, p50/p99
   latency and mean live rows per task and concurrency; a request the server fails fails the check.

``--dry-run`` runs every part on the CPU with small sizes (CI runs it), so the script cannot rot between the rare
sessions that have a GPU: the ``debug`` preset for the training step and the live batches (0.5-2 s rows, 1-4 of
them), and for the service 2 s runs at concurrency 1-2 with one draw of one step. ``--parts`` runs some parts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.config import BenchConfig  # noqa: E402
from bench.run import run_bench  # noqa: E402
from model.bundle import student_dirs, task_dirs  # noqa: E402
from model.config import ModelConfig, preset  # noqa: E402
from model.defaults import sampling  # noqa: E402
from model.devices import dtype_name, resolve_device, resolve_dtype  # noqa: E402
from model.flow import FlowMatching  # noqa: E402
from model.modeling import SpeechFlowModel  # noqa: E402
from model.profiling import (  # noqa: E402
    count_step_syncs,
    evaluation_flops,
    median_seconds,
    mixed_lengths,
    peak_flops,
    time_live_batch,
)
from service.engine import SERVED_TASKS  # noqa: E402
from service.placement import default_batch_frames  # noqa: E402
from service.settings import Settings  # noqa: E402

BIN = Path(sys.executable).parent
LENGTHS_S = (2.0, 10.0)  # served rows: a 6 s enhancement window and its shorter tail, a TTS chunk after its prompt
DRY_LENGTHS_S = (0.5, 2.0)  # the dry run's rows: still mixed, short enough for a CPU
DEBUG_PHONES = 16  # the dry run's TTS model: phone conditioning of the debug preset's size


def cuda_tests(timeout_s: float = 240) -> dict[str, Any]:
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", str(ROOT / "tests" / "test_cuda.py")],
                         cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    tail = run.stdout.strip().splitlines()[-1:] or [run.stderr.strip()[-300:]]
    return {"returncode": run.returncode, "summary": tail[0], "seconds": round(time.perf_counter() - start, 1)}


def training_step(name: str, device: torch.device, batch: int, seconds: float, repeats: int) -> dict[str, Any]:
    """Forward + backward + AdamW step of masked flow matching under bf16 autocast (the trainer's precision)."""
    torch.manual_seed(0)
    model = SpeechFlowModel(ModelConfig(network=preset(name), preset=name)).to(device)
    cfg = model.config.network
    frames = int(seconds * model.config.mel.sample_rate / model.config.mel.hop_length) + 1
    x1 = torch.randn(batch, frames, cfg.x_dim, device=device)
    cond = torch.randn(batch, frames, cfg.cond_dim, device=device)
    mask = torch.ones(batch, frames, dtype=torch.bool, device=device)
    optim = torch.optim.AdamW(model.net.parameters(), lr=1e-4)
    flow = FlowMatching(model.config.flow)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = flow.loss(model.net, x1, cond, mask, mask)
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)

    seconds_per_step = median_seconds(step, device, repeats)  # the dropped first step builds optimizer state
    flops = 3 * evaluation_flops(model.to(dtype=torch.bfloat16), frames, batch)  # backward ~ 2x forward
    peak, peak_dtype = peak_flops(str(device))
    return {"preset": name, "batch": batch, "frames": frames, "seconds_per_step": round(seconds_per_step, 4),
            "achieved_tflops": round(flops / seconds_per_step / 1e12, 3), "peak_tflops": round(peak / 1e12, 2),
            "peak_dtype": peak_dtype,
            "mfu": round(flops / seconds_per_step / peak, 3),
            "peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if device.type == "cuda" else None}


def debug_models(device: torch.device, dtype: torch.dtype) -> dict[str, SpeechFlowModel]:
    """The served tasks' models at the ``debug`` preset (the dry run): each task's shapes (separation generates two
    streams, TTS embeds phones), random weights."""
    torch.manual_seed(0)
    shapes = {"enhance": {}, "separate": {"x_dim": 160}, "tts": {"n_phones": DEBUG_PHONES}}
    return {task: SpeechFlowModel(ModelConfig(task=task, network=preset("debug", **kw), preset="debug"))
            .to(device=device, dtype=dtype).eval() for task, kw in shapes.items()}


def bundle_models(bundle: str | Path, device: torch.device, dtype: torch.dtype) -> dict[str, SpeechFlowModel]:
    """The bundle's served models, as ``speechflow serve`` loads them (``dtype``: the served one)."""
    return {task: SpeechFlowModel.from_pretrained(d, device=device, dtype=dtype)
            for task, d in task_dirs(bundle).items() if task in SERVED_TASKS}


def live_batch(models: dict[str, SpeechFlowModel], rows: list[int], repeats: int, budget_s: float,
               seconds: tuple[float, float] = LENGTHS_S) -> dict[str, Any]:
    """`time_live_batch` for each task's default sampling at each row count, row lengths drawn from ``seconds``
    (seeded by the row count, the same for every task). Row counts go up for all tasks together, so when
    ``budget_s`` runs out it is the largest batches that are skipped."""
    deadline = time.monotonic() + budget_s
    device = next(iter(models.values())).device
    limits = {"max_batch_size": Settings().max_batch_size, "max_batch_frames": default_batch_frames(device.type)}
    tasks: dict[str, Any] = {task: {"sampling": _sampling_row(task), "by_rows": []} for task in models}
    for n in rows:
        lengths = mixed_lengths(n, seconds, seed=n)
        for task, model in models.items():
            if time.monotonic() > deadline:
                tasks[task]["by_rows"].append({"rows": n, "skipped": "time budget"})
                continue
            row = time_live_batch(model, sampling(task), lengths, repeats=repeats)
            row["within_server_limits"] = (n <= limits["max_batch_size"]
                                           and row["padded_frames"] <= limits["max_batch_frames"])
            tasks[task]["by_rows"].append(row)
    return {"row_seconds": list(seconds), "server_limits": limits, "tasks": tasks}


def host_syncs(models: dict[str, SpeechFlowModel], rows: int,
               seconds: tuple[float, float] = LENGTHS_S) -> dict[str, Any]:
    """`count_step_syncs` for each task's default sampling, ``rows`` rows of mixed lengths; ``total`` must be 0."""
    lengths = mixed_lengths(rows, seconds, seed=rows)
    tasks = {task: count_step_syncs(model, sampling(task), lengths) for task, model in models.items()}
    return {"total": sum(t["syncs"] for t in tasks.values()), "tasks": tasks}


def _sampling_row(task: str) -> dict[str, Any]:
    s = sampling(task)
    return {"steps": s.steps, "solver": s.solver, "guidance": s.guidance, "sway": s.sway,
            "guidance_until": s.guidance_until}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# what `speechflow bench` sends per task: the same upload every request, or the TTS mix's texts (/v1/audio/speech)
# (the teachers explicitly; "<task>-fast": the task's few-step student, where the bundle has one)
BENCH_TASK: dict[str, dict[str, Any]] = {"enhance": {"task": "enhance", "quality": "full"},
                                         "separate": {"task": "separate", "quality": "full"},
                                         "tts": {"mix": "tts", "quality": "full"},
                                         "enhance-fast": {"task": "enhance", "quality": "fast"},
                                         "separate-fast": {"task": "separate", "quality": "fast"},
                                         "tts-fast": {"mix": "tts", "quality": "fast"}}


def service_bench(bundle: str, device: str, concurrencies: list[int], requests: int, run_s: float,
                  budget_s: float, out: Path, audio_s: float = 4.0,
                  overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``speechflow serve`` on the bundle, then the ``speechflow bench`` load (closed loop, run in this process:
    a bench process would pay its imports per run) per served task and concurrency: each run sends at most
    ``max(requests, 2c)`` requests for at most ``run_s`` seconds (then waits for the answers); runs that would
    start after ``budget_s`` are skipped. ``overrides``: more `BenchConfig` fields (the dry run's cheaper
    sampling). Each run's full report is written beside ``out``."""
    start = time.monotonic()
    deadline = start + budget_s
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (out.parent / "gpu-check-server.log").open("w")
    server = subprocess.Popen([str(BIN / "speechflow"), "serve", "--bundle", bundle, "--port", str(port),
                               "--device", device], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become ready (see {log.name})")
            time.sleep(0.5)
        ready_s = round(time.monotonic() - start, 1)
        tasks = [t for t in SERVED_TASKS if t in task_dirs(bundle)] + [f"{t}-fast" for t in student_dirs(bundle)]
        results: dict[str, list[dict[str, Any]]] = {t: [] for t in tasks}
        for c in concurrencies:  # every task at a concurrency before the next: a late skip loses the largest
            for task in tasks:
                left = deadline - time.monotonic()
                if left < min(run_s, 5.0):
                    results[task].append({"concurrency": c, "skipped": "time budget"})
                    continue
                student = task.endswith("-fast")  # at its own defaults: the dry run's overrides are the teachers'
                cfg = BenchConfig(url=url, concurrency=c, requests=max(requests, 2 * c), audio_seconds=audio_s,
                                  max_duration_s=min(run_s, left), **BENCH_TASK[task],
                                  **({} if student else overrides or {}))
                try:
                    report = out.parent / f"gpu-check-bench-{task}-c{c}.json"
                    results[task].append(_bench_run(cfg, BENCH_TASK[task].get("task", "tts"), report))
                except Exception as e:  # one run failing must not lose the other runs' figures
                    results[task].append({"concurrency": c, "error": f"{type(e).__name__}: {e}"})
        return {"server_ready_s": ready_s, "tasks": results}
    finally:
        server.terminate()
        server.wait(timeout=90)
        log.close()


def _bench_run(cfg: BenchConfig, task: str, report: Path) -> dict[str, Any]:
    """One closed-loop bench run, its report cut to what the check compares: throughput, latency, batching."""
    r = asyncio.run(asyncio.wait_for(run_bench(cfg), timeout=cfg.max_duration_s + 120))
    report.write_text(json.dumps(r, indent=2) + "\n")
    t = r["tasks"][task] if "tasks" in r else r  # a --mix report is per task
    server = t.get("server") or {}
    row = {"concurrency": cfg.concurrency, "sent": t["sent"], "ok": t["ok"], "errors": t["errors"],
           "rejected": t["rejected"], "duration_s": r["duration_s"], "throughput_rps": t["throughput_rps"],
           "audio_s_per_s": t["audio_seconds_per_s"], "latency_ms": t["latency_ms"],
           "mean_batch_size": r.get("mean_batch_size", server.get("mean_batch_size"))}
    if "first_chunk_ms" in t:
        row["first_chunk_ms"] = t["first_chunk_ms"]
    return row


PARTS = ("cuda_tests", "training_step", "live_batch", "host_syncs", "service")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, debug preset, small sizes (what CI runs)")
    p.add_argument("--out", default=os.environ.get("OUT", "bench-results") + "/gpu-check.json")
    p.add_argument("--bundle", default=str(ROOT / "checkpoints" / "demo"))
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    args = p.parse_args(argv)
    chosen = [part.strip() for part in args.parts.split(",") if part.strip()]
    if unknown := sorted(set(chosen) - set(PARTS)):
        p.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    dry = args.dry_run
    device = torch.device("cpu") if dry else resolve_device("cuda")
    dtype = resolve_dtype("auto", device)  # what `speechflow serve` runs the flow networks in
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    name = "debug" if dry else "base"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                              "dry_run": dry, "dtype": dtype_name(dtype), "torch": torch.__version__}
    loaded: dict[str, SpeechFlowModel] = {}
    seconds = DRY_LENGTHS_S if dry else LENGTHS_S

    def models() -> dict[str, SpeechFlowModel]:  # loaded once, for the two parts that step live batches
        if not loaded:
            loaded.update(debug_models(device, dtype) if dry else bundle_models(args.bundle, device, dtype))
        return loaded

    def service() -> dict[str, Any]:
        loaded.clear()  # the server loads its own models: leave it the device's memory
        if device.type == "cuda":
            torch.cuda.empty_cache()
        # the dry run: short uploads, one draw of one step and 2 s runs, so that three tasks stay quick on a CPU
        return service_bench(args.bundle, str(device), [1, 2] if dry else [1, 4, 16, 64],
                             requests=1 if dry else 32, run_s=2 if dry else 10, budget_s=120 if dry else 180,
                             out=out, audio_s=1.0 if dry else 4.0,
                             overrides={"steps": 1, "ensemble": 1} if dry else None)

    # Budgets (seconds) on a GPU: 120 (CUDA tests) + ~30 (training) + 60 + ~15 (syncs) + 180 (service, with the
    # server's start) leave a minute of the 8 for model loading and the runs in flight when a budget runs out.
    parts: dict[str, Callable[[], Any]] = {
        "cuda_tests": lambda: cuda_tests(60 if dry else 120),
        "training_step": lambda: training_step(name, device, 2 if dry else 8, 2.0 if dry else 10.0, 2 if dry else 5),
        "live_batch": lambda: live_batch(models(), [1, 2, 4] if dry else [1, 2, 4, 8, 16, 32, 64],
                                         repeats=1 if dry else 3, budget_s=60, seconds=seconds),
        "host_syncs": lambda: host_syncs(models(), rows=4, seconds=seconds),
        "service": service,
    }
    failed = False
    for part in chosen:
        start = time.perf_counter()
        try:
            report[part] = parts[part]()
        except Exception as e:  # one part failing must not lose the others' figures
            report[part] = {"error": f"{type(e).__name__}: {e}"}
            failed = True
        report.setdefault("seconds", {})[part] = round(time.perf_counter() - start, 1)
        out.write_text(json.dumps(report, indent=2) + "\n")  # after every part: a timeout keeps what finished
        print(f"{part}: {json.dumps(report[part])[:300]}", flush=True)
    if "cuda_tests" in report:
        failed = failed or report["cuda_tests"].get("returncode") not in (0, 5)  # 5: every test skipped (no CUDA)
    if "host_syncs" in report:
        failed = failed or report["host_syncs"].get("total") != 0  # a step must not wait for the device
    runs = [r for rows in report.get("service", {}).get("tasks", {}).values() for r in rows]
    failed = failed or any("error" in r or r.get("errors") for r in runs)  # a request the server failed
    print(f"report: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
