"""Offline timing for README tables and the GPU check: the ODE sampler (ms per network evaluation, achieved FLOP/s
and MFU against this machine's measured matmul peak), live-batch steps as the server runs them (padded rows of mixed
lengths, `time_live_batch`), the host synchronisations inside a step (`count_syncs`, `count_step_syncs`) and one
TTS request split into its stages (``model.stages``)."""

from __future__ import annotations

import functools
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from .defaults import Sampling
from .devices import dtype_name, linear_seconds
from .errors import ConfigError
from .generation import LiveBatch, Row
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


def profile_edit(pipe: Any, new_word: str, voice: str | None = None, repeats: int = 3,
                 **tts_kwargs: Any) -> dict[str, Any]:
    """One edit of a built-in voice's recording (its third word replaced by ``new_word``), end to end and per
    stage (text frontend, prompt alignment, durations, features, sampling, vocoder; the rest is the splice)."""
    voice = voice or next(iter(pipe.voices), None)
    if voice not in pipe.voices:
        raise ConfigError(f"no built-in voice {voice!r} to edit; this bundle has: {', '.join(pipe.voices) or 'none'}")
    recording = pipe.voices[voice]
    words = recording.text.split()
    text = " ".join([*words[:2], new_word, *words[3:]])
    row = _profile(lambda: pipe.edit(recording.wav, pipe.sample_rate, text, recording.text, **tts_kwargs)[0], pipe,
                   repeats)
    return {"task": "edit", "voice": voice, "text": text, **row, **tts_kwargs}


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


# --- host synchronisations -------------------------------------------------------------------------------------------
aten = torch.ops.aten
# ops that hand a tensor's values to the host, or size their output by them: on a GPU each one stalls the host until
# the device has caught up
READS_BACK = {aten._local_scalar_dense, aten.item, aten.is_nonzero, aten.equal, aten.allclose, aten.nonzero,
              aten.masked_select, aten._unique, aten._unique2, aten.unique_consecutive, aten.unique_dim,
              aten.bincount, aten.repeat_interleave}
INDEXING = (aten.index, aten.index_put, aten.index_put_)  # x[bool_mask] sizes its output by the mask's values
TENSOR_READS = ("tolist", "numpy", "__array__")  # read a CPU tensor's values without going through the dispatcher
CUDA_SYNC_WARNING = "synchronizing CUDA operation"  # torch.cuda.set_sync_debug_mode("warn")'s message


@dataclass
class SyncCount:
    """The host synchronisations seen inside a `count_syncs` block, each named (an aten op, a Tensor method, or
    CUDA's warning)."""

    method: str  # "cuda_sync_debug_mode" or "dispatch_guard"
    events: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.events)


class _ReadBacks(TorchDispatchMode):
    """Calls ``found`` for every op that reads a tensor's values back to the host or whose output shape depends on
    them, then runs the op."""

    def __init__(self, found: Callable[[str], None], quiet: list[int]) -> None:
        super().__init__()
        self.found, self.quiet = found, quiet

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if not self.quiet[0]:
            if func.overloadpacket in READS_BACK:
                self.found(f"reads a tensor back: {func}")
            elif func.overloadpacket in INDEXING and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool
                                                          for i in args[1] if i is not None):
                self.found(f"indexes with a boolean mask: {func}")
        return func(*args, **(kwargs or {}))


@contextmanager
def _dispatch_guard(found: Callable[[str], None]) -> Iterator[None]:
    """The dispatch mode plus the Tensor methods that read a CPU tensor without the dispatcher, patched for the block
    and restored after. ``quiet`` keeps one read from counting twice (``__array__`` calls ``numpy``)."""
    quiet = [0]

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def read(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if not quiet[0]:
                found(f"reads a tensor back: Tensor.{name}")
            quiet[0] += 1
            try:
                return original(self, *args, **kwargs)
            finally:
                quiet[0] -= 1
        return read

    own = {name: torch.Tensor.__dict__.get(name) for name in TENSOR_READS}  # None: inherited from TensorBase
    try:
        for name in TENSOR_READS:
            setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
        with _ReadBacks(found, quiet):
            yield
    finally:
        for name, original in own.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)


@contextmanager
def _cuda_sync_warnings(found: Callable[[str], None], strict: bool) -> Iterator[None]:
    """torch's own sync debug mode: every blocking copy, ``.item()``, ``nonzero`` or stream synchronisation on
    CUDA warns (strict: raises); the warnings are collected and any others passed on."""
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every occurrence, not once per code location
        torch.cuda.set_sync_debug_mode("error" if strict else "warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    for w in caught:
        if CUDA_SYNC_WARNING in str(w.message):
            found(f"{w.message} ({Path(w.filename).name}:{w.lineno})")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def sync_method(device: torch.device | str) -> str:
    """How `count_syncs` counts on ``device``."""
    return "cuda_sync_debug_mode" if torch.device(device).type == "cuda" else "dispatch_guard"


@contextmanager
def count_syncs(device: torch.device | str = "cpu", strict: bool = False) -> Iterator[SyncCount]:
    """Count the host synchronisations inside the block (``strict``: fail at the first, an AssertionError on the
    CPU, torch's RuntimeError on CUDA).

    On CUDA the device says so itself (``torch.cuda.set_sync_debug_mode``). Elsewhere a CPU tensor's values are on
    the host already, so the CPU stands in for the device: every op that would read a device tensor back (``.item()``,
    ``bool(tensor)``, ``.tolist()``, ``nonzero``, boolean-mask indexing and the like) counts, through a
    ``TorchDispatchMode`` and the Tensor methods that bypass it. Not thread-safe: patches ``torch.Tensor`` while
    it runs."""
    dev = torch.device(device)
    counter = SyncCount(sync_method(dev))

    def found(what: str) -> None:
        if strict:
            raise AssertionError(f"the block {what}")
        counter.events.append(what)

    if dev.type == "cuda":
        with _cuda_sync_warnings(found, strict):
            yield counter
    else:
        with _dispatch_guard(found):
            yield counter


@contextmanager
def no_host_sync(device: torch.device | str = "cpu") -> Iterator[None]:
    """Fail at the first host synchronisation inside the block (`count_syncs` with ``strict``)."""
    with count_syncs(device, strict=True):
        yield


# --- live batches as the server runs them ------------------------------------------------------------------------
def mixed_lengths(n: int, seconds: tuple[float, float] = (2.0, 10.0), frame_rate: float = 100.0,
                  seed: int = 0) -> list[int]:
    """``n`` row lengths in frames, drawn uniformly between ``seconds`` at ``frame_rate`` (seeded), so a live batch
    of them is padded as a served one is."""
    rng = np.random.default_rng(seed)
    lo, hi = (round(s * frame_rate) for s in seconds)
    return [int(k) for k in rng.integers(lo, hi + 1, size=n)]


def live_rows(model: SpeechFlowModel, lengths: Sequence[int], sampling: Sampling, seed: int = 0) -> list[Row]:
    """Rows shaped as the pipeline's planners make them, with ``sampling`` as their own (the plan sets it): ``cond``
    (T, cond_dim); a phone-conditioned (TTS) model's rows also carry ``phones`` (T,) long and a known prompt (its
    first third) as `plan_tts` lays out a chunk after its prompt. Values are random: a step's cost does not depend
    on them."""
    cfg, dev = model.config.network, model.device
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i, n in enumerate(lengths):
        cond = torch.randn(n, cfg.cond_dim, generator=gen).to(dev)
        row = Row(cond, seed + i, sampling=sampling)
        if cfg.n_phones:
            row.extras = {"phones": torch.randint(0, cfg.n_phones, (n,), generator=gen).to(dev)}
            row.known, row.known_mask = cond, torch.arange(n, device=dev) < n // 3
        rows.append(row)
    return rows


def time_live_batch(model: SpeechFlowModel, sampling: Sampling, lengths: Sequence[int], repeats: int = 3,
                    seed: int = 0) -> dict[str, Any]:
    """Every `LiveBatch.step` of rows of ``lengths`` frames (padded to the longest) from t = 0 to 1 under
    ``sampling``, in a live batch of its solver as the service makes one, timed with the device waited for around
    each step; ``repeats`` paths after a dropped warm-up path (kernels, caches). ``ms_per_step`` is the median over
    all of a path's steps (the first packs the batch, the last finishes the rows; ``first_step_ms`` is the first
    alone); ``real_frames_per_s`` counts real (unpadded) frames advanced one step per second, ``audio_s_per_s``
    seconds of audio taken all the way to t = 1 per second. Peak memory on CUDA."""
    dev = model.device
    frame_rate = model.config.mel.sample_rate / model.config.mel.hop_length
    rows = live_rows(model, lengths, sampling, seed)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    steps, firsts, paths = [], [], []
    for r in range(repeats + 1):
        live = LiveBatch(model, sampling.solver)
        live.join(rows)
        times = []
        while len(live):
            _sync(dev)
            start = time.perf_counter()
            live.step()
            _sync(dev)
            times.append(time.perf_counter() - start)
        if r:
            steps += times
            firsts.append(times[0])
            paths.append(sum(times))
    step_s, path_s = statistics.median(steps), statistics.median(paths)
    real, padded = sum(lengths), len(lengths) * max(lengths)
    return {"rows": len(lengths), "real_frames": real, "padded_frames": padded,
            "padding": round(1 - real / padded, 3), "steps": len(steps) // repeats,
            "ms_per_step": round(1000 * step_s, 3), "first_step_ms": round(1000 * statistics.median(firsts), 3),
            "path_ms": round(1000 * path_s, 2), "real_frames_per_s": round(real / step_s, 1),
            "audio_s_per_s": round(real / frame_rate / path_s, 2),
            "peak_memory_gb": round(torch.cuda.max_memory_allocated(dev) / 2**30, 3) if dev.type == "cuda" else None}


def count_step_syncs(model: SpeechFlowModel, sampling: Sampling, lengths: Sequence[int], seed: int = 0,
                     warmup: bool = True) -> dict[str, Any]:
    """Host synchronisations inside each `LiveBatch.step` of one path (`count_syncs`): half the rows join at
    t = 0 and the rest one step later, so the steps include repacking, rows at different step indices and rows
    finishing. ``warmup`` first runs the path uncounted on rows one frame longer: lazy initialisation (kernels,
    libraries) is not a step's, while the counted steps still meet lengths they have not seen (new attention
    biases, new packing), as a server's steps do."""
    per_step: list[int] = []
    events: list[str] = []
    for counted in ([False, True] if warmup else [True]):
        rows = live_rows(model, lengths if counted else [n + 1 for n in lengths], sampling, seed)
        half = (len(rows) + 1) // 2
        live = LiveBatch(model, sampling.solver)
        live.join(rows[:half])
        waiting = rows[half:]
        while len(live) or waiting:
            if waiting and (not len(live) or live.rows[0].step):  # one step after the first rows
                live.join(waiting)
                waiting = []
            if not counted:
                live.step()
                continue
            with count_syncs(model.device) as syncs:
                live.step()
            per_step.append(syncs.count)
            events += syncs.events
    return {"method": sync_method(model.device), "rows": len(lengths), "syncs": sum(per_step), "per_step": per_step,
            "events": sorted(set(events))[:10]}
