"""Offline timing of the generate path (network evaluations of the ODE sampler), for README tables."""

from __future__ import annotations

import time
from typing import Any

import torch

from .modeling import SpeechFlowModel


def time_sampler(
    model: SpeechFlowModel,
    seconds: float = 10.0,
    nfes: tuple[int, ...] = (8, 16, 32),
    solver: str = "midpoint",
    batch: int = 1,
    repeats: int = 3,
    autocast: bool = False,
) -> list[dict[str, Any]]:
    """Median wall time of ``model.generate`` on ``batch`` x ``seconds`` of audio for each NFE."""
    frames = int(seconds * model.config.mel.sample_rate / model.config.mel.hop_length) + 1
    cond = torch.randn(batch, frames, model.config.network.cond_dim, device=model.device)
    mask = torch.ones(batch, frames, dtype=torch.bool, device=model.device)
    device_type = model.device.type
    rows = []
    for nfe in nfes:
        times = []
        for r in range(repeats + 1):  # the first run warms up kernels and is dropped
            if device_type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
                model.generate(cond, mask, seeds=list(range(batch)), nfe=nfe, solver=solver)
            if device_type == "cuda":
                torch.cuda.synchronize()
            if r:
                times.append(time.perf_counter() - start)
        median = sorted(times)[len(times) // 2]
        rows.append({"nfe": nfe, "solver": solver, "batch": batch, "audio_s": seconds, "seconds": median,
                     "ms_per_nfe": 1000 * median / nfe, "rtf": median / (seconds * batch),
                     "device": str(model.device), "bf16": autocast})
    return rows
