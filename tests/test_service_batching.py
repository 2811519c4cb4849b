"""The dynamic batcher on its own: a fake engine records the batches it is given; a held engine keeps the worker
busy so that requests queue up behind it (state changes, never sleeps, decide what happens)."""

import asyncio

import numpy as np
import pytest

from service.batching import Batcher, BatchLimits, Job, SamplingKey
from service.engine import TaskParams
from service.errors import DeadlineExceeded, QueueFull, ShuttingDown
from service.testing import FakeEngine, until

KEY = SamplingKey("enhance", "midpoint", 4, 1.0, "mask")


def submit(batcher: Batcher, frames: int, seed: int = 0, key: SamplingKey = KEY, timeout_s: float = 30.0) -> Job:
    wav = np.zeros((frames - 1) * 160, np.float32)  # FakeEngine.frames(len) == frames
    params = TaskParams(key.steps, key.solver, key.guidance, seed, key.reconstruction)
    return batcher.submit(key, (wav, params), frames, timeout_s)


def run(scenario, **limits):
    """Run ``scenario(batcher, engine)`` on a started batcher and drain it afterwards."""
    async def main():
        engine = FakeEngine(fail_seeds=[13])
        batcher = Batcher(engine.run_batch, BatchLimits(**{"max_wait_s": 0.0, **limits}))
        batcher.start()
        try:
            await scenario(batcher, engine)
        finally:
            engine.release()
            await batcher.drain()

    asyncio.run(main())


async def behind_a_running_batch(batcher: Batcher, engine: FakeEngine) -> Job:
    """Occupy the worker with one held job, so that what is submitted next has to queue."""
    engine.hold()
    first = submit(batcher, 10, seed=999)
    await until(lambda: len(engine.batches) == 1)
    return first


def sizes(engine: FakeEngine) -> list[list[int]]:
    return [b.frames for b in engine.batches]


def test_requests_that_queue_together_run_as_one_length_sorted_batch():
    async def scenario(batcher, engine):
        first = await behind_a_running_batch(batcher, engine)
        jobs = [submit(batcher, f, seed=i) for i, f in enumerate([50, 20, 40, 30])]
        assert batcher.depth() == 4
        engine.release()
        results = await asyncio.gather(first.future, *(j.future for j in jobs))
        assert sizes(engine) == [[10], [20, 30, 40, 50]]  # one batch, sorted by length
        assert [r.batch_size for r in results] == [1, 4, 4, 4, 4]
        assert results[1].output.shape == ((50 - 1) * 160,)  # each job gets its own output back

    run(scenario)


def test_a_full_batch_does_not_wait_for_max_wait():
    async def scenario(batcher, engine):
        jobs = [submit(batcher, 10, seed=i) for i in range(4)]
        await asyncio.wait_for(asyncio.gather(*(j.future for j in jobs)), 10)  # max_wait is an hour
        assert sizes(engine) == [[10, 10, 10, 10]]

    run(scenario, max_wait_s=3600.0, max_batch_size=4)


def test_size_cap_and_frame_budget_are_respected():
    async def scenario(batcher, engine):
        await behind_a_running_batch(batcher, engine)
        jobs = [submit(batcher, f, seed=i) for i, f in enumerate([100, 200, 300, 400, 500, 90, 90, 90, 90])]
        engine.release()
        await asyncio.gather(*(j.future for j in jobs))
        batches = sizes(engine)[1:]
        assert all(len(b) <= 3 and len(b) * max(b) <= 1000 for b in batches)
        assert sorted(f for b in batches for f in b) == sorted([100, 200, 300, 400, 500, 90, 90, 90, 90])
        assert batches[0] == [90, 90, 100]  # the oldest job (100) leads, joined by the closest lengths

    run(scenario, max_batch_frames=1000, max_batch_size=3)


def test_frame_budget_groups_similar_lengths():
    async def scenario(batcher, engine):
        await behind_a_running_batch(batcher, engine)
        jobs = [submit(batcher, f, seed=i) for i, f in enumerate([100, 200, 300, 400, 500])]
        engine.release()
        await asyncio.gather(*(j.future for j in jobs))
        assert sizes(engine)[1:] == [[100, 200, 300], [400, 500]]

    run(scenario, max_batch_frames=1000)


def test_a_single_job_over_the_budget_still_runs_alone():
    async def scenario(batcher, engine):
        job = submit(batcher, 5000)
        await job.future
        assert sizes(engine) == [[5000]]

    run(scenario, max_batch_frames=1000)


def test_different_sampling_settings_never_share_a_batch():
    other = SamplingKey("enhance", "midpoint", 8, 1.0, "mask")

    async def scenario(batcher, engine):
        await behind_a_running_batch(batcher, engine)
        jobs = [submit(batcher, 10, seed=i, key=KEY if i % 2 else other) for i in range(6)]
        engine.release()
        await asyncio.gather(*(j.future for j in jobs))
        assert [b.seeds for b in engine.batches[1:]] == [[0, 2, 4], [1, 3, 5]]  # oldest key first

    run(scenario)


def test_cancelled_and_expired_jobs_never_reach_the_engine():
    async def scenario(batcher, engine):
        await behind_a_running_batch(batcher, engine)
        gone = submit(batcher, 10, seed=1)
        expired = submit(batcher, 10, seed=2, timeout_s=0.0)
        kept = submit(batcher, 10, seed=3)
        gone.future.cancel()  # what the handler does when its client disconnects
        await until(lambda: batcher.depth() == 1)  # the cancelled job left the queue (and its gauge) at once
        engine.release()
        assert (await kept.future).batch_size == 1
        with pytest.raises(DeadlineExceeded):
            await expired.future
        assert [b.seeds for b in engine.batches] == [[999], [3]]

    run(scenario)


def test_a_failing_request_fails_alone():
    async def scenario(batcher, engine):
        await behind_a_running_batch(batcher, engine)
        jobs = [submit(batcher, 10, seed=s) for s in (11, 12, 13, 14)]
        engine.release()
        outcomes = await asyncio.gather(*(j.future for j in jobs), return_exceptions=True)
        assert [isinstance(o, RuntimeError) for o in outcomes] == [False, False, True, False]
        assert [b.seeds for b in engine.batches[1:]] == [[11, 12, 13, 14], [11], [12], [13], [14]]

    run(scenario)


def test_queue_full_is_refused_with_a_retry_hint():
    async def scenario(batcher, engine):
        await behind_a_running_batch(batcher, engine)  # running, not queued
        queued = [submit(batcher, 10, seed=i) for i in range(2)]
        with pytest.raises(QueueFull) as refused:
            submit(batcher, 10)
        assert int(refused.value.headers["Retry-After"]) >= 1 and refused.value.status == 429
        engine.release()
        await asyncio.gather(*(j.future for j in queued))

    run(scenario, max_queue=2)


def test_drain_finishes_queued_work_and_refuses_new_work():
    async def main():
        engine = FakeEngine()
        batcher = Batcher(engine.run_batch, BatchLimits(max_wait_s=0.0))
        batcher.start()
        first = await behind_a_running_batch(batcher, engine)
        batcher.limits = BatchLimits(max_wait_s=3600.0)  # from now on only a full batch or the drain dispatches
        queued = [submit(batcher, 10, seed=i) for i in range(3)]
        draining = asyncio.create_task(batcher.drain())
        await until(lambda: not batcher.accepting)
        with pytest.raises(ShuttingDown):
            submit(batcher, 10)
        engine.release()
        await draining  # returns only after the queued jobs ran, without waiting max_wait
        assert all(j.future.done() and not j.future.cancelled() for j in [first, *queued])
        assert sizes(engine) == [[10], [10, 10, 10]]

    asyncio.run(main())


def test_batch_metrics_are_recorded():
    async def scenario(batcher, engine):
        await behind_a_running_batch(batcher, engine)
        jobs = [submit(batcher, f, seed=i) for i, f in enumerate([50, 100])]
        engine.release()
        await asyncio.gather(*(j.future for j in jobs))
        value = batcher.metrics.registry.get_sample_value
        assert value("speechflow_batch_size_count", {"task": "enhance"}) == 2
        assert value("speechflow_batch_size_sum", {"task": "enhance"}) == 3
        assert value("speechflow_batch_frames_sum", {"task": "enhance"}) == 10 + 200
        assert value("speechflow_padding_ratio_sum", {"task": "enhance"}) == pytest.approx(0.25)
        assert value("speechflow_queue_wait_seconds_count", {"task": "enhance"}) == 3
        assert value("speechflow_inference_seconds_count", {"stage": "sampler"}) == 2
        assert value("speechflow_queue_depth", {"task": "enhance"}) == 0

    run(scenario)
