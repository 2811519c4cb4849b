"""A real uvicorn server on a free loopback port (fake engine): what only a socket shows, the bench client, the
graceful-exit hook and the CLI wiring."""

import asyncio
import signal
import socket
import threading

import httpx
import pytest
import uvicorn

from service.app import create_app
from service.bench import BenchConfig, check_loopback, run_bench
from service.server import GracefulServer
from service.settings import Settings
from service.testing import FakeEngine, wait_until_ready
from speechflow.cli import main


@pytest.fixture
def server():
    """(base URL, app) of a server in a thread; stopped (and drained) after the test."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    app = create_app(Settings(max_upload_bytes=100_000, max_wait_ms=5), FakeEngine())
    srv = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with httpx.Client(base_url=url, timeout=10) as client:
        wait_until_ready(client)
    yield url, app
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()


def test_an_oversized_upload_is_refused_from_its_headers(server):
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        # announce 1 GB and send none of it: the answer must come without the server waiting for the body
        s.sendall(b"POST /v1/enhance HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 1073741824\r\n\r\n")
        head = b""
        while chunk := s.recv(65536):  # the server closes the connection after its answer
            head += chunk
    assert head.startswith(b"HTTP/1.1 413") and b"request_too_large" in head and b"x-request-id" in head.lower()


def wait_for(predicate, timeout_s: float = 10.0) -> None:
    pause = threading.Event()
    for _ in range(int(timeout_s / 0.005)):
        if predicate():
            return
        pause.wait(0.005)
    raise AssertionError("condition not reached")


def raw_request(url: str, seed: int) -> tuple[socket.socket, bytes]:
    """A connected socket that has sent a whole /v1/enhance request, and nothing read yet."""
    from model.audio import encode_audio
    from tests.conftest import speechlike

    request = httpx.Request("POST", f"{url}/v1/enhance", data={"seed": str(seed)},
                            files={"file": ("a.wav", encode_audio(speechlike(0.5, seed=0), 16000, "wav"), "audio/wav")})
    body = request.read()
    head = "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
    s = socket.create_connection((request.url.host, request.url.port), timeout=10)
    s.sendall(f"POST /v1/enhance HTTP/1.1\r\n{head}\r\n".encode() + body)
    return s, body


def test_a_dropped_connection_is_noticed_while_queued(server):
    url, app = server
    engine, runtime = app.state.runtime.engine, app.state.runtime
    engine.hold()
    first, _ = raw_request(url, seed=1)
    wait_for(lambda: len(engine.steps) == 1)
    leaving, _ = raw_request(url, seed=2)
    wait_for(lambda: runtime.loop.depth() == 1)
    leaving.close()
    wait_for(lambda: runtime.loop.depth() == 0)  # the handler saw http.disconnect and cancelled its request
    engine.release()
    assert first.recv(65536).startswith(b"HTTP/1.1 200")
    first.close()
    assert {tuple(s.seeds) for s in engine.steps} == {(1,)}  # the one that left never took a step
    wait_for(lambda: runtime.metrics.registry.get_sample_value(
        "speechflow_rejected_total", {"reason": "client_disconnected"}) == 1)


def test_bench_reports_throughput_latency_and_batching(server):
    url, _ = server
    closed = asyncio.run(run_bench(BenchConfig(url=url, task="separate", concurrency=4, requests=12,
                                               audio_seconds=0.5)))
    assert closed["ok"] == 12 and closed["rejected"] == 0 and closed["errors"] == 0
    assert closed["throughput_rps"] > 0 and closed["audio_seconds_per_s"] == pytest.approx(
        closed["throughput_rps"] * 0.5, rel=1e-2)
    assert set(closed["latency_ms"]) == {"p50", "p95", "p99", "mean"}
    assert 1 <= closed["mean_batch_size"] <= 4 and closed["server_rejections"] == 0
    open_loop = asyncio.run(run_bench(BenchConfig(url=url, task="enhance", mode="poisson", rate=500.0, requests=5,
                                                  audio_seconds=0.3)))
    assert open_loop["ok"] == 5 and open_loop["config"]["mode"] == "poisson"


@pytest.mark.parametrize("url", ["http://example.com:8000", "http://10.0.0.1", "http://[::2]:80"])
def test_bench_only_targets_loopback(url):
    from model.errors import SpeechFlowError

    with pytest.raises(SpeechFlowError, match="loopback"):
        check_loopback(url)
    assert main(["bench", "--url", url, "--task", "enhance"]) == 2


def test_sigterm_marks_the_service_as_shutting_down_first():
    app = create_app(Settings(), FakeEngine())
    srv = GracefulServer(uvicorn.Config(app), on_exit=app.state.runtime.begin_shutdown)
    srv.handle_exit(signal.SIGTERM, None)
    assert app.state.runtime.shutting_down and srv.should_exit
    assert app.state.runtime.admission_error().code == "shutting_down"


def test_serve_flags_override_environment(monkeypatch):
    seen = []
    monkeypatch.setattr("service.server.serve", seen.append)
    monkeypatch.setenv("SPEECHFLOW_BUNDLE", "from-env")
    monkeypatch.setenv("SPEECHFLOW_PORT", "9000")
    monkeypatch.setenv("SPEECHFLOW_API_KEYS", "key-one, key-two")
    assert main(["serve", "--port", "8123"]) == 0
    (settings,) = seen
    assert (settings.bundle, settings.port, settings.host) == ("from-env", 8123, "127.0.0.1")
    assert [k.get_secret_value() for k in settings.api_keys] == ["key-one", "key-two"]
    assert "key-one" not in repr(settings)
    monkeypatch.setenv("SPEECHFLOW_API_KEYS", '["c"]')
    assert [k.get_secret_value() for k in Settings().api_keys] == ["c"]


SERVE_WITH_A_BROKEN_SCHEDULER = """
import sys, threading, httpx
from service import app as app_module, scheduler, server
from service.settings import Settings
from service.testing import FakeEngine, wait_until_ready

original = scheduler.Scheduler.next
def broken(self, now=None):
    if self._keys:  # the first request's rows: the loop's own code fails, not the engine
        raise RuntimeError("a bug in the scheduler")
    return original(self, now)
scheduler.Scheduler.next = broken
server.create_app = lambda settings: app_module.create_app(settings, FakeEngine())
port = int(sys.argv[1])

def client():
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        wait_until_ready(c)
        r = c.post("/v1/enhance", files={"file": ("a.wav", open(sys.argv[2], "rb").read(), "audio/wav")})
        print("enhance", r.status_code, flush=True)

threading.Thread(target=client, daemon=True).start()
server.serve(Settings(port=port))
"""


def test_serve_exits_with_status_1_when_the_step_loop_dies(tmp_path):
    import subprocess
    import sys

    import numpy as np

    from model.audio import encode_audio

    (tmp_path / "a.wav").write_bytes(encode_audio(np.zeros(16000, np.float32), 16000, "wav"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([sys.executable, "-c", SERVE_WITH_A_BROKEN_SCHEDULER, str(port), str(tmp_path / "a.wav")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "enhance 500" in done.stdout  # the request in flight was answered, not left hanging
    assert "the step loop died" in done.stderr
