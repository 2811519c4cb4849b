"""Where the step loop's work runs: the live-batch frame budget per device, and the thread for pre- and
post-processing (or none: the engine thread between steps)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

# Padded feature frames per live batch when the settings leave it open. CPU: a forward of a few rows already
# reaches the machine's matmul peak, so larger batches only add padding and latency (the sweep that chose it:
# docs/results/scheduling.md#frame-budget). GPU: a wide budget, where batching pays; bound it by activation memory.
CPU_BATCH_FRAMES = 1_600
GPU_BATCH_FRAMES = 24_000


def default_batch_frames(device: str) -> int:
    return CPU_BATCH_FRAMES if device in ("cpu", "fake") else GPU_BATCH_FRAMES


def stream_in_order(order: str, device: str) -> bool:
    """Whether a streamed request's chunks run one after another rather than side by side (``order``: auto,
    sequential, together). On a CPU a step costs in proportion to its rows, so the first chunk alone is out after
    one chunk's generation and the whole takes no longer; on an accelerator rows of one step cost about the same
    as one, so ``auto`` runs the chunks together there."""
    return order == "sequential" or (order == "auto" and device in ("cpu", "fake"))


def processing_worker(mode: str, device: str) -> ThreadPoolExecutor | None:
    """The thread for pre- and post-processing, or None to run them on the engine thread between steps.
    ``auto``: a worker on an accelerator (its CPU work then overlaps the device's steps); on a CPU the engine
    thread, because there the two compete for the same cores (docs/results/scheduling.md#processing-thread). A
    CPU worker runs torch single-threaded: a second multi-threaded OpenMP team would fight the engine's."""
    on_cpu = device in ("cpu", "fake")
    if mode == "engine" or (mode == "auto" and on_cpu):
        return None
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="speechflow-processing",
                              initializer=_single_threaded_torch if on_cpu else None)


def _single_threaded_torch() -> None:
    # torch's thread count is per calling thread (the engine thread's team was made when the bundle loaded);
    # threads that first touch torch after this one start single-threaded too, which suits the decode threads.
    import torch

    torch.set_num_threads(1)
