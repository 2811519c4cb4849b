"""What one request may cost on this server: the step loop's limits, and the checks that refuse (413) a request
that alone exceeds them, before it is queued."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import RequestTooCostly
from .scheduler import Policy


@dataclass(frozen=True)
class LoopLimits:
    max_batch_frames: int = 24_000  # padded frames of one live batch
    max_batch_size: int = 16  # rows of one live batch
    max_wait_s: float = 0.01  # a new live batch waits this long for company
    max_queue: int = 64  # requests not yet started, before 429
    max_request_rows: int = 128  # rows (windows times ensemble draws, text chunks) one request may need
    max_request_frames: int = 60_000  # frames one request may generate (all rows)
    policy: Policy = "step"
    max_step_failures: int = 8  # failed steps in a row before the engine is declared broken (service.faults)
    stream_in_order: bool = False  # a streamed request's chunks join one after another (where rows cost alike)


def request_estimate(limits: LoopLimits, cost: float | None, rows: int, frames: int, sampling_evals: int,
                     timeout_s: float, param: str) -> float:
    """Refuse (413) a request whose cost alone exceeds what this server allows: too many rows or frames, or an
    estimated compute time beyond its deadline (``cost``: the measured seconds of a frame-evaluation). Returns that
    estimate in seconds (0 before the cost model is measured), for `StepLoop.submit`."""
    check_size(limits, rows, frames, param)
    if cost is None:
        return 0.0
    estimate = cost * frames * sampling_evals
    if estimate > timeout_s:
        raise RequestTooCostly(f"this request needs about {estimate:.0f} s of compute on this server, more than "
                               f"its timeout of {timeout_s:g} s (request_timeout_s); send less, or ask for fewer "
                               "steps or a smaller ensemble", param=param)
    return estimate


def check_size(limits: LoopLimits, rows: int, frames: int, param: str) -> None:
    """413 for more rows or frames than one request may have."""
    if rows > limits.max_request_rows:
        raise RequestTooCostly(f"this request needs {rows} generation rows (windows or text chunks); the limit "
                               f"is {limits.max_request_rows} (max_request_rows)", param=param)
    if frames > limits.max_request_frames:
        raise RequestTooCostly(f"this request would generate {frames} frames ({frames / 100:.0f} s); the limit "
                               f"is {limits.max_request_frames} (max_request_frames)", param=param)
