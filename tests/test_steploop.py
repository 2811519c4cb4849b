"""The step loop with a fake engine: streaming order, cost refusal, deadlines, drain and a dead loop."""

import asyncio

import numpy as np
import pytest

from service.app import create_app
from service.engine import SamplingKey, TaskParams, TtsInput
from service.errors import DeadlineExceeded, RequestTooCostly, ShuttingDown
from service.settings import Settings
from service.steploop import LoopLimits, StepLoop
from service.testing import FakeEngine, serving, until

TTS = TaskParams(steps=4, solver="euler", guidance=2.0, seed=0, reconstruction="vocoder")
ENH = TaskParams(steps=4, solver="euler", guidance=2.0, seed=0)


def looped(scenario, engine: FakeEngine | None = None, **limits):
    async def main():
        fake = engine or FakeEngine(tasks=("enhance", "tts"))
        loop = StepLoop(fake, LoopLimits(**{"max_wait_s": 0.0, **limits}))
        loop.start()
        try:
            await scenario(loop, fake)
        finally:
            fake.release()
            await loop.drain()

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
        assert [len(c) for c in chunks[:3]] == [int(16000 * 0.05 * n) for n in (4, 12, 15)]
        assert result.rows == 3 and result.first_chunk_s is not None and result.first_chunk_s >= 0

    looped(scenario, max_batch_size=1)  # one row at a time: the chunks finish one after another


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
            assert (await stuck).status_code == 500  # answered, not left hanging
            assert runtime.metrics.registry.get_sample_value("speechflow_scheduler_up") == 0

    asyncio.run(main())
    assert isinstance(fatal[0], RuntimeError)


def wav_bytes() -> bytes:
    from model.audio import encode_audio

    return encode_audio(np.zeros(16000, np.float32), 16000, "wav")
