"""Few-step students: a task model trained at its own Euler grid only (`training.trainers.finetune.make_student`),
shipped beside its teacher in the bundle (``<task>/student``) and chosen per request by ``quality``.

The student here is the shipped enhancement teacher made a one-step student with its output layer perturbed, so
that the student and the teacher are different networks: an answer made by the wrong one, or by the right one on
the wrong settings, differs far beyond float rounding.
"""

import io
import shutil
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from model.bundle import write_bundle
from model.config import FlowConfig, ModelConfig, preset
from model.defaults import TASK_SAMPLING, Sampling
from model.errors import CheckpointError, ConfigError, SpeechFlowError
from model.examples import noisy_example
from model.flow import FlowMatching
from model.modeling import SpeechFlowModel
from model.pipeline import SpeechFlowPipeline
from service.app import create_app
from service.settings import Settings
from tests.conftest import DEMO_BUNDLE
from tests.test_service_sampling import ROUNDING, RecordingEngine, audio_of, held_behind_the_first
from tests.test_service_tts import run
from training.trainers.finetune import make_student

ONE_STEP = Sampling(steps=1, guidance=1.0, solver="euler", sway=0.0, ensemble=1, student=True)


def test_a_student_trains_at_its_grid_only_and_records_its_defaults(debug_model):
    for steps, times in ((1, {0.0}), (2, {0.0, 0.5})):
        model = SpeechFlowModel(replace(debug_model.config, flow=FlowConfig()))
        make_student(model, steps)
        assert model.config.flow.p_uncond == 0.0  # never unconditional: guidance is folded in
        t, x0 = FlowMatching(model.config.flow).draw(torch.zeros(256, 3, 2), torch.Generator().manual_seed(0))
        assert set(t.tolist()) == times and not x0.any()  # deterministic: it starts from zeros
        assert model.config.sampling == {"steps": steps, "guidance": 1.0, "solver": "euler", "sway": 0.0,
                                         "guidance_until": 1.0, "ensemble": 1}
    with pytest.raises(ConfigError, match="at least one step"):
        make_student(model, 0)
    with pytest.raises(ConfigError, match=r"train_times must lie in \[0, 1\)"):
        FlowConfig(train_times=(1.0,))


@pytest.fixture(scope="module")
def student_bundle(tmp_path_factory):
    """The shipped enhancement teacher and a one-step student of it (perturbed), the bundle choosing 'fast'."""
    if not (DEMO_BUNDLE / "bundle.json").exists():
        pytest.skip("needs the shipped bundle checkpoints/demo")
    root = tmp_path_factory.mktemp("students")
    student = SpeechFlowModel.from_pretrained(DEMO_BUNDLE / "enhance")
    make_student(student, 1)
    with torch.no_grad():  # a different network from its teacher, still close to it
        weight = student.net.out_proj.weight
        weight += 0.02 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(5))
    student.save_pretrained(root / "student")
    shutil.copytree(DEMO_BUNDLE / "vocoder", root / "bundle" / "vocoder")
    models = {"enhance": DEMO_BUNDLE / "enhance", "enhance-student": root / "student",
              "separate": DEMO_BUNDLE / "separate"}
    return write_bundle(root / "bundle", models, info={"quality": {"enhance": "fast"}})


@pytest.fixture(scope="module")
def pipes(student_bundle):
    """(the bundle's pipeline, a pipeline whose only enhancement model is the student, run as an ordinary model)."""
    pipe = SpeechFlowPipeline.from_pretrained(student_bundle, device="cpu")
    alone = SpeechFlowPipeline({"enhance": pipe.students["enhance"]}, vocoder=None)
    return pipe, alone


def test_fast_runs_the_student_at_its_own_defaults_and_full_the_teacher(pipes):
    pipe, student_only = pipes
    noisy = noisy_example(snr_db=5.0)[0][:24000]
    assert pipe.task_sampling("enhance", "fast") == ONE_STEP
    assert pipe.task_sampling("enhance", "full") == TASK_SAMPLING["enhance"]
    assert pipe.default_quality("enhance") == "fast"  # bundle.json's choice
    fast, _ = pipe.enhance(noisy, 16000, quality="fast", seed=3)
    np.testing.assert_array_equal(fast, pipe.enhance(noisy, 16000, quality="fast", seed=4)[0])  # no noise
    default, _ = pipe.enhance(noisy, 16000, seed=3)
    by_hand, _ = student_only.enhance(noisy, 16000, steps=1, guidance=1.0, solver="euler", sway=0.0, ensemble=1,
                                      seed=3)
    full, _ = pipe.enhance(noisy, 16000, quality="full", seed=3)
    np.testing.assert_array_equal(fast, default)
    np.testing.assert_allclose(fast, by_hand, atol=1e-6)
    assert np.abs(fast - full).max() > 1e-2  # another network, another number of passes
    with pytest.raises(ConfigError, match="no few-step student for 'separate'"):
        pipe.task_sampling("separate", "fast")
    with pytest.raises(ConfigError, match="quality must be one of"):
        pipe.task_sampling("enhance", "best")


@pytest.fixture(scope="module")
def upload() -> bytes:
    noisy, _ = noisy_example(snr_db=5.0)
    buffer = io.BytesIO()
    sf.write(buffer, noisy[:16000], 16000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def test_student_requests_share_their_own_live_batch_and_answer_as_alone(pipes, upload):
    pipe, _ = pipes
    engine = RecordingEngine(pipe, None)
    forms = [{"quality": "fast", "seed": "1"}, {"quality": "fast", "seed": "2"},
             {"seed": "3"},  # the bundle's default: the student too
             {"quality": "full", "seed": "1", "ensemble": "1", "steps": "2"}]

    async def post(client, form):
        return await client.post("/v1/enhance", files={"file": ("noisy.wav", upload, "audio/wav")}, data=form)

    async def test(client, app):
        together = await held_behind_the_first(client, app, engine, post, *forms)
        steps = list(engine.steps)
        alone = [await post(client, form) for form in forms]
        refused = [await post(client, {"quality": "best"}),
                   await client.post("/v1/separate", files={"file": ("mix.wav", upload, "audio/wav")},
                                     data={"quality": "fast"})]  # the bundle's separation has no student
        return together, steps, alone, refused

    together, steps, alone, refused = run(create_app(Settings(max_wait_ms=0), engine), test)
    # student rows step in live batches of the student's network, never beside the teacher's rows; the first
    # request's single step ends its batch, and the two student requests queued behind it step together
    students = {s.batch for s in steps if s.key.student}
    teachers = {s.batch for s in steps if not s.key.student}
    assert students and teachers and not students & teachers
    assert all(p.sampling == ONE_STEP for s in steps if s.key.student for p in s.rows)
    assert all(not p.sampling.student for s in steps if not s.key.student for p in s.rows)
    assert any(len(s.rows) == 2 for s in steps if s.key.student)
    for shared, single in zip(together, alone, strict=True):
        np.testing.assert_allclose(audio_of(shared), audio_of(single), atol=ROUNDING, rtol=0)
    assert np.abs(audio_of(together[0]) - audio_of(together[3])).max() > 100 * ROUNDING
    assert [r.status_code for r in refused] == [422, 422]
    assert [r.json()["error"]["param"] for r in refused] == ["quality", "quality"]
    assert "no few-step student for 'separate'" in refused[1].json()["error"]["message"]
    direct, _ = pipe.enhance(sf.read(io.BytesIO(upload), dtype="float32")[0], 16000, quality="fast", seed=1)
    np.testing.assert_allclose(audio_of(together[0])[:, 0], direct, atol=ROUNDING, rtol=0)


def test_a_student_takes_no_settings_it_was_not_trained_for(pipes, upload):
    pipe, _ = pipes
    noisy = noisy_example(snr_db=5.0)[0][:8000]
    for setting in ({"steps": 4}, {"guidance": 2.0}, {"ensemble": 4}, {"solver": "midpoint"}):
        with pytest.raises(ConfigError, match=f"{next(iter(setting))} cannot be set with quality 'fast'"):
            pipe.enhance(noisy, 16000, quality="fast", **setting)
        assert pipe.task_sampling("enhance", **setting).student is False  # no quality: the teacher
    assert pipe.enhance(noisy, 16000, quality="fast", steps=1, ensemble=1)[0].shape == noisy.shape  # its own: fine
    engine = RecordingEngine(pipe, None)

    async def test(client, app):
        post = [await client.post("/v1/enhance", files={"file": ("noisy.wav", upload, "audio/wav")}, data=form)
                for form in ({"ensemble": "4"}, {"quality": "fast", "guidance": "2"}, {"quality": "full"}, {})]
        return post

    # the server's default_steps / default_ensemble are the teachers': a student request is not refused for them
    many, guided, full, default = run(create_app(Settings(max_wait_ms=0, default_steps=64, max_steps=8,
                                                          default_ensemble=2), engine), test)
    # settings of the iterative sampler without a quality ask for the teacher, though the bundle's default is fast
    assert many.status_code == 200 and (many.headers["x-quality"], many.headers["x-ensemble"]) == ("full", "4")
    assert guided.status_code == 422 and guided.json()["error"]["param"] == "guidance"
    assert full.status_code == 200 and full.headers["x-quality"] == "full"
    assert (full.headers["x-steps"], full.headers["x-ensemble"]) == ("8", "2")  # default 64 capped at the max 8
    assert default.status_code == 200 and default.headers["x-quality"] == "fast"
    assert (default.headers["x-steps"], default.headers["x-ensemble"]) == ("1", "1")


def test_a_student_alone_loads_as_its_tasks_model_and_only_fast(student_bundle):
    alone = SpeechFlowPipeline.from_pretrained(student_bundle / "enhance" / "student", device="cpu")
    assert alone.default_quality("enhance") == "fast"
    assert alone.task_sampling("enhance") == ONE_STEP
    with pytest.raises(ConfigError, match="student without its teacher"):
        alone.task_sampling("enhance", "full")


def test_a_bundle_is_refused_when_its_student_is_none_or_its_quality_cannot_be_served(student_bundle, tmp_path):
    teacher_as_student = write_bundle(tmp_path / "a", {"enhance": DEMO_BUNDLE / "enhance",
                                                       "enhance-student": DEMO_BUNDLE / "enhance"})
    with pytest.raises(CheckpointError, match="is not a few-step student of the 'enhance' model"):
        SpeechFlowPipeline.from_pretrained(teacher_as_student, device="cpu")
    no_student = write_bundle(tmp_path / "b", {"enhance": DEMO_BUNDLE / "enhance"},
                              info={"quality": {"enhance": "fast"}})
    with pytest.raises(CheckpointError, match="default quality of 'enhance', but the bundle has no student"):
        SpeechFlowPipeline.from_pretrained(no_student, device="cpu")


class Echo(torch.nn.Module):
    """A "network" that outputs a fixed estimate, whatever it is given."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, t, cond, mask):
        return self.out


def test_the_mask_loss_scores_the_gains_the_reconstruction_applies(debug_model):
    from model.features import MelSpectrogram
    from training.tasks.enhance_separate import EnhanceObjective, mask_loss

    model = SpeechFlowModel(replace(debug_model.config, task="enhance", flow=FlowConfig()))
    with pytest.raises(ConfigError, match="'mask' for a one-step enhancement or separation student"):
        make_student(model, 2, "mask")
    make_student(model, 1, "mask")
    objective = EnhanceObjective(model.config)
    assert objective.mask_loss and model.config.extra["student"]["loss"] == "mask"
    mel = MelSpectrogram(model.config.mel)
    wave = torch.from_numpy(noisy_example(snr_db=5.0)[0][:16000])[None]
    clean, noisy = mel(wave), mel(wave + 0.05 * torch.randn_like(wave, generator=None))
    mask = torch.ones(clean.shape[:2], dtype=torch.bool)
    loss = mask_loss(mel, model.net, clean, noisy, mask)
    loss.backward()
    assert torch.isfinite(loss) and model.net.out_proj.weight.grad.abs().sum() > 0

    # the clean speech itself scores 0; the noisy input (gain 1 everywhere) scores what its gains miss
    assert mask_loss(mel, Echo(clean), clean, noisy, mask).item() == pytest.approx(0.0, abs=1e-9)
    assert mask_loss(mel, Echo(noisy), clean, noisy, mask).item() > 1e-3


def test_the_separation_mask_loss_scores_the_shares_in_either_speaker_order():
    from model.features import MelSpectrogram
    from training.tasks.enhance_separate import SeparateObjective, separation_mask_loss

    model = SpeechFlowModel(ModelConfig(task="separate", network=preset("debug", x_dim=160)))
    make_student(model, 1, "mask")
    assert SeparateObjective(model.config).mask_loss
    mel = MelSpectrogram(model.config.mel)
    one = torch.from_numpy(noisy_example(snr_db=5.0)[0][:16000])[None]
    other = torch.roll(one, 4000, dims=-1) * 0.7
    s1, s2, mix = mel(one), mel(other), mel(one + other)
    mask = torch.ones(mix.shape[:2], dtype=torch.bool)
    both, swapped = torch.cat([s1, s2], dim=-1), torch.cat([s2, s1], dim=-1)
    # the true speakers score 0 in either order; both outputs the mixture (shares 1/2 everywhere) do not
    assert separation_mask_loss(mel, Echo(both), both, mix, mask).item() == pytest.approx(0.0, abs=1e-9)
    assert separation_mask_loss(mel, Echo(swapped), both, mix, mask).item() == pytest.approx(0.0, abs=1e-9)
    assert separation_mask_loss(mel, Echo(torch.cat([mix, mix], dim=-1)), both, mix, mask).item() > 1e-3
    loss = separation_mask_loss(mel, model.net, both, mix, mask)
    loss.backward()
    assert torch.isfinite(loss) and model.net.out_proj.weight.grad.abs().sum() > 0


def test_a_guided_tts_student_learns_the_teachers_guided_velocity_and_serves_in_half_the_passes(tmp_path):
    from model.bundle import write_bundle, write_voices
    from model.generation import LiveBatch
    from tests.conftest import TTS_TRAIN, write_aligned_corpus, write_tts_bundle
    from training.tasks.tts import TTSObjective, guided_loss
    from training.trainers.finetune import finetune, student_teacher
    from training.trainers.trainer import TrainConfig

    manifest = write_aligned_corpus(tmp_path, ["The little boat drifted slowly.", "She kept every letter."])
    bundle = write_tts_bundle(tmp_path, manifest, "The little boat drifted slowly.", steps=30)
    model = SpeechFlowModel.from_pretrained(bundle / "tts")
    with pytest.raises(ConfigError, match="'trajectory' for a TTS student"):
        make_student(SpeechFlowModel.from_pretrained(DEMO_BUNDLE / "enhance"), 4, "guided")
    make_student(model, 4, "guided")
    # the teacher's swayed grid, from noise: the same sampler without the unconditional pass
    teacher = TASK_SAMPLING["tts"]
    assert model.config.sampling == {"steps": 4, "guidance": 1.0, "solver": "euler", "sway": teacher.sway,
                                     "guidance_until": 1.0, "ensemble": 1}
    assert model.config.flow.prior_scale == 1.0 and len(model.config.flow.train_times) == 4
    assert model.config.extra["student"]["guidance"] == teacher.guidance

    # the loss is 0 exactly when the student's velocity is the teacher's guided one
    frozen = SpeechFlowModel.from_pretrained(bundle / "tts").net.eval()
    x1 = torch.randn(2, 30, 80, generator=torch.Generator().manual_seed(0))
    phones = torch.randint(1, 20, (2, 30))
    mask, masked = torch.ones(2, 30, dtype=torch.bool), torch.zeros(2, 30, dtype=torch.bool)
    masked[:, 10:] = True
    cond = x1 * (~masked)[..., None]

    class Guided(torch.nn.Module):  # the teacher with guidance applied: what the student should become
        def forward(self, x, t, c, m, phones):
            unconditional = frozen(x, t, torch.zeros_like(c), m, phones=torch.zeros_like(phones))
            return unconditional + teacher.guidance * (frozen(x, t, c, m, phones=phones) - unconditional)

    flow = FlowMatching(model.config.flow)
    exact = guided_loss(flow, Guided(), frozen, teacher.guidance, x1, cond, phones, mask, masked,
                        torch.Generator().manual_seed(1))
    assert exact.item() == pytest.approx(0.0, abs=1e-8)
    assert guided_loss(flow, frozen, frozen, teacher.guidance, x1, cond, phones, mask, masked,
                       torch.Generator().manual_seed(1)).item() > 1e-6  # unguided is not guided
    assert TTSObjective(model.config, student_teacher(model)).teacher is not None

    # trained (briefly) by finetune, it loads as the bundle's TTS student; quality fast makes one pass a step
    trained = finetune("tts", bundle / "tts", manifest, tmp_path / "student", TrainConfig(steps=3, **TTS_TRAIN),
                       student_steps=4, student_loss="guided")
    assert SpeechFlowModel.from_pretrained(trained).config.extra["student"]["loss"] == "guided"
    wav, _ = sf.read(manifest.parent / "u0.wav", dtype="float32")
    both = write_bundle(tmp_path / "both", {"tts": bundle / "tts", "tts-student": trained,
                                            "duration": bundle / "tts" / "duration"})
    write_voices(both, {"anna": (wav, "The little boat drifted slowly.")})
    pipe = SpeechFlowPipeline.from_pretrained(both, device="cpu")
    fast = pipe.task_sampling("tts", "fast")
    assert fast.student and fast.guidance == 1.0 and fast.steps == 4
    plan = pipe.plan_tts("She kept every letter.", sampling=fast, voice="anna", seed=0)
    batch = LiveBatch(pipe.model("tts", student=True), fast)
    batch.join(plan.rows)
    while batch.rows:
        batch.step()
    assert all(r.output is not None and torch.isfinite(r.output).all() for r in plan.rows)
    # through the service: quality picks the network, OpenAI's tts-1-hd the teacher
    from service.engine import PipelineEngine

    async def requests(client, app):
        form = {"text": "She kept every letter.", "voice": "anna", "seed": "3"}
        fast = await client.post("/v1/tts", data={**form, "quality": "fast"})
        full = await client.post("/v1/tts", data={**form, "quality": "full"})
        hd = await client.post("/v1/audio/speech", json={"model": "tts-1-hd", "input": "Hi there.", "voice": "anna",
                                                         "response_format": "wav"})
        return fast, full, hd

    fast, full, hd = run(create_app(Settings(), PipelineEngine(pipe)), requests)
    assert [r.status_code for r in (fast, full, hd)] == [200] * 3, [r.text for r in (fast, full, hd)]
    assert fast.headers["x-quality"] == "fast" and fast.headers["x-steps"] == "4", fast.text
    assert full.headers["x-quality"] == "full" and hd.headers["x-quality"] == "full", hd.text
    # (a debug model this barely trained amplifies float rounding, so the answers are compared by length and by
    # network, not sample by sample: the shipped bundle's equivalence tests do that)
    served, teacher_said = audio_of(fast)[:, 0], audio_of(full)[:, 0]
    offline, _ = pipe.tts("She kept every letter.", voice="anna", seed=3, quality="fast")
    assert len(served) == len(offline) == len(teacher_said) and not np.allclose(served, teacher_said, atol=1e-3)


def test_a_two_step_guided_student_is_regressed_on_two_guided_teacher_steps_in_one(tmp_path):
    """Half the teacher's steps: each student step's target is the displacement of the teacher's two guided Euler
    steps over it, divided by the step; the loss is 0 for a network that makes exactly that move."""
    from model.solvers import step_times
    from tests.conftest import write_aligned_corpus, write_tts_bundle
    from training.tasks.tts import TTSObjective, guided_loss

    manifest = write_aligned_corpus(tmp_path, ["The little boat drifted slowly.", "She kept every letter."])
    bundle = write_tts_bundle(tmp_path, manifest, "The little boat drifted slowly.", steps=30)
    teacher = TASK_SAMPLING["tts"]
    with pytest.raises(ConfigError, match="must divide its teacher's"):
        make_student(SpeechFlowModel.from_pretrained(bundle / "tts"), 3, "guided")
    model = SpeechFlowModel.from_pretrained(bundle / "tts")
    make_student(model, teacher.steps // 2, "guided")
    grid = step_times(teacher.steps, sway=teacher.sway)
    assert model.config.extra["student"]["teacher_steps"] == teacher.steps
    assert torch.allclose(torch.tensor([*model.config.flow.train_times, 1.0]), grid[::2])
    objective = TTSObjective(model.config)
    assert torch.allclose(objective.teacher_grid, grid)

    frozen = SpeechFlowModel.from_pretrained(bundle / "tts").net.eval()
    w = teacher.guidance

    def guided(x, t, c, m, phones):
        unconditional = frozen(x, t, torch.zeros_like(c), m, phones=torch.zeros_like(phones))
        return unconditional + w * (frozen(x, t, c, m, phones=phones) - unconditional)

    class TwoSteps(torch.nn.Module):  # the teacher's two guided steps from each sample's grid time, as a velocity
        def forward(self, x, t, c, m, phones):
            k = (t[:, None] - grid[None, :]).abs().argmin(1)
            t1, t2 = grid[k + 1], grid[k + 2]
            mid = x + (t1 - t)[:, None, None] * guided(x, t, c, m, phones)
            end = mid + (t2 - t1)[:, None, None] * guided(mid, t1, c, m, phones)
            return (end - x) / (t2 - t)[:, None, None]

    x1 = torch.randn(4, 30, 80, generator=torch.Generator().manual_seed(0))
    phones = torch.randint(1, 20, (4, 30))
    mask, masked = torch.ones(4, 30, dtype=torch.bool), torch.zeros(4, 30, dtype=torch.bool)
    masked[:, 10:] = True
    cond = x1 * (~masked)[..., None]
    flow = FlowMatching(model.config.flow)
    loss = guided_loss(flow, TwoSteps(), frozen, w, x1, cond, phones, mask, masked,
                       torch.Generator().manual_seed(1), objective.teacher_grid)
    assert loss.item() == pytest.approx(0.0, abs=1e-8)

    class OneStep(torch.nn.Module):  # the teacher's guided velocity at the start: the four-step student's target
        def forward(self, x, t, c, m, phones):
            return guided(x, t, c, m, phones)

    assert guided_loss(flow, OneStep(), frozen, w, x1, cond, phones, mask, masked,
                       torch.Generator().manual_seed(1), objective.teacher_grid).item() > 1e-6


def test_a_bundle_can_choose_the_student_per_class_of_machine(student_bundle, tmp_path):
    """bundle.json's {"cpu-fp32": "fast"}: the student by default on a CPU without bf16 units, the teacher on one
    with them and on a GPU; a request's quality still wins, and unknown classes are refused at load."""
    from model.quality import Qualities, machine_class
    from speechflow.commands.training import default_qualities

    assert machine_class(torch.device("cpu"), torch.float32) == "cpu-fp32"
    assert machine_class(torch.device("cpu"), torch.bfloat16) == "cpu-bf16"
    assert machine_class(torch.device("cuda"), torch.bfloat16) == "gpu"
    assert default_qualities(["tts:cpu-fp32", "enhance", "separate:gpu", "separate:cpu-bf16"]) == {
        "tts": {"cpu-fp32": "fast"}, "enhance": "fast", "separate": {"gpu": "fast", "cpu-bf16": "fast"}}
    assert default_qualities(["enhance:gpu", "enhance"]) == {"enhance": "fast"}
    with pytest.raises(SpeechFlowError, match="TASK:MACHINE"):
        default_qualities(["tts:avx2"])

    per_machine = write_bundle(tmp_path / "m", {"enhance": DEMO_BUNDLE / "enhance",
                                                "enhance-student": student_bundle / "enhance" / "student"},
                               info={"quality": {"enhance": {"cpu-fp32": "fast"}}})
    fp32 = SpeechFlowPipeline.from_pretrained(per_machine, device="cpu", dtype="fp32")
    assert fp32.default_quality("enhance") == "fast" and fp32.task_sampling("enhance") == ONE_STEP
    assert fp32.task_sampling("enhance", "full").steps == TASK_SAMPLING["enhance"].steps
    qualities = fp32.qualities
    for machine, expected in (("cpu-bf16", "full"), ("gpu", "full"), ("cpu-fp32", "fast")):
        assert Qualities(qualities.models, qualities.students, {"enhance": {"cpu-fp32": "fast"}},
                         machine).default("enhance") == expected
    with pytest.raises(CheckpointError, match="unknown machine classes"):
        Qualities(qualities.models, qualities.students, {"enhance": {"avx2": "fast"}})
    with pytest.raises(CheckpointError, match="no student"):
        Qualities(qualities.models, {}, {"enhance": {"gpu": "fast"}})


def test_a_trajectory_student_learns_on_the_teachers_own_sampling_path(tmp_path):
    """--student-loss trajectory: the student's states after its first step are where the teacher's guided sampler
    gets to from the noise (rows at t = 0 start at the noise itself), and a student warm-started from a student
    keeps learning from the first one's teacher."""
    from model.solvers import step_times
    from tests.conftest import write_aligned_corpus, write_tts_bundle
    from training.tasks.tts import GuidedTeacher, TTSObjective, guided_loss
    from training.trainers.finetune import init_from_pretrained

    manifest = write_aligned_corpus(tmp_path, ["The little boat drifted slowly.", "She kept every letter."])
    bundle = write_tts_bundle(tmp_path, manifest, "The little boat drifted slowly.", steps=30)
    model = init_from_pretrained(bundle / "tts", "tts")
    make_student(model, 2, "trajectory")
    assert model.config.student["teacher"] == str(bundle / "tts") and TTSObjective(model.config).on_teacher_path
    model.save_pretrained(tmp_path / "student")
    again = init_from_pretrained(tmp_path / "student", "tts")
    make_student(again, 2, "trajectory")
    assert again.config.student["teacher"] == str(bundle / "tts")  # not the student it started from

    teacher = TASK_SAMPLING["tts"]
    grid = step_times(teacher.steps, sway=teacher.sway)
    frozen = SpeechFlowModel.from_pretrained(bundle / "tts").net.eval()
    x1 = torch.randn(6, 30, 80, generator=torch.Generator().manual_seed(0))
    phones = torch.randint(1, 20, (6, 30))
    mask, masked = torch.ones(6, 30, dtype=torch.bool), torch.zeros(6, 30, dtype=torch.bool)
    masked[:, 10:] = True
    cond = x1 * (~masked)[..., None]
    guided = GuidedTeacher(frozen, teacher.guidance, cond, mask, phones, torch.float32)

    flow = FlowMatching(model.config.flow)
    t, x0 = flow.draw(x1, torch.Generator().manual_seed(1))
    assert set(t.tolist()) == {0.0, grid[2].item()}  # both of the student's times drawn
    with torch.no_grad():
        by_hand = x0.clone()
        for k in range(2):
            by_hand = guided.step(by_hand, grid[k].expand(6), (grid[k + 1] - grid[k]).expand(6))
    expected = torch.where((t > 0)[:, None, None], by_hand, x0)

    class Recorder(torch.nn.Module):  # the states the loss puts to the student
        def forward(self, x, t, c, m, phones):
            self.seen = x.detach().clone()
            return torch.zeros_like(x)

    seen = {}
    for on_path in (True, False):
        recorder = Recorder()
        guided_loss(flow, recorder, frozen, teacher.guidance, x1, cond, phones, mask, masked,
                    torch.Generator().manual_seed(1), grid, on_teacher_path=on_path)
        seen[on_path] = recorder.seen
    assert torch.allclose(seen[True], expected, atol=1e-5)
    data_path = flow.path(x0, x1, t)[0]
    assert torch.allclose(seen[False], data_path, atol=1e-5) and not torch.allclose(seen[True], data_path, atol=1e-2)
