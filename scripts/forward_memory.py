"""Peak memory of one velocity-network forward (README, "Attention memory"): builds a preset with random weights,
runs one forward on (batch, frames) in a dtype and prints, as JSON, how far the process's resident memory rose
above where it was before the forward (the kernel's peak-RSS counter VmHWM, reset just before). Works against
older checkouts too (it needs only ``SpeechFlowModel`` and ``preset``): that is how the before/after figures were
taken.

    python scripts/forward_memory.py --preset base --frames 1600 --batch 2 --dtype bf16 [--padded]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path.cwd()))
from model.config import ModelConfig, preset
from model.modeling import SpeechFlowModel


def _status_gb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20  # kB
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS (VmHWM) to the current RSS


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="base")
    p.add_argument("--frames", type=int, default=1600)
    p.add_argument("--batch", type=int, default=2, help="2 = one row with classifier-free guidance")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16")
    p.add_argument("--padded", action="store_true", help="the second row 10 %% shorter (a padded batch)")
    args = p.parse_args()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    model = SpeechFlowModel(ModelConfig(network=preset(args.preset))).to(dtype=dtype).eval()
    cfg = model.config.network
    x = torch.randn(args.batch, args.frames, cfg.x_dim).to(dtype)
    cond = torch.randn(args.batch, args.frames, cfg.cond_dim).to(dtype)
    mask = torch.ones(args.batch, args.frames, dtype=torch.bool)
    if args.padded:
        mask[-1, int(0.9 * args.frames):] = False
    t = torch.full((args.batch,), 0.5)
    kwargs = {"phones": torch.ones(args.batch, args.frames, dtype=torch.long)} if cfg.n_phones else {}
    with torch.no_grad():
        model.net(x[:, :8], t, cond[:, :8], mask[:, :8], **{k: v[:, :8] for k, v in kwargs.items()})  # kernels
    reset_peak()
    before = _status_gb("VmRSS")
    start = time.perf_counter()
    with torch.no_grad():
        model.net(x, t, cond, mask, **kwargs)
    seconds = time.perf_counter() - start
    peak = _status_gb("VmHWM")
    print(json.dumps({"preset": args.preset, "frames": args.frames, "batch": args.batch, "dtype": args.dtype,
                      "padded": args.padded, "weights_gb": round(sum(p.numel() * p.element_size()
                                                                        for p in model.parameters()) / 2**30, 3),
                      "rss_before_forward_gb": round(before, 3), "peak_rss_gb": round(peak, 3),
                      "forward_growth_gb": round(peak - before, 3), "forward_s": round(seconds, 2)}))


if __name__ == "__main__":
    main()
