"""Faults injected into the step loop: a failing preparation, post-processing, live-batch creation or step fails
only its request, the neighbours complete and the loop stays up; a batch with a culprit is bisected; a fault the
device cannot recover from, or too many failed steps in a row, stops the loop so the process is restarted; a drain
is bounded."""

import threading
from dataclasses import replace

import numpy as np
import pytest

from bench.fake_engine import FakeEngine
from bench.inprocess import until
from service.engine import SamplingKey, TtsInput
from service.errors import ShuttingDown
from service.faults import EngineFailed, unrecoverable
from tests.test_steploop import ENH, TTS, looped, with_steps

WORKER = pytest.mark.parametrize("worker", [False, True], ids=["engine-thread", "worker"])


def enhance(loop, seed: int, params=ENH):
    params = replace(params, seed=seed)
    return loop.submit(SamplingKey.of("enhance", params), np.full(1600, seed, np.float32), params, 30.0)


MIDPOINT = replace(ENH, sampling=replace(ENH.sampling, solver="midpoint"))  # another live batch


class Faulty(FakeEngine):
    """Fails where told: preparing a payload of value ``bad_prepare``, post-processing a row of seed ``bad_piece``
    (optionally held at ``gate`` first), making a live batch while ``bad_batch`` is set."""

    def __init__(self, **kwargs):
        super().__init__(tasks=("enhance", "tts"), **kwargs)
        self.bad_prepare: float | None = None
        self.bad_piece: int | None = None
        self.bad_batch = False
        self.gate = threading.Event()
        self.gate.set()
        self.posting = threading.Event()

    def prepare(self, task, payload, params):
        if isinstance(payload, np.ndarray) and self.bad_prepare is not None and payload[0] == self.bad_prepare:
            raise ValueError("this input cannot be prepared")
        return super().prepare(task, payload, params)

    def new_batch(self, key):
        if self.bad_batch:
            raise RuntimeError("no memory for a live batch")
        return super().new_batch(key)

    def pieces(self, finished):
        self.posting.set()
        assert self.gate.wait(30)
        if any(plan.rows[i].seed == self.bad_piece for plan, i in finished):
            raise RuntimeError("the vocoder failed on this row")
        return super().pieces(finished)


@WORKER
def test_post_processing_that_fails_while_the_requests_other_rows_step_fails_only_that_request(worker):
    async def scenario(loop, engine):
        engine.bad_piece = 7  # the first chunk of the TTS request below (seed 7) fails its post-processing
        engine.gate.clear()
        params = with_steps(TTS, 2)
        params = replace(params, seed=7)
        tts = loop.submit(SamplingKey.of("tts", params), TtsInput("One. Two two. Three.", voice="alice"), params,
                          30.0)
        neighbour = loop.submit(SamplingKey.of("tts", TTS), TtsInput("Hello there.", voice="alice"), TTS, 30.0)
        await until(engine.posting.is_set)  # the first chunk finished; its post-processing waits at the gate
        engine.gate.set()  # ... and fails, with the request's later chunks in the live batch (or waiting)
        with pytest.raises(RuntimeError, match="vocoder"):
            await tts.future
        assert (await neighbour.future).rows == 1
        await until(lambda: loop.scheduler.idle())
        assert loop.dead is None and loop.accepting
        again = loop.submit(SamplingKey.of("tts", TTS), TtsInput("Still serving.", voice="alice"), TTS, 30.0)
        assert (await again.future).rows == 1

    looped(scenario, Faulty(step_cost=(0.002, 0.0)), worker=worker, max_batch_size=2)


@WORKER
def test_a_preparation_that_fails_fails_only_its_request(worker):
    async def scenario(loop, engine):
        engine.bad_prepare = 3.0
        good, bad, other = enhance(loop, 1), enhance(loop, 3), enhance(loop, 5)
        with pytest.raises(ValueError, match="prepared"):
            await bad.future
        assert [(await r.future).rows for r in (good, other)] == [1, 1]
        assert loop.dead is None

    looped(scenario, Faulty(), worker=worker)


@WORKER
def test_a_live_batch_that_cannot_be_made_fails_its_rows_not_the_loop(worker):
    async def scenario(loop, engine):
        engine.bad_batch = True
        with pytest.raises(RuntimeError, match="live batch"):
            await enhance(loop, 1).future
        engine.bad_batch = False
        assert (await enhance(loop, 2).future).rows == 1 and loop.dead is None

    looped(scenario, Faulty(), worker=worker)


def test_a_poisoned_row_is_bisected_out_of_its_batch_and_its_neighbours_finish_in_batches():
    async def scenario(loop, engine):
        engine.hold()  # eight requests queue behind a held step (of another key) so they join one live batch
        first = enhance(loop, 100, MIDPOINT)
        await until(lambda: len(engine.steps) == 1)
        requests = [enhance(loop, seed) for seed in range(8)]
        engine.release()
        await first.future
        for seed, request in enumerate(requests):
            if seed == 5:
                with pytest.raises(RuntimeError, match="poisoned"):
                    await request.future
            else:
                assert (await request.future).rows == 1
        joined = [step.seeds for step in engine.steps if step.joined]
        # the full batch fails, then halves by request, each at the head of the queue: {0..3} runs through,
        # {4..7} fails, {4, 5} fails, {4} runs, {5} fails alone, {6, 7} runs: four failed steps, not eight retries
        assert sorted(joined[1]) == list(range(8))
        assert [sorted(seeds) for seeds in joined[2:]] == [[0, 1, 2, 3], [4, 5, 6, 7], [4, 5], [4], [5], [6, 7]]
        assert loop.dead is None and loop.accepting

    looped(scenario, FakeEngine(fail_seeds=[5]))


def test_an_error_the_device_cannot_recover_from_stops_the_loop_and_fails_every_request():
    class Broken(FakeEngine):
        def new_batch(self, key):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    fatal = []

    async def scenario(loop, engine):
        loop._on_fatal = fatal.append
        with pytest.raises(EngineFailed) as failed:
            await enhance(loop, 1).future
        assert failed.value.status == 503
        await until(lambda: bool(fatal))
        assert loop.dead is not None and not loop.accepting

    looped(scenario, Broken())
    assert isinstance(fatal[0], EngineFailed) and isinstance(fatal[0].__cause__, RuntimeError)


def test_steps_failing_in_a_row_count_up_to_the_limit_then_stop_the_loop():
    async def scenario(loop, engine):
        requests = [enhance(loop, 100 + i) for i in range(3)]
        for request in requests[:2]:  # each fails alone: one failed step each
            with pytest.raises(RuntimeError, match="poisoned"):
                await request.future
        with pytest.raises(EngineFailed, match="3 steps failed in a row"):
            await requests[2].future
        assert loop.dead is not None

    looped(scenario, FakeEngine(fail_seeds=[100, 101, 102]), max_step_failures=3, max_batch_size=1)


def test_unrecoverable_errors_are_told_from_recoverable_ones():
    assert unrecoverable(RuntimeError("CUDA error: device-side assert triggered"))
    assert not unrecoverable(type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory; illegal memory"))
    assert not unrecoverable(ValueError("bad input"))


def test_a_drain_that_outlasts_its_timeout_fails_what_is_left_with_503():
    async def scenario(loop, engine):
        engine.hold()
        stuck = enhance(loop, 1)
        await until(lambda: len(engine.steps) == 1)
        await loop.drain(timeout_s=0.05)
        with pytest.raises(ShuttingDown):
            await stuck.future
        engine.release()

    looped(scenario)


def test_a_streamed_requests_chunks_run_one_after_another_where_rows_cost_in_proportion():
    async def scenario(loop, engine):
        key = SamplingKey.of("tts", TTS)
        streamed = loop.submit(key, TtsInput("One. Two two. Three.", voice="alice"), TTS, 30.0, stream=True)
        assert await streamed.chunks.get() is not None
        await streamed.future
        n = TTS.sampling.steps  # the first chunk ran alone and was out after its own steps; then the next joined
        assert [s.seeds for s in engine.steps] == [[0]] * n + [[1]] * n + [[2]] * n

    looped(scenario, stream_in_order=True)


def test_requests_with_different_steps_and_guidance_share_one_live_batch():
    async def scenario(loop, engine):
        engine.hold()
        first = enhance(loop, 100, MIDPOINT)
        await until(lambda: len(engine.steps) == 1)
        two = replace(ENH, seed=1, sampling=replace(ENH.sampling, steps=2, guidance=1.0))
        six = replace(ENH, seed=2, sampling=replace(ENH.sampling, steps=6, guidance=3.0), reconstruction="vocoder")
        a = loop.submit(SamplingKey.of("enhance", two), np.ones(1600, np.float32), two, 30.0)
        b = loop.submit(SamplingKey.of("enhance", six), np.ones(1600, np.float32), six, 30.0)
        assert SamplingKey.of("enhance", two) == SamplingKey.of("enhance", six)
        engine.release()
        await first.future, await a.future, await b.future
        together = [s.seeds for s in engine.steps if {1, 2} <= set(s.seeds)]
        assert len(together) == 2  # a's two steps ran beside b's first two; b went on alone for four more
        assert sum(2 in s.seeds for s in engine.steps) == 6

    looped(scenario)


def test_a_tts_estimate_is_remade_from_the_prepared_plan_with_its_speed():
    async def scenario(loop, engine):
        loop.cost = 1e-4
        key = SamplingKey.of("tts", TTS)
        normal = loop.submit(key, TtsInput("Hello there, how are you?", voice="alice"), TTS, 30.0, estimate_s=0.01)
        slow = loop.submit(key, TtsInput("Hello there, how are you?", voice="alice", speed=0.25), TTS, 30.0,
                           estimate_s=0.01)
        await until(lambda: normal.plan is not None and slow.plan is not None)
        assert slow.estimate_s == pytest.approx(4 * normal.estimate_s, rel=0.05)
        await normal.future, await slow.future

    looped(scenario)
