"""The step loop with a fake engine: streaming order, cost refusal, deadlines, drain and a dead loop."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

from bench.fake_engine import FakeEngine
from bench.inprocess import serving, until
from model.defaults import Sampling
from service.admission import LoopLimits
from service.app import create_app
from service.engine import SamplingKey, TaskParams, TtsInput
from service.errors import DeadlineExceeded, QueueFull, RequestTooCostly, ShuttingDown
from service.settings import Settings
from service.steploop import StepLoop

TTS = TaskParams(Sampling(steps=4, solver="euler", guidance=2.0), seed=0, reconstruction="vocoder")
ENH = TaskParams(Sampling(steps=4, solver="euler", guidance=2.0), seed=0)


def with_steps(params: TaskParams, steps: int) -> TaskParams:
    return replace(params, sampling=replace(params.sampling, steps=steps))


def looped(scenario, engine: FakeEngine | None = None, worker: bool = False, **limits):
    async def main():
        fake = engine or FakeEngine(tasks=("enhance", "tts"))
        processing = ThreadPoolExecutor(1) if worker else None
        loop = StepLoop(fake, LoopLimits(**{"max_wait_s": 0.0, **limits}), worker=processing)
        loop.start()
        try:
            await scenario(loop, fake)
        finally:
            fake.release()
            await loop.drain()
            if processing is not None:
                processing.shutdown()

    asyncio.run(main())


def test_tts_chunks_stream_in_order_as_they_finish_and_join_to_the_whole():
    async def scenario(loop, engine):
        text = "One. Three three. Five five five."
        req = loop.submit(SamplingKey.of("tts", TTS), TtsInput(text, voice="alice"), TTS, 30.0, stream=True)
        chunks = []
        while (chunk := await req.chunks.get()) is not None:
            chunks.append(chunk)
        result = await req.future
        np.testing.assert_array_equal(np.concatenate(chunks), result.output)
        assert len(chunks) == 3  # one per sentence: the last carries the cross-fade's held-back tail
        assert [len(c) for c in chunks[:3]] == [int(16000 * 0.05 * n) for n in (4, 12, 15)]
        assert result.rows == 3 and result.first_chunk_s is not None and result.first_chunk_s >= 0

    looped(scenario, max_batch_size=1)  # one row at a time: the chunks finish one after another


class GatedPost(FakeEngine):
    """Post-processing waits at ``gate`` (set = open), so a test can hold it while it watches the steps."""

    def __init__(self, **kwargs):
        super().__init__(tasks=("enhance", "tts"), **kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.posting = threading.Event()

    def pieces(self, finished):
        self.posting.set()
        assert self.gate.wait(30)
        return super().pieces(finished)


def test_with_a_worker_post_processing_runs_beside_the_steps_and_drain_waits_for_it():
    async def scenario(loop, engine):
        slow = with_steps(TTS, 12)
        long = loop.submit(SamplingKey.of("tts", slow), TtsInput("Hello there.", voice="alice"), slow, 30.0)
        await until(lambda: len(engine.steps) >= 1)
        engine.gate.clear()
        one = with_steps(ENH, 1)
        short = loop.submit(SamplingKey.of("enhance", one), np.ones(1600, np.float32), one, 30.0)
        await until(engine.posting.is_set)  # its one step is done; its post-processing is held
        tts_steps = sum(s.task == "tts" for s in engine.steps)
        await until(lambda: sum(s.task == "tts" for s in engine.steps) == 12)  # the TTS steps on meanwhile
        assert tts_steps < 12 and not short.future.done() and not long.future.done()
        draining = asyncio.create_task(loop.drain())
        await asyncio.sleep(0.05)
        assert not draining.done()  # the drain waits for post-processing still running
        engine.gate.set()
        await draining
        np.testing.assert_array_equal((await short.future).output, 0.5 * np.ones(1600, np.float32))
        assert (await long.future).rows == 1

    looped(scenario, GatedPost(step_cost=(0.01, 0.0)), worker=True)


@pytest.mark.parametrize("worker", [False, True], ids=["engine-thread", "worker"])
def test_rows_that_finish_together_are_post_processed_in_one_call(worker):
    async def scenario(loop, engine):
        engine.hold()  # the three requests queue behind a held step, so they are prepared and join together
        first = loop.submit(SamplingKey.of("enhance", ENH), np.zeros(1600, np.float32), ENH, 30.0)
        await until(lambda: len(engine.steps) == 1)
        texts = ["One.", "Two two.", "Three three three."]
        reqs = [loop.submit(SamplingKey.of("tts", TTS), TtsInput(t, voice="alice"), TTS, 30.0) for t in texts]
        engine.release()
        results = [await r.future for r in reqs]
        await first.future
        assert 3 in engine.post_calls  # the three chunks finished in one step and were vocoded in one call
        assert [len(r.output) for r in results] == [int(16000 * 0.05 * len(t)) for t in texts]

    looped(scenario, worker=worker)


def test_a_request_over_the_per_request_bounds_is_refused_before_it_is_queued():
    async def scenario(loop, engine):
        with pytest.raises(RequestTooCostly, match="rows") as refused:
            loop.check_cost(rows=9, frames=10, sampling_evals=8, timeout_s=60, param="input")
        assert refused.value.status == 413 and refused.value.param == "input"
        with pytest.raises(RequestTooCostly, match="frames"):
            loop.check_cost(rows=1, frames=5001, sampling_evals=8, timeout_s=60, param="file")
        loop.cost = 1e-3  # seconds per frame-evaluation, as measured
        with pytest.raises(RequestTooCostly, match="about 80 s"):
            loop.check_cost(rows=1, frames=1000, sampling_evals=80, timeout_s=60, param="input")
        loop.check_cost(rows=1, frames=1000, sampling_evals=40, timeout_s=60, param="input")  # 40 s: fine
        assert engine.prepared == []

    looped(scenario, max_request_rows=8, max_request_frames=5000)


def test_work_that_could_not_finish_by_its_deadline_is_refused_up_front():
    async def scenario(loop, engine):
        engine.hold()
        enhance = SamplingKey.of("enhance", ENH)
        first = loop.submit(enhance, np.zeros(1600, np.float32), ENH, 10.0, estimate_s=6.0)
        with pytest.raises(QueueFull) as refused:  # 6 s admitted + 6 s more > its 10 s deadline
            loop.submit(enhance, np.zeros(1600, np.float32), ENH, 10.0, estimate_s=6.0)
        assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "2"
        second = loop.submit(enhance, np.zeros(1600, np.float32), ENH, 10.0, estimate_s=3.0)  # 9 s: in time
        assert loop.backlog_s() == pytest.approx(9.0)
        engine.release()
        await first.future, await second.future
        # the fake's steps are instant: requests cost less than estimated, so the admitted work is scaled down
        assert loop.backlog.work_ratio < 0.7 and loop.backlog_s() == 0.0
        loop.submit(enhance, np.zeros(1600, np.float32), ENH, 10.0, estimate_s=12.0)  # 12 x ratio < 10 s now

    looped(scenario)


def test_the_deadline_drops_rows_that_are_already_generating():
    async def scenario(loop, engine):
        engine.hold()
        req = loop.submit(SamplingKey.of("enhance", ENH), np.zeros(1600, np.float32), ENH, 0.2)
        await until(lambda: len(engine.steps) == 1)
        engine.release()
        with pytest.raises(DeadlineExceeded):
            await req.future
        await until(lambda: loop.scheduler.idle())
        assert len(engine.steps) < 4  # 4 Euler steps were asked for; the rest never ran

    engine = FakeEngine(step_cost=(0.1, 0.0))
    looped(scenario, engine)


def test_drain_answers_every_admitted_request_then_refuses():
    async def scenario(loop, engine):
        engine.hold()
        first = loop.submit(SamplingKey.of("enhance", ENH), np.zeros(1600, np.float32), ENH, 30.0)
        await until(lambda: len(engine.steps) == 1)
        rest = [loop.submit(SamplingKey.of("tts", TTS), TtsInput("Hi. There.", voice="alice"), TTS, 30.0)
                for _ in range(3)]
        draining = asyncio.create_task(loop.drain())
        await until(lambda: not loop.accepting)
        with pytest.raises(ShuttingDown):
            loop.submit(SamplingKey.of("enhance", ENH), np.zeros(160, np.float32), ENH, 30.0)
        engine.release()
        await draining
        results = [await r.future for r in (first, *rest)]
        assert [r.rows for r in results] == [1, 2, 2, 2]

    looped(scenario, max_batch_size=1)  # a row at a time: the drain has work queued behind the held step


def test_a_dead_step_loop_turns_readyz_to_503_and_calls_on_fatal():
    engine = FakeEngine()
    app = create_app(Settings(max_wait_ms=0), engine)
    runtime = app.state.runtime
    fatal = []
    runtime.on_fatal = fatal.append

    async def main():
        async with serving(app) as client:
            await runtime.wait_ready()
            assert (await client.get("/readyz")).status_code == 200
            engine.hold()
            stuck = asyncio.create_task(client.post("/v1/enhance", files={"file": ("a.wav", wav_bytes(),
                                                                                   "audio/wav")}))
            await until(lambda: len(engine.steps) == 1)

            def broken(*_):
                raise RuntimeError("a bug in the scheduler")

            runtime.loop.scheduler.finished = broken  # the loop's own bookkeeping fails after this step
            engine.release()
            await until(lambda: bool(fatal))
            r = await client.get("/readyz")
            assert r.status_code == 503 and "scheduler" in r.json()["error"]["message"]
            assert (await stuck).status_code == 503  # answered, not left hanging
            assert runtime.metrics.registry.get_sample_value("speechflow_scheduler_up") == 0

    asyncio.run(main())
    assert isinstance(fatal[0], RuntimeError)


def wav_bytes() -> bytes:
    from model.audio import encode_audio

    return encode_audio(np.zeros(16000, np.float32), 16000, "wav")


def test_side_work_runs_between_steps_admitted_like_a_request():
    ran = []

    async def scenario(loop, engine):
        engine.hold()
        first = loop.submit(SamplingKey.of("enhance", ENH), np.zeros(1600, np.float32), ENH, 30.0)
        await until(lambda: len(engine.steps) == 1)
        side = asyncio.create_task(loop.process(lambda x: ran.append(x) or x * 2, 21, timeout_s=30.0))
        await until(lambda: loop.depth() == 1)
        await asyncio.sleep(0.02)
        assert ran == []  # the step in flight holds the engine thread: the side job waits for its end
        engine.step_once()
        assert await side == 42 and ran == [21]
        engine.release()
        with pytest.raises(ZeroDivisionError):  # its own error, raised to its caller; the loop goes on
            await loop.process(lambda: 1 / 0, timeout_s=30.0)
        await first.future
        await loop.drain()
        with pytest.raises(ShuttingDown):
            await loop.process(lambda: None, timeout_s=30.0)

    looped(scenario)
