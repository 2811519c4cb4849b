"""The prepared GPU check (scripts/gpu-check.sh): one run on a CUDA machine that answers "does it work there, and how
fast", written to one JSON report. Parts, each timed and bounded so the whole stays under 8 minutes on a GPU:

1. the tests that need CUDA (tests/test_cuda.py; they skip on a machine without one),
2. one training step of the ``base`` preset under bf16 autocast: seconds, achieved FLOP/s and MFU against the
   measured bf16 matmul peak of the device,
3. sampler throughput against batch size (10 s rows, NFE 8, the served dtype),
4. the service: ``speechflow serve`` on the shipped bundle and ``speechflow bench`` at concurrency 1-64.

``--dry-run`` runs every part on the CPU with the ``debug`` preset and small sizes (CI runs it), so the script
cannot rot between the rare sessions that have a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.config import ModelConfig, preset  # noqa: E402
from model.devices import dtype_name, resolve_device, resolve_dtype  # noqa: E402
from model.flow import FlowMatching  # noqa: E402
from model.modeling import SpeechFlowModel  # noqa: E402
from model.profiling import evaluation_flops, median_seconds, peak_flops, time_sampler  # noqa: E402

BIN = Path(sys.executable).parent


def cuda_tests() -> dict[str, Any]:
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", str(ROOT / "tests" / "test_cuda.py")],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
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


def sampler_throughput(name: str, device: torch.device, dtype: torch.dtype, batches: list[int],
                       seconds: float) -> list[dict[str, Any]]:
    model = SpeechFlowModel(ModelConfig(network=preset(name), preset=name)).to(device=device, dtype=dtype).eval()
    rows = []
    for batch in batches:
        [row] = time_sampler(model, seconds, (8,), "midpoint", batch, repeats=2)
        rows.append({**row, "audio_s_per_s": round(batch * seconds / row["seconds"], 2)})
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_bench(bundle: str, device: str, concurrencies: list[int], requests: int,
                  out: Path) -> list[dict[str, Any]]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (out.parent / "gpu-check-server.log").open("w")
    server = subprocess.Popen([str(BIN / "speechflow"), "serve", "--bundle", bundle, "--port", str(port),
                               "--device", device], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become ready (see {log.name})")
            time.sleep(0.5)
        rows = []
        for c in concurrencies:
            report = out.parent / f"gpu-check-bench-c{c}.json"
            subprocess.run([str(BIN / "speechflow"), "bench", "--url", url, "--task", "enhance", "--concurrency",
                            str(c), "--requests", str(max(requests, 2 * c)), "--audio-seconds", "4",
                            "--json", str(report)], cwd=ROOT, check=True, capture_output=True, timeout=300)
            r = json.loads(report.read_text())
            rows.append({"concurrency": c, "ok": r["ok"], "errors": r["errors"],
                         "audio_s_per_s": r["audio_seconds_per_s"], "latency_ms": r["latency_ms"],
                         "mean_batch_size": r["mean_batch_size"]})
        return rows
    finally:
        server.terminate()
        server.wait(timeout=90)
        log.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, debug preset, small sizes (what CI runs)")
    p.add_argument("--out", default=os.environ.get("OUT", "bench-results") + "/gpu-check.json")
    p.add_argument("--bundle", default=str(ROOT / "checkpoints" / "demo"))
    args = p.parse_args(argv)
    device = torch.device("cpu") if args.dry_run else resolve_device("cuda")
    dtype = resolve_dtype("auto", device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    name = "debug" if args.dry_run else "base"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                              "dry_run": args.dry_run, "dtype": dtype_name(dtype), "torch": torch.__version__}
    parts = {
        "cuda_tests": lambda: cuda_tests(),
        "training_step": lambda: training_step(name, device, 2 if args.dry_run else 8, 2.0 if args.dry_run else 10.0,
                                               2 if args.dry_run else 5),
        "sampler": lambda: sampler_throughput(name, device, dtype, [1, 2] if args.dry_run else [1, 4, 16, 64],
                                              1.0 if args.dry_run else 10.0),
        "service": lambda: service_bench(args.bundle, str(device), [1, 2] if args.dry_run else [1, 4, 16, 64],
                                         4 if args.dry_run else 64, out),
    }
    failed = False
    for part, run in parts.items():
        start = time.perf_counter()
        try:
            report[part] = run()
        except Exception as e:  # one part failing must not lose the others' figures
            report[part] = {"error": f"{type(e).__name__}: {e}"}
            failed = True
        report.setdefault("seconds", {})[part] = round(time.perf_counter() - start, 1)
        out.write_text(json.dumps(report, indent=2) + "\n")  # after every part: a timeout keeps what finished
        print(f"{part}: {json.dumps(report[part])[:300]}", flush=True)
    failed = failed or report["cuda_tests"].get("returncode") not in (0, 5)  # 5: every test skipped (no CUDA)
    print(f"report: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
