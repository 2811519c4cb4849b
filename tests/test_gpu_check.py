"""The prepared GPU check must not rot between the sessions that have a GPU: `make test` runs it on the CPU
(--dry-run); these tests check, quickly and without a server, the parts that time the served path: live-batch steps
of padded rows of mixed lengths for every served task, the host synchronisations inside a step (0, and a read-back
slipped into the step is counted), and the report's shape."""

import json

import pytest
import torch

from model.defaults import sampling
from model.flow import FlowMatching
from scripts.gpu_check import PARTS, debug_models, host_syncs, live_batch, main, training_step
from service.engine import SERVED_TASKS

SHORT = (0.5, 1.0)  # seconds: mixed row lengths, small enough for a test


@pytest.fixture(scope="module")
def models():
    return debug_models(torch.device("cpu"), torch.float32)


def test_a_training_step_reports_time_flops_and_mfu():
    row = training_step("debug", torch.device("cpu"), batch=2, seconds=1.0, repeats=1)
    assert row["seconds_per_step"] > 0 and row["achieved_tflops"] > 0 and 0 < row["mfu"] < 1.5
    assert row["peak_dtype"] in ("bf16", "fp32")


def test_live_batch_steps_padded_rows_of_every_served_task(models):
    assert set(models) == set(SERVED_TASKS) and models["tts"].config.network.n_phones > 0
    part = live_batch(models, [1, 2], repeats=1, budget_s=60, seconds=SHORT)
    assert part["row_seconds"] == list(SHORT) and part["server_limits"]["max_batch_frames"] > 0
    for task, entry in part["tasks"].items():
        s = sampling(task)
        assert entry["sampling"]["steps"] == s.steps and entry["sampling"]["guidance"] == s.guidance
        one, two = entry["by_rows"]
        assert (one["rows"], two["rows"]) == (1, 2)
        assert one["padded_frames"] == one["real_frames"] and one["padding"] == 0
        assert two["padded_frames"] > two["real_frames"] > one["real_frames"] >= 50  # mixed lengths: padding
        for row in (one, two):
            assert row["steps"] == s.steps  # every row from t = 0 to 1 on the task's own grid
            assert row["ms_per_step"] > 0 and row["first_step_ms"] > 0 and row["path_ms"] >= row["ms_per_step"]
            assert row["real_frames_per_s"] == pytest.approx(row["real_frames"] / row["ms_per_step"] * 1000,
                                                             rel=0.01)
            assert row["audio_s_per_s"] > 0 and row["peak_memory_gb"] is None  # no CUDA: no peak memory


def test_a_live_batch_past_its_budget_skips_the_larger_batches(models):
    part = live_batch({"separate": models["separate"]}, [1, 2], repeats=1, budget_s=0, seconds=SHORT)
    assert part["tasks"]["separate"]["by_rows"] == [{"rows": 1, "skipped": "time budget"},
                                                    {"rows": 2, "skipped": "time budget"}]


def test_a_live_batch_step_synchronises_nothing(models):
    part = host_syncs(models, rows=2, seconds=SHORT)
    assert part["total"] == 0
    for task, entry in part["tasks"].items():
        assert entry["method"] == "dispatch_guard" and entry["syncs"] == 0 and entry["events"] == []
        # the second row joins one step late, so the path takes one step more than a row's
        assert entry["per_step"] == [0] * (sampling(task).steps + 1)


def test_the_sync_count_sees_a_read_back_inside_a_step(models, monkeypatch):
    step = FlowMatching.step

    def reads_back(self, net, x, *args, **kwargs):
        float(x.abs().max())  # what a data-dependent decision in the solver would do
        return step(self, net, x, *args, **kwargs)

    monkeypatch.setattr(FlowMatching, "step", reads_back)
    part = host_syncs({"enhance": models["enhance"]}, rows=2, seconds=SHORT)
    entry = part["tasks"]["enhance"]
    assert part["total"] == entry["syncs"] == len(entry["per_step"]) and set(entry["per_step"]) == {1}
    assert any("_local_scalar_dense" in e for e in entry["events"])


def test_the_dry_run_report_has_every_part_it_ran(tmp_path):
    out = tmp_path / "gpu-check.json"
    assert main(["--dry-run", "--parts", "live_batch,host_syncs", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"device", "dry_run", "dtype", "torch", "seconds", "live_batch", "host_syncs"} == set(report)
    assert report["dry_run"] is True and set(report["seconds"]) == {"live_batch", "host_syncs"}
    for task in SERVED_TASKS:
        rows = report["live_batch"]["tasks"][task]["by_rows"]
        assert [r["rows"] for r in rows] == [1, 2, 4] and all(r["ms_per_step"] > 0 for r in rows)
        assert rows[-1]["padded_frames"] > rows[-1]["real_frames"]
        assert report["host_syncs"]["tasks"][task]["syncs"] == 0
    assert report["host_syncs"]["total"] == 0


def test_unknown_parts_are_refused():
    assert "service" in PARTS
    with pytest.raises(SystemExit):
        main(["--dry-run", "--parts", "sampler"])


def test_the_service_bench_knows_every_task_and_student_it_can_meet():
    """Each served task and each task's student ("<task>-fast") has its bench load, so a bundle with any of them
    is benched rather than failing the service part."""
    from model.bundle import STUDENT_TASKS
    from scripts.gpu_check import BENCH_TASK

    assert set(SERVED_TASKS) | {f"{task}-fast" for task in STUDENT_TASKS} <= set(BENCH_TASK)
    assert all(BENCH_TASK[f"{task}-fast"]["quality"] == "fast" for task in STUDENT_TASKS)
