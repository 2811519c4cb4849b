"""What a failed step means for the process: a fault the device recovers from (one request's bad input, an
out-of-memory in one large batch) is contained by bisecting the batch; one it does not recover from ends the
process, so the orchestrator restarts it instead of the server failing request after request while /readyz says
200."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ServiceError

# CUDA reports these once and then fails every later call on the context: nothing in the process can run again.
UNRECOVERABLE_MARKERS = (
    "illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "illegal instruction",
    "misaligned address",
    "uncorrectable ECC",
    "CUBLAS_STATUS_EXECUTION_FAILED",
    "CUDA error: the launch timed out",
)


class EngineFailed(ServiceError):
    """The engine cannot go on: the step loop stops, every waiting request fails with 503, the process exits 1."""

    status = 503
    code = "engine_failed"


def unrecoverable(error: BaseException) -> bool:
    """Whether ``error`` leaves the device unusable (an out-of-memory error does not: a smaller batch fits)."""
    if type(error).__name__ == "OutOfMemoryError":
        return False
    text = str(error)
    return any(marker in text for marker in UNRECOVERABLE_MARKERS)


@dataclass
class StepFailures:
    """Consecutive failed steps; a successful step resets the count. Bisecting a batch of n requests with one
    culprit fails at most log2(n) + 1 steps in a row, so the limit should stay above that for the row cap."""

    limit: int
    count: int = 0

    def succeeded(self) -> None:
        self.count = 0

    def failed(self, error: Exception) -> EngineFailed | None:
        """Count one failure; the error that ends the process, or None while it can go on."""
        self.count += 1
        if unrecoverable(error):
            return EngineFailed(f"the device cannot recover from a failed step ({error}); the server is restarting")
        if self.count >= self.limit:
            return EngineFailed(f"{self.count} steps failed in a row (max_step_failures), the last with {error!r}; "
                                "the server is restarting")
        return None


def halves(owners: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """The two halves a failed batch's requests are retried in (arrival order kept): a culprit among n requests is
    found in about log2(n) failed steps, while the innocent half runs through at once."""
    return list(owners[: len(owners) // 2]), list(owners[len(owners) // 2 :])
