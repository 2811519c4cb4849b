"""What one request may cost on this server: the step loop's limits, and the checks that refuse (413) a request
that alone exceeds them, before it is queued."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

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


class Backlog:
    """What the admitted requests still owe the engine, learnt from what finished requests really took: the
    estimates (the cost model, measured alone) are scaled by a running ratio of real to estimated engine time
    (batching makes a row cheaper than alone, most of all on a GPU), less what each request has had. Admission
    and the scheduler's deadline check read it; Retry-After comes from the running request latency."""

    def __init__(self) -> None:
        self.work_ratio = 1.0  # smoothed engine seconds a request took per estimated second
        self.latency_s: float | None = None  # smoothed request latency

    def need_s(self, request: Any) -> float:
        """Engine seconds ``request`` (``estimate_s``, ``engine_s``) still needs."""
        return max(0.0, request.estimate_s * self.work_ratio - request.engine_s)

    def total_s(self, requests: Iterable[Any]) -> float:
        return sum(self.need_s(r) for r in requests)

    def ahead_s(self, requests: Iterable[Any], estimate_s: float) -> float:
        """When a new request of ``estimate_s`` would be done, if admitted now."""
        return self.total_s(requests) + estimate_s * self.work_ratio

    def finished(self, request: Any, latency_s: float) -> None:
        self.latency_s = latency_s if self.latency_s is None else 0.8 * self.latency_s + 0.2 * latency_s
        if request.estimate_s > 0:
            self.work_ratio = 0.8 * self.work_ratio + 0.2 * request.engine_s / request.estimate_s

    def retry_after_s(self, waiting: int, batch_rows: int) -> float:
        """Seconds until ``waiting`` queued requests have started, in waves of a live batch's rows."""
        return (self.latency_s or 1.0) * math.ceil((waiting + 1) / batch_rows)
