"""Side jobs: model work that is not generation (a voice upload's transcription and prompt alignment), queued for
the step loop, which runs them on the processing thread between steps (or beside them, with a worker) so they
never compete with a step for the engine thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import DeadlineExceeded


@dataclass(eq=False)
class SideJob:
    fn: Callable[[], Any]
    future: asyncio.Future[Any]


class SideJobs:
    """The queue of side jobs not started yet."""

    def __init__(self) -> None:
        self._queue: list[SideJob] = []

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(SideJob(fn, future))
        return future

    def take(self) -> list[SideJob]:
        """Every queued job still wanted (its caller has not given up), in order; the queue is then empty."""
        jobs, self._queue = self._queue, []
        return [job for job in jobs if not job.future.done()]


def run(jobs: list[SideJob]) -> list[Any]:
    """On the processing thread: each job's result, or the exception it raised."""
    outcomes: list[Any] = []
    for job in jobs:
        try:
            outcomes.append(job.fn())
        except Exception as e:
            outcomes.append(e)
    return outcomes


def settle(jobs: list[SideJob], outcomes: list[Any]) -> None:
    """On the event loop: hand each outcome to its caller."""
    for job, outcome in zip(jobs, outcomes, strict=True):
        if job.future.done():
            continue  # its caller gave up (deadline)
        if isinstance(outcome, Exception):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)


async def wait(future: asyncio.Future[Any], timeout_s: float) -> Any:
    """A side job's result; DeadlineExceeded (504) past ``timeout_s`` (the job is then dropped if not started)."""
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout_s)
    except asyncio.TimeoutError:
        future.cancel()
        raise DeadlineExceeded("the request's deadline passed before it finished") from None
