"""The prepared GPU check must not rot between the sessions that have a GPU: `make test` runs it on the CPU
(--dry-run); this test checks the report's shape on the parts that need no server, quickly."""

import torch

from scripts.gpu_check import sampler_throughput, training_step


def test_a_training_step_reports_time_flops_and_mfu():
    row = training_step("debug", torch.device("cpu"), batch=2, seconds=1.0, repeats=1)
    assert row["seconds_per_step"] > 0 and row["achieved_tflops"] > 0 and 0 < row["mfu"] < 1.5
    assert row["peak_dtype"] in ("bf16", "fp32")


def test_sampler_throughput_grows_a_row_per_batch_size():
    rows = sampler_throughput("debug", torch.device("cpu"), torch.float32, [1, 2], seconds=0.5)
    assert [r["batch"] for r in rows] == [1, 2] and all(r["audio_s_per_s"] > 0 for r in rows)
