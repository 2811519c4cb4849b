"""Where and in what precision the networks run: ``--device auto|cpu|cuda|cuda:N`` and ``--dtype auto|bf16|fp16|fp32``.

Both resolve once, at load time, with a clear error (a ``ConfigError``, shown as a one-line message by the CLI and
at server start) instead of a traceback from deep inside torch when the device asked for is not there.
"""

from __future__ import annotations

import functools
import os
import time

import torch

from .errors import ConfigError

# oneDNN (bf16 matmuls and convolutions on a CPU) keeps a compiled kernel per input shape, in two caches of 1,024
# entries by default (ideep's and oneDNN's own), about 0.5 MB each: a server sees a new shape with every new live
# batch length, so with the default sizes its memory keeps growing while it serves (see docs/serving.md). 128
# kernels hold every shape of a few live batches; a miss costs about 0.2 ms. Read on first use, so setting them here
# (before any model runs) is early enough; a value in the environment wins.
KERNEL_CACHE_ENTRIES = "128"
for _var in ("LRU_CACHE_CAPACITY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY"):
    os.environ.setdefault(_var, KERNEL_CACHE_ENTRIES)

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> the first CUDA device when there is one, else the CPU; "cpu", "cuda", "cuda:N" as asked, checked."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for, but this machine has no usable CUDA device (torch "
                              f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"device {name!r} asked for, but this machine has {count} CUDA device(s) "
                              f"(cuda:0 ... cuda:{count - 1})")
    elif dev.type != "cpu":
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return dev


def use_tf32(device: torch.device) -> None:
    """On CUDA, let fp32 matmuls and convolutions use TF32 tensor cores (the fp32 parts: features, vocoder, and
    whole models when run in fp32); nothing to do elsewhere."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """The networks' compute dtype. "auto": bf16 where the device runs it fast (CUDA with bf16, a CPU with bf16
    matrix units), fp16 on a CUDA device without bf16, fp32 otherwise. Explicit names are checked against the device."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {', '.join(DTYPE_CHOICES)}, got {dtype!r}")
    if dtype == "fp16" and device.type == "cpu":
        raise ConfigError("dtype fp16 is for CUDA devices (CPUs run it slowly and without fp16 matmul units); "
                          "use bf16 or fp32 on the CPU")
    if dtype == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"{torch.cuda.get_device_name(device)} has no bf16 support; use fp16 or fp32")
    return DTYPES[dtype]


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether bf16 linear layers beat fp32 on this CPU (with AMX they are several times faster; without bf16 units,
    emulated, several times slower). The ISA flags are hidden by some hypervisors, so a probe decides: bf16 must be at
    least 1.3x faster. Single-threaded, best of ten runs each taken in turns: it compares the kernels, and a busy
    machine cannot tip it (with several threads beside other torch processes the OpenMP team waits for descheduled
    threads, which can make emulated bf16 look faster than fp32; one thread gives the right answer every time). A wrong
    bf16 pick costs 8x where bf16 is emulated. About 50 ms on a CPU without bf16 units, once per process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fp32 = bf16 = float("inf")
        for _ in range(10):
            fp32 = min(fp32, linear_seconds(torch.float32, repeats=1))
            bf16 = min(bf16, linear_seconds(torch.bfloat16, repeats=1))
    finally:
        torch.set_num_threads(threads)
    return fp32 > 1.3 * bf16


def linear_seconds(dtype: torch.dtype, n: int = 256, repeats: int = 3, device: str = "cpu") -> float:
    """Best wall time of an (n x n) @ (n x n) linear layer in ``dtype`` (the networks' main kernel)."""
    x = torch.randn(n, n, device=device).to(dtype)
    w = torch.randn(n, n, device=device).to(dtype)
    torch.nn.functional.linear(x, w)  # the first call builds the kernel
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.nn.functional.linear(x, w)
        best = min(best, time.perf_counter() - start)
    return best


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, d in DTYPES.items() if d == dtype)


def synchronize(device: torch.device) -> None:
    """Block until ``device`` has finished its queued work (a no-op on the CPU, where calls return when done)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
