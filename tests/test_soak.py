"""The soak script (bench/soak.py) for a few seconds against a real server on the fake engine, so that it
cannot rot: every kind of outcome it reports happens, and nothing is lost."""

import json
import os

from bench.fake_engine import FakeEngine
from bench.soak import main, read_rss_bytes
from service.app import create_app
from service.settings import Settings
from tests.test_service_server import running


def test_a_short_soak_reports_answers_refusals_disconnects_and_memory(tmp_path):
    # a small queue and steps of 20 ms: a burst of 24 is partly refused, a client leaving after 50-500 ms leaves
    # mid-request
    app = create_app(Settings(max_queue=4, max_wait_ms=5, api_keys="soak-key"),
                     FakeEngine(tasks=("enhance", "tts"), step_cost=(0.02, 0.0)))
    out = tmp_path / "soak.json"
    with running(app) as url:
        main(["--url", url, "--duration-s", "4", "--burst-every-s", "1", "--burst-size", "24", "--sample-every-s",
              "0.5", "--disconnect-share", "0.3", "--pid", str(os.getpid()), "--api-key", "soak-key",
              "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["answered"] > 0 and report["refused"] > 0 and report["disconnected"] > 0, report
    assert report["lost"] == 0 and report["failed"] == 0, report["status_counts"]
    assert report["sent"] == report["answered"] + report["refused"] + report["failed"] + report["disconnected"]
    assert set(report["tasks"]) == {"enhance", "tts"} and report["latency_ms"]["p99"] > 0
    assert report["bursts"]["refused"] > 0 and report["ready_after"] is True
    memory = report["memory"]
    assert memory["source"] == "proc" and len(memory["samples_mb"]) >= 4 and memory["peak_mb"] > 10
    assert "soak-key" not in out.read_text()  # the key is not in the report's config


def test_rss_is_read_from_proc():
    assert read_rss_bytes(os.getpid()) > 1_000_000
    assert read_rss_bytes(2**22 + 12345) is None  # no such process
