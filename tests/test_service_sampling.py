"""Per-request sampling settings in shared live batches, over HTTP on the shipped bundle (checkpoints/demo).

The batch key is (task, solver): requests that differ in NFE (``steps``), guidance, ``reconstruction`` or
``ensemble`` step together in one live batch, each row on its own time grid with its own guidance, and each answer
is what the same request gets alone. A request of another solver runs in a live batch of its own. The engine here
records every step of every live batch it makes (which request each row belongs to) and can hold a step, so that
requests queue behind a running one and join it mid-way, as they do under load.
"""

import asyncio
import io
import threading
from dataclasses import dataclass, replace

import numpy as np
import pytest
import soundfile as sf

from bench.inprocess import until
from model.audio import encode_audio
from model.defaults import TASK_SAMPLING
from model.examples import noisy_example
from service.app import create_app
from service.engine import SamplingKey, TaskParams
from service.settings import Settings
from tests.conftest import TTS_ROUNDING, WarmEngine, assert_same_speech
from tests.test_service_tts import run

# An enhancement in a shared live batch and alone differ by float rounding only: the network masks the padding, but a
# padded batch's matmuls and reductions run over other shapes (about 1e-6 here: the mask reconstruction scales the
# input's own STFT, it does not amplify), and a 16-bit answer may move a sample by one step (3e-5) where its float lies
# near a rounding boundary. 1e-4 is three 16-bit steps; requests that differ in a sampling setting differ by far more
# (asserted below), so the bound tells "its own path" from "another path". TTS: `tests.conftest.TTS_ROUNDING`.
ROUNDING = 1e-4


@dataclass(frozen=True)
class Step:
    """One step of one live batch: its key, which batch it was, and the request (TaskParams) of each of its rows."""

    key: SamplingKey
    batch: int
    rows: tuple[TaskParams, ...]


class RecordingEngine(WarmEngine):
    """The shipped bundle's engine, recording each step of each live batch it makes; ``hold`` makes the next step
    wait at its start until ``release`` (the engine thread blocks there, as it does in a long step)."""

    def __init__(self, pipeline, cost) -> None:
        super().__init__(pipeline, cost)
        self.steps: list[Step] = []
        self.owners: dict[int, TaskParams] = {}  # id(row) -> the settings of the request it belongs to
        self.batches = 0
        self._gate = threading.Event()
        self._gate.set()

    def prepare(self, task, payload, params):
        plan = super().prepare(task, payload, params)
        self.owners.update((id(row), params) for row in plan.rows)
        return plan

    def new_batch(self, key):
        self.batches += 1
        return RecordedBatch(super().new_batch(key), key, self.batches, self)

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def wait_for_gate(self) -> None:
        assert self._gate.wait(30), "a held step was never released"


class RecordedBatch:
    """A live batch that tells its engine, at each step, the settings of every row it steps."""

    def __init__(self, live, key: SamplingKey, number: int, engine: RecordingEngine) -> None:
        self.live, self.key, self.number, self.engine = live, key, number, engine

    def join(self, rows):
        self.live.join(rows)

    def leave(self, rows):
        self.live.leave(rows)

    def __len__(self) -> int:
        return len(self.live)

    def step(self):
        self.engine.steps.append(Step(self.key, self.number, tuple(self.engine.owners[id(r)] for r in self.live.rows)))
        self.engine.wait_for_gate()
        return self.live.step()


@pytest.fixture
def engine(demo_pipeline) -> RecordingEngine:
    return RecordingEngine(*demo_pipeline)


async def held_behind_the_first(client, app, engine: RecordingEngine, post, first, *others) -> list:
    """Send ``first``, hold its first step, send ``others`` while it is held (they queue: admitted, not started),
    then release: they are prepared together and join the first request's live batch at its next step. Returns
    every response, in order."""
    engine.hold()
    head = asyncio.create_task(post(client, first))
    await until(lambda: len(engine.steps) == 1)
    rest = [asyncio.create_task(post(client, form)) for form in others]
    await until(lambda: app.state.runtime.loop.depth() == len(others))
    engine.release()
    return await asyncio.gather(head, *rest)


def audio_of(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    audio, _ = sf.read(io.BytesIO(response.content), dtype="float32", always_2d=True)
    return audio


# --- enhancement ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def noisy_upload() -> bytes:
    noisy, _ = noisy_example(snr_db=5.0)
    return encode_audio(noisy[:16000], 16000, "wav")  # 1 s: one window of 101 frames


# Every request has the same input and seed, so what tells their answers apart is their settings. The first runs
# the task's defaults on the Euler solver with one draw; the others change one setting each (or steps and guidance).
FIRST = {"solver": "euler", "steps": "4", "ensemble": "1", "seed": "7"}
SAME_SOLVER = [
    {**FIRST, "steps": "2", "guidance": "1.0"},  # half the NFE, unguided: no unconditional pass
    {**FIRST, "steps": "6", "guidance": "3.0"},  # more NFE on a finer grid, stronger guidance
    {**FIRST, "reconstruction": "vocoder"},  # the first's rows, made audio by the vocoder instead of a mask
    {**FIRST, "ensemble": "2"},  # two draws (two rows) whose masks are averaged
]
OTHER_SOLVER = {**FIRST, "solver": "midpoint"}


def enhance_params(form: dict[str, str]) -> TaskParams:
    """The settings a form asks for: the task's defaults with the form's fields on top."""
    given = {"guidance": float(form["guidance"])} if "guidance" in form else {}
    sampling = replace(TASK_SAMPLING["enhance"], solver=form["solver"], steps=int(form["steps"]),
                       ensemble=int(form["ensemble"]), **given)
    return TaskParams(sampling, int(form["seed"]), form.get("reconstruction", "mask"))


def test_enhance_requests_of_other_steps_guidance_reconstruction_and_ensemble_share_one_live_batch(
        engine, noisy_upload):
    forms = [FIRST, *SAME_SOLVER, OTHER_SOLVER]

    async def post(client, form):
        return await client.post("/v1/enhance", files={"file": ("noisy.wav", noisy_upload, "audio/wav")}, data=form)

    async def test(client, app):
        together = await held_behind_the_first(client, app, engine, post, *forms)
        shared_steps = list(engine.steps)
        alone = [await post(client, form) for form in forms]  # one at a time: each in a live batch of its own
        return together, shared_steps, alone

    together, steps, alone = run(create_app(Settings(max_wait_ms=0), engine), test)
    params = [enhance_params(form) for form in forms]
    euler, midpoint = params[:-1], params[-1]
    # one live batch per solver: one step of the Euler batch ran a row of every Euler request (both of the
    # ensemble's), each on its own settings; the midpoint request stepped in a batch of its own
    batches = {s.key.solver: {t.batch for t in steps if t.key == s.key} for s in steps}
    assert set(batches) == {"euler", "midpoint"} and all(len(b) == 1 for b in batches.values())
    assert batches["euler"] != batches["midpoint"]
    euler_steps = [s.rows for s in steps if s.key.solver == "euler"]
    assert midpoint not in {p for rows in euler_steps for p in rows}
    assert all(set(s.rows) == {midpoint} for s in steps if s.key.solver == "midpoint")
    assert [*euler, euler[-1]] in [sorted(rows, key=euler.index) for rows in euler_steps], euler_steps
    rows = [1, 1, 1, 1, 2, 1]  # the ensemble's two draws are two rows
    for r, n in zip(together[1:-1], rows[1:-1], strict=True):  # those that joined the first shared its steps
        assert float(r.headers["x-batch-size"]) > n, r.headers
    assert [r.headers["x-batch-size"] for r in alone] == [f"{n:.1f}" for n in rows]
    # each answer is its request's alone, up to float rounding ...
    for shared, single in zip(together, alone, strict=True):
        np.testing.assert_allclose(audio_of(shared), audio_of(single), atol=ROUNDING, rtol=0)
    # ... and each request's own settings made it: same input, same seed, yet every two answers differ far beyond
    # that rounding (had the batch run every row on one row's settings, some would be equal)
    outputs = [audio_of(r) for r in together]
    for i in range(len(outputs)):
        for j in range(i):
            assert np.abs(outputs[i] - outputs[j]).max() > 100 * ROUNDING, (forms[i], forms[j])


# --- text-to-speech ------------------------------------------------------------------------------------------------
VOICE = "espeak-en-gb-x-gbclan-Paul"  # the shipped voice with the shortest prompt (3 s): the cheapest rows
SPEECH = {"text": "Good morning to you, and welcome home.", "voice": VOICE, "seed": "3"}


def test_tts_requests_of_other_steps_and_guidance_share_one_live_batch_and_sound_as_alone(engine):
    # the task's defaults (4 guided steps on the swayed grid) and 2 unguided steps; same text, voice and seed
    bodies = [SPEECH, {**SPEECH, "steps": "2", "guidance": "1.0"}]
    first, second = (TaskParams(replace(TASK_SAMPLING["tts"], **change), 3, "vocoder")
                     for change in ({}, {"steps": 2, "guidance": 1.0}))

    async def post(client, body):
        return await client.post("/v1/tts", data=body)

    async def test(client, app):
        together = await held_behind_the_first(client, app, engine, post, *bodies)
        shared_steps = list(engine.steps)
        alone = [await post(client, body) for body in bodies]
        return together, shared_steps, alone

    together, steps, alone = run(create_app(Settings(max_wait_ms=0), engine), test)
    # one live batch: the first's held step alone, its next two beside the second's two steps, its last alone
    assert [(s.key, s.batch) for s in steps] == [(SamplingKey("tts", "euler"), 1)] * 4
    assert [s.rows for s in steps] == [(first,), (first, second), (first, second), (first,)]
    assert [r.headers["x-batch-size"] for r in together] == ["1.5", "2.0"]
    assert [r.headers["x-batch-size"] for r in alone] == ["1.0", "1.0"]
    for shared, single in zip(together, alone, strict=True):
        assert_same_speech(audio_of(shared), audio_of(single))
    # the same noise on another path: the settings, not the seed, make the difference
    a, b = (audio_of(r)[:, 0] for r in together)
    assert len(a) == len(b)  # the same text in the same voice: the same durations
    assert np.abs(a - b).max() > 100 * TTS_ROUNDING * np.abs(b).max()
