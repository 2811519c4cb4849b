"""Offline timing for README tables: the ODE sampler (ms per network evaluation, achieved FLOP/s and MFU against
this machine's measured matmul peak) and one TTS request split into its stages (``model.stages``)."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .devices import dtype_name, linear_seconds
from .modeling import SpeechFlowModel
from .stages import recording

T = TypeVar("T")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_runs(fn: Callable[[], T], device: torch.device, repeats: int) -> list[tuple[float, dict[str, float], T]]:
    """(wall seconds, stage seconds, result) of ``repeats`` runs of ``fn`` after one dropped warm-up run (kernels,
    caches); CUDA work is waited for, so the time is what ran."""
    runs = []
    for r in range(repeats + 1):
        with recording() as stages:
            _sync(device)
            start = time.perf_counter()
            result = fn()
            _sync(device)
            seconds = time.perf_counter() - start
        if r:
            runs.append((seconds, stages, result))
    return runs


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs after a warm-up run."""
    return statistics.median(seconds for seconds, _, _ in timed_runs(fn, device, repeats))


@functools.cache
def peak_flops(device_name: str = "cpu", n: int = 1024) -> tuple[float, str]:
    """The device's measured matmul peak: FLOP/s of an n^3 linear layer in the faster of bf16 and fp32 (bf16 with
    AMX or on a GPU; fp32 on a CPU without bf16 units, where bf16 is emulated), and which dtype that was. The
    denominator of MFU."""
    return max((2 * n**3 / linear_seconds(dtype, n, repeats=10, device=device_name), dtype_name(dtype))
               for dtype in (torch.bfloat16, torch.float32))


def evaluation_flops(model: SpeechFlowModel, frames: int, batch: int) -> int:
    """FLOPs of one network evaluation on (batch, frames), counted by torch's FlopCounterMode (matmuls and
    attention; elementwise work is not counted, as usual for MFU)."""
    net, cfg = model.net, model.config.network
    x = torch.zeros(batch, frames, cfg.x_dim, device=model.device, dtype=model.dtype)
    cond = torch.zeros(batch, frames, cfg.cond_dim, device=model.device, dtype=model.dtype)
    mask = torch.ones(batch, frames, dtype=torch.bool, device=model.device)
    t = torch.zeros(batch, device=model.device)
    kwargs = {"phones": torch.ones(batch, frames, dtype=torch.long, device=model.device)} if cfg.n_phones else {}
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x, t, cond, mask, **kwargs)
    return int(counter.get_total_flops())


def time_sampler(
    model: SpeechFlowModel,
    seconds: float = 10.0,
    nfes: tuple[int, ...] = (8, 16, 32),
    solver: str = "midpoint",
    batch: int = 1,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """Median wall time of ``model.generate`` on ``batch`` x ``seconds`` of audio for each NFE, with the achieved
    FLOP/s and the MFU against the device's measured matmul peak (``peak_flops``)."""
    frames = int(seconds * model.config.mel.sample_rate / model.config.mel.hop_length) + 1
    cfg = model.config.network
    cond = torch.randn(batch, frames, cfg.cond_dim, device=model.device)
    mask = torch.ones(batch, frames, dtype=torch.bool, device=model.device)
    kwargs = {"phones": torch.ones(batch, frames, dtype=torch.long, device=model.device)} if cfg.n_phones else {}
    per_evaluation = evaluation_flops(model, frames, batch)
    peak, peak_dtype = peak_flops(str(model.device))
    rows = []
    for nfe in nfes:
        median = median_seconds(
            lambda nfe=nfe: model.generate(cond, mask, seeds=list(range(batch)), nfe=nfe, solver=solver, **kwargs),
            model.device, repeats)
        achieved = per_evaluation * nfe / median
        rows.append({"preset": model.config.preset, "dtype": str(model.dtype).removeprefix("torch."), "nfe": nfe,
                     "solver": solver, "batch": batch, "audio_s": seconds, "seconds": round(median, 4),
                     "ms_per_nfe": round(1000 * median / nfe, 2), "rtf": round(median / (seconds * batch), 4),
                     "gflop_per_nfe": round(per_evaluation / 1e9, 4), "achieved_gflops": round(achieved / 1e9, 1),
                     "peak_gflops": round(peak / 1e9, 1), "peak_dtype": peak_dtype, "mfu": round(achieved / peak, 3),
                     "device": str(model.device)})
    return rows


def profile_tts(pipe: Any, text: str, voice: str | None = None, repeats: int = 3, **tts_kwargs: Any) -> dict[str, Any]:
    """One TTS request (a ``SpeechFlowPipeline``) timed end to end and per stage (median over ``repeats`` after a
    warm-up run): text frontend, durations, prompt alignment, features, sampling, vocoder."""
    voice = voice or next(iter(pipe.voices), None)
    row = _profile(lambda: pipe.tts(text, voice=voice, **tts_kwargs)[0], pipe, repeats)
    return {"task": "tts", "text": text, "voice": voice, **row, **tts_kwargs}


def profile_task(pipe: Any, task: str, seconds: float = 4.0, repeats: int = 3, **kwargs: Any) -> dict[str, Any]:
    """One enhancement of ``seconds`` of noisy speech (the example sentence in pink noise at 5 dB) or one
    separation of as much of the two-voice example mixture (either repeated to length), end to end and per stage
    (features, sampling; the rest is reconstruction and resampling)."""
    from .examples import mixture_example, noisy_example

    wav = noisy_example()[0] if task == "enhance" else mixture_example()[0]
    wav = np.resize(wav, int(seconds * pipe.sample_rate))
    run = pipe.enhance if task == "enhance" else pipe.separate
    row = _profile(lambda: run(wav, pipe.sample_rate, **kwargs)[0], pipe, repeats)
    return {"task": task, **row, **kwargs}


def _profile(run: Callable[[], np.ndarray], pipe: Any, repeats: int) -> dict[str, Any]:
    runs = timed_runs(run, pipe.device, repeats)
    # every figure from the rounded ones reported beside it, so the row agrees with itself
    total = round(statistics.median(seconds for seconds, _, _ in runs), 4)
    names = sorted({name for _, stages, _ in runs for name in stages})
    stages = {name: round(statistics.median(s.get(name, 0.0) for _, s, _ in runs), 4) for name in names}
    audio_s = round(runs[-1][2].shape[-1] / pipe.sample_rate, 3)  # of audio in (a separation returns (2, n))
    return {"audio_s": audio_s, "seconds": total, "rtf": round(total / audio_s, 4),
            "stages_s": stages, "other_s": round(total - sum(stages.values()), 4),  # the stages do not nest
            "dtype": pipe.dtype_name, "device": str(pipe.device)}
