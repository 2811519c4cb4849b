"""speechflow profile: sampler timing with counted FLOPs and MFU, and one TTS request split into its stages."""

import json

from speechflow.cli import main
from tests.test_shipped_bundle import BUNDLE


def test_sampler_profile_counts_flops_and_reports_mfu(tmp_path, capsys):
    out = tmp_path / "rows.json"
    assert main(["profile", "--preset", "debug", "--seconds", "0.5", "--nfe", "2", "4", "--dtype", "fp32",
                 "--repeats", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["nfe"] for r in rows] == [2, 4] and {r["dtype"] for r in rows} == {"float32"}
    for r in rows:
        assert r["gflop_per_nfe"] > 0 and r["peak_gflops"] > 0 and 0 < r["mfu"] < 1.5
        assert abs(r["achieved_gflops"] - r["gflop_per_nfe"] * r["nfe"] / r["seconds"]) < 0.05 * r["achieved_gflops"]


def test_tts_profile_times_every_stage_of_one_request(tmp_path):
    out = tmp_path / "tts.json"
    assert main(["profile", "--tts", "One sentence. And another one.", "--bundle", str(BUNDLE), "--nfe", "2",
                 "--dtype", "fp32", "--repeats", "1", "--json", str(out)]) == 0
    [row] = json.loads(out.read_text())
    stages = row["stages_s"]
    assert {"text frontend", "durations", "prompt alignment", "features", "sampling", "vocoder"} <= set(stages)
    assert all(v > 0 for v in stages.values())
    assert sum(stages.values()) <= row["seconds"] and row["other_s"] >= 0
    assert row["steps"] == 2 and row["audio_s"] > 1 and row["rtf"] == round(row["seconds"] / row["audio_s"], 4)


def test_edit_profile_times_one_edit_of_a_built_in_voice(tmp_path):
    out = tmp_path / "edit.json"
    assert main(["profile", "--edit", "purple", "--voice", "espeak-en-029-Mike", "--bundle", str(BUNDLE), "--nfe",
                 "2", "--dtype", "fp32", "--repeats", "1", "--json", str(out)]) == 0
    [row] = json.loads(out.read_text())
    assert row["task"] == "edit" and row["text"].startswith("It's always purple when") and row["steps"] == 2
    assert {"prompt alignment", "durations", "sampling", "vocoder"} <= set(row["stages_s"]) and row["audio_s"] > 5
    assert main(["profile", "--edit", "purple", "--voice", "nobody", "--bundle", str(BUNDLE)]) == 2


def test_enhance_profile_times_the_request_and_its_stages(tmp_path):
    out = tmp_path / "enhance.json"
    assert main(["profile", "--enhance", "1.5", "--bundle", str(BUNDLE), "--nfe", "2", "--dtype", "fp32",
                 "--repeats", "1", "--json", str(out)]) == 0
    [row] = json.loads(out.read_text())
    assert row["task"] == "enhance" and row["audio_s"] == 1.5 and {"features", "sampling"} <= set(row["stages_s"])
    assert row["stages_s"]["sampling"] < row["seconds"]
    assert main(["profile", "--separate", "1.5", "--bundle", str(BUNDLE), "--nfe", "1", "--ensemble", "2",
                 "--dtype", "fp32", "--repeats", "1", "--json", str(out)]) == 0
    [row] = json.loads(out.read_text())
    assert row["task"] == "separate" and row["audio_s"] == 1.5 and row["ensemble"] == 2 and row["steps"] == 1


def test_count_syncs_counts_each_read_back_once_and_restores_the_tensor():
    import numpy as np
    import pytest
    import torch

    from model.profiling import count_syncs, no_host_sync

    before = dict(torch.Tensor.__dict__)
    x = torch.arange(4.0)
    with count_syncs() as syncs:
        assert x.sum().item() == 6 and x.tolist() == [0, 1, 2, 3] and np.asarray(x).shape == (4,)
        assert bool(x.any()) and x[x > 1].shape == (2,) and x.nonzero().shape == (3, 1)
        y = x.index_select(0, torch.tensor([1, 3])) * 2  # host-sized work on the device: not a sync
    assert syncs.method == "dispatch_guard" and syncs.count == 6, syncs.events  # __array__ once, not twice
    assert y.tolist() == [2.0, 6.0]
    with pytest.raises(AssertionError, match="reads a tensor back"), no_host_sync():
        x.max().item()
    assert dict(torch.Tensor.__dict__) == before  # nothing left patched


def test_live_rows_are_shaped_as_the_planners_make_them():
    import torch

    from model.config import ModelConfig, preset
    from model.defaults import sampling
    from model.modeling import SpeechFlowModel
    from model.profiling import live_rows, mixed_lengths

    lengths = mixed_lengths(3, (2.0, 10.0), seed=0)
    assert lengths == mixed_lengths(3, (2.0, 10.0), seed=0) and all(200 <= n <= 1000 for n in lengths)
    model = SpeechFlowModel(ModelConfig(task="tts", network=preset("debug", n_phones=12)))
    rows = live_rows(model, lengths, sampling("tts"))
    for row, n in zip(rows, lengths, strict=True):
        assert row.cond.shape == (n, 80) and row.sampling == sampling("tts")
        assert row.extras["phones"].shape == (n,) and row.extras["phones"].dtype == torch.long
        assert row.known_mask is not None and int(row.known_mask.sum()) == n // 3
