"""`speechflow bench` against the in-process app with the fake engine (instant steps): the mixed mode's plan and
per-task report, the lost/duplicated check, the simulation of both scheduling policies, and the tables."""

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from bench.config import BenchConfig, parse_mix
from bench.fake_engine import FAKE_SECONDS_PER_CHAR, FakeEngine
from bench.inprocess import serving
from bench.run import run_bench
from bench.table import main as table_main
from bench.table import mixed_runs, mixed_table
from bench.traffic import Outcome, apportion, build_plan, input_audio, integrity
from model.errors import SpeechFlowError
from service.app import create_app
from service.settings import Settings
from speechflow.cli import main as cli_main

MIX = "enhance:0.5,tts:0.5"
FAST = {"mode": "poisson", "rate": 2000.0, "enhance_seconds": (0.2, 0.4)}  # arrivals within a few ms


def in_process(cfg: BenchConfig, engine: FakeEngine) -> dict:
    app = create_app(Settings(max_wait_ms=1), engine)

    async def main():
        async with serving(app):
            await app.state.runtime.wait_ready()
            return await run_bench(cfg, transport=httpx.ASGITransport(app=app))

    return asyncio.run(main())


@pytest.fixture(scope="module")
def simulated():
    cfg = BenchConfig(simulate=(0.0, 0.0), mix=MIX, requests=8, **FAST)
    return asyncio.run(run_bench(cfg))


@pytest.mark.parametrize("mode", ["poisson", "closed"])
def test_a_mixed_run_sends_both_tasks_and_reports_each(mode):
    engine = FakeEngine(tasks=("enhance", "tts"))
    cfg = BenchConfig(url="http://127.0.0.1", mix=MIX, requests=12, concurrency=3, **{**FAST, "mode": mode})
    report = in_process(cfg, engine)

    assert {t for t, _, _ in engine.prepared} == {"enhance", "tts"}
    assert {p.voice for t, p, _ in engine.prepared if t == "tts"} == {"alice"}  # the first of /v1/voices
    assert report["sent"] == report["ok"] == 12 and report["label"] is None
    assert report["integrity"] == {"sent": 12, "unique_ids": 12, "answered": 12, "no_answer": 0, "lost": 0,
                                   "duplicated": 0, "unexpected": 0, "ok": True}
    enhance, tts = report["tasks"]["enhance"], report["tasks"]["tts"]
    plan = build_plan(cfg, input_audio(cfg))
    for task in (enhance, tts):
        assert task["sent"] == task["ok"] == 6 and task["status_counts"] == {"200": 6}  # the mix, exactly
        assert set(task["latency_ms"]) == {"p50", "p95", "p99", "mean"}
        assert task["audio_seconds_per_s"] > 0 and task["mean_live_rows"] >= 1
        server = task["server"]
        assert server["steps"] > 0 and server["mean_batch_size"] >= 1 and 0 <= server["mean_padding"] < 1
    assert enhance["audio_seconds"] == pytest.approx(sum(s.audio_s for s in plan if s.task == "enhance"))
    # TTS audio out is what the server says it returned (X-Audio-Seconds): the fake's 0.05 s per character
    spoken = sum(len(s.text) - s.text.count(". ") for s in plan if s.task == "tts")  # sentences, not the gaps
    assert tts["audio_seconds"] == pytest.approx(spoken * FAKE_SECONDS_PER_CHAR, rel=1e-3)
    # time to first chunk: TTS only, server side, so within each request's latency
    assert "first_chunk_ms" not in enhance and set(tts["first_chunk_ms"]) == {"p50", "p95"}
    assert tts["first_chunk_after_latency"] == 0
    assert tts["first_chunk_ms"]["p50"] <= tts["latency_ms"]["p50"]
    assert report["server_rejections"] == 0


def test_the_plan_is_drawn_from_the_seed_and_apportions_the_mix():
    cfg = BenchConfig(url="http://127.0.0.1", mix="enhance:0.7,tts:0.3", requests=40, enhance_seconds=(0.1, 0.2))
    inputs = input_audio(cfg)
    plan = build_plan(cfg, inputs)
    assert plan == build_plan(cfg, inputs)  # same seed, same traffic (both policies see the same requests)
    assert [s.task for s in plan].count("enhance") == 28 and [s.task for s in plan].count("tts") == 12
    assert [s.seed for s in plan] == list(range(40)) and [s.index for s in plan] == list(range(40))
    assert {s.audio_s for s in plan if s.task == "enhance"} == {0.1, 0.2}
    sentences = {s.text.count(".") for s in plan if s.task == "tts"}
    assert 1 in sentences and max(sentences) >= 3  # short or one sentence, and a few sentences
    other = build_plan(BenchConfig(url="http://127.0.0.1", mix="enhance:0.7,tts:0.3", requests=40, seed=1,
                                   enhance_seconds=(0.1, 0.2)), inputs)
    assert [s.task for s in other] != [s.task for s in plan]
    assert apportion(3, parse_mix("enhance,tts,separate")) == ["enhance", "tts", "separate"]


@pytest.mark.parametrize("mix, error", [("enhance:0.5,chat:0.5", "unknown task"), ("enhance:0", "positive"),
                                        ("tts,tts", "twice"), ("enhance:x", "TASK:WEIGHT"), (",", "empty")])
def test_a_malformed_mix_is_refused(mix, error):
    with pytest.raises(SpeechFlowError, match=error):
        parse_mix(mix)


def test_integrity_counts_answers_by_the_echoed_request_id():
    ok = [Outcome(200, 0.1, request_id=f"r{i}", echoed_id=f"r{i}") for i in range(3)]
    assert integrity(ok)["ok"]
    lost = integrity([*ok, Outcome(0, 0.1, request_id="r3")])
    assert (lost["lost"], lost["no_answer"], lost["ok"]) == (1, 1, False)
    crossed = integrity([*ok, Outcome(200, 0.1, request_id="r3", echoed_id="r0")])  # r3's answer carries r0
    assert (crossed["lost"], crossed["duplicated"], crossed["unexpected"], crossed["ok"]) == (1, 1, 0, False)
    stray = integrity([*ok, Outcome(200, 0.1, request_id="r3", echoed_id=None)])
    assert (stray["lost"], stray["unexpected"], stray["ok"]) == (1, 1, False)


def test_the_simulation_runs_the_same_traffic_under_both_policies(simulated):
    assert simulated["simulate"]["step_cost_s"] == [0.0, 0.0]
    assert simulated["simulate"]["settings"]["max_batch_frames"] == 24_000
    assert set(simulated["policies"]) == {"step", "request"}
    for policy, report in simulated["policies"].items():
        assert report["label"] == policy and report["integrity"]["ok"] and report["ok"] == 8
        assert {t: r["sent"] for t, r in report["tasks"].items()} == {"enhance": 4, "tts": 4}
    assert set(simulated["p99_ratio_request_over_step"]) == {"all", "enhance", "tts"}
    assert all(r > 0 for r in simulated["p99_ratio_request_over_step"].values())


def test_one_task_simulated_keeps_the_one_task_report():
    report = asyncio.run(run_bench(BenchConfig(simulate=(0.0, 0.0), task="enhance", requests=4, audio_seconds=0.2)))
    for r in report["policies"].values():
        assert r["ok"] == 4 and r["mean_batch_size"] >= 1 and r["integrity"]["ok"] and "tasks" not in r
    assert set(report["p99_ratio_request_over_step"]) == {"all"}


def test_the_markdown_table_compares_the_policies(simulated, tmp_path, capsys):
    table = mixed_table(mixed_runs([("sim", simulated)]))
    lines = table.splitlines()
    assert lines[0].startswith("| policy | enhance p50 / p95 / p99 (ms) | tts p50 / p95 / p99 (ms) | tts first chunk")
    assert [line.split(" | ")[0] for line in lines[2:4]] == ["| step", "| request"]
    assert all(line.endswith("| 0 / 0 |") for line in lines[2:4])  # nothing lost or duplicated
    assert "p99 request / step: enhance" in lines[-1] and "Simulated (fake engine)" in lines[-1]
    # separate runs against a real server: one report each, rows named by --label
    for policy, report in simulated["policies"].items():
        (tmp_path / f"{policy}.json").write_text(json.dumps({**report, "label": f"server {policy}"}))
    table_main(["--mixed", str(tmp_path / "step.json"), str(tmp_path / "request.json")])
    out = capsys.readouterr().out
    assert "| server step |" in out and "| server request |" in out
    table_main([str(Path(__file__).parents[1] / "docs" / "bench" / "cpu-tiny")])  # the one-task tables still
    assert "| frame budget | concurrency |" in capsys.readouterr().out


def test_the_cli_runs_a_simulation_and_refuses_what_makes_no_sense(tmp_path, capsys):
    out = tmp_path / "sim.json"
    assert cli_main(["bench", "--simulate", "0,0", "--mix", "enhance,tts", "--mode", "poisson", "--rate", "2000",
                     "--requests", "4", "--enhance-seconds", "0.2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["policies"]) == {"step", "request"}
    assert report["config"]["enhance_seconds"] == [0.2]
    capsys.readouterr()
    for argv in (["bench", "--url", "http://127.0.0.1:1"],  # neither --task nor --mix
                 ["bench", "--simulate", "0,0", "--url", "http://127.0.0.1:1", "--task", "enhance"],
                 ["bench", "--simulate", "1", "--task", "enhance"],
                 ["bench", "--simulate", "0,0", "--task", "enhance", "--mix", MIX],  # one or the other
                 ["bench", "--url", "http://127.0.0.1:1", "--mix", "enhance:1,tts:0"],
                 ["bench", "--url", "http://127.0.0.1:1", "--mix", MIX, "--baseline", "checkpoints/demo"]):
        assert cli_main(argv) == 2, argv


def test_the_scheduler_scenarios_run_end_to_end_and_report_each_target():
    from bench.scenarios import run_scenarios

    # a TTS step of 50 ms per row, so the long TTS is still running while the enhancements go through
    engine = FakeEngine(tasks=("enhance", "tts"), step_cost=(0.05, 0.0))
    app = create_app(Settings(max_wait_ms=1), engine)

    async def main():
        async with serving(app):
            await app.state.runtime.wait_ready()
            return await run_scenarios("http://127.0.0.1", enhance_seconds=0.2, repeats=2, head_start_s=0.05,
                                       rounds=2, transport=httpx.ASGITransport(app=app))

    report = asyncio.run(main())
    interference, leave, throughput = report["interference"], report["leave"], report["tts_throughput"]
    assert 1 <= len(interference["during_tts_ms"]) <= 2 and interference["ratio_median"] > 0
    assert leave["rows_dropped"] >= 1 and leave["tts_steps_run"] >= 1  # the leaving client's rows were dropped
    assert throughput["rounds"] == 2 and len(throughput["gain_per_round"]) == 2 and throughput["gain"] > 0
