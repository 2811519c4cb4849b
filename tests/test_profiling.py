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
