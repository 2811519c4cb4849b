"""A real uvicorn server on a free loopback port (fake engine): what only a socket shows, the bench client, the
graceful-exit hook and the CLI wiring."""

import asyncio
import io
import re
import signal
import socket
import threading
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from bench.config import BenchConfig, check_loopback
from bench.fake_engine import FakeEngine
from bench.inprocess import wait_until_ready
from bench.run import run_bench
from service.app import create_app
from service.server import GracefulServer
from service.settings import Settings
from speechflow.cli import main


@contextmanager
def running(app):
    """The base URL of ``app`` served by uvicorn in a thread; stopped (and drained) on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            wait_until_ready(client)
        yield url
    finally:
        app.state.runtime.engine.release()
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def server():
    """(base URL, app) of a server in a thread; stopped (and drained) after the test."""
    app = create_app(Settings(max_upload_bytes=100_000, max_wait_ms=5), FakeEngine())
    with running(app) as url:
        yield url, app


def test_a_client_still_uploading_gets_the_429_not_a_reset():
    """Found by the soak test: a 429 sent while the body was still arriving reset the connection, and httpx (which
    writes the whole request before reading) saw a ReadError instead of the answer."""
    app = create_app(Settings(max_queue=1, max_wait_ms=0), FakeEngine())
    engine = app.state.runtime.engine
    with running(app) as url:
        engine.hold()
        first, _ = raw_request(url, seed=1)
        wait_for(lambda: len(engine.steps) == 1)
        queued, _ = raw_request(url, seed=2)
        wait_for(lambda: app.state.runtime.loop.depth() == 1)
        body = bytes(64_000)  # fits in the socket buffers: sent whole before the answer, unread at the close

        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                answers = await asyncio.gather(*(client.post("/v1/enhance", files={"file": ("a.wav", body)})
                                                 for _ in range(32)), return_exceptions=True)
            return [a.status_code if isinstance(a, httpx.Response) else type(a).__name__ for a in answers]

        assert asyncio.run(burst()) == [429] * 32
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # Expect: 100-continue: no body sent
            s.sendall(b"POST /v1/enhance HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: "
                      b"multipart/form-data; boundary=b\r\nContent-Length: 2000000\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 429")
        engine.release()
        for s in (first, queued):
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            s.close()


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


SERVE_SLOWLY = """
import sys
from service import app as app_module, server
from service.settings import Settings
from bench.fake_engine import FakeEngine

# every ODE step takes 0.25 s, so the requests are still running when the test sends SIGTERM
server.create_app = lambda settings: app_module.create_app(
    settings, FakeEngine(tasks=("enhance", "tts"), step_cost=(0.25, 0.0)))
server.serve(Settings(port=int(sys.argv[1]), api_keys=sys.argv[2], max_wait_ms=50, request_timeout_s=30))
"""
SIGTERM_KEY = "sigterm-test-key-31415926"


def metric_value(client: httpx.Client, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    families = text_string_to_metric_families(client.get("/metrics").text)
    return sum(s.value for f in families for s in f.samples if s.name == name)


def test_sigterm_finishes_every_admitted_request_refuses_new_ones_and_exits_0(tmp_path):
    import subprocess
    import sys

    import numpy as np
    import soundfile as sf

    from bench.fake_engine import FAKE_SECONDS_PER_CHAR
    from model.audio import encode_audio
    from tests.conftest import speechlike

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {SIGTERM_KEY}"}
    log = (tmp_path / "server.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-c", SERVE_SLOWLY, str(port), SIGTERM_KEY], stdout=log,
                            stderr=subprocess.STDOUT)
    uploads = {seed: encode_audio(speechlike(0.5, seed=seed), 16000, "wav") for seed in (1, 2, 3, 4)}
    texts = {5: "One sentence here. And a second one.", 6: "Short. Two rows."}
    answers: dict[int, httpx.Response] = {}

    def send(seed: int) -> None:
        with httpx.Client(base_url=url, timeout=30, headers=auth) as c:
            if seed in uploads:
                answers[seed] = c.post("/v1/enhance", data={"seed": str(seed), "steps": "8"},
                                       files={"file": ("a.wav", uploads[seed], "audio/wav")})
            else:
                answers[seed] = c.post("/v1/audio/speech", json={"input": texts[seed], "voice": "alice", "seed": seed,
                                                                 "steps": 8, "response_format": "wav"})

    try:
        with httpx.Client(base_url=url, timeout=10) as probe:
            wait_until_ready(probe)
            assert probe.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
            threads = [threading.Thread(target=send, args=(seed,)) for seed in [*uploads, *texts]]
            for t in threads:
                t.start()
            # all admitted and stepping: 4 enhancement rows + the first sentence of each streamed TTS request (on a
            # CPU a stream's sentences run one after another), none queued
            wait_for(lambda: metric_value(probe, "speechflow_live_rows") == 6, timeout_s=20)
            assert metric_value(probe, "speechflow_queue_depth") == 0
        proc.send_signal(signal.SIGTERM)
        refused = []
        for _ in range(3):  # at once and a little later: a 503 while the socket still listens, then no connection
            try:
                with httpx.Client(base_url=url, timeout=5, headers=auth) as late:
                    refused.append(late.post("/v1/audio/speech", json={"input": "Too late.", "voice": "alice"}
                                             ).status_code)
            except httpx.TransportError as e:
                refused.append(type(e).__name__)
            threading.Event().wait(0.2)
        for t in threads:
            t.join(timeout=30)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log.seek(0)
    output = log.read()
    assert all(r == 503 or r in ("ConnectError", "RemoteProtocolError", "ReadError") for r in refused), refused
    assert sorted(answers) == [1, 2, 3, 4, 5, 6] and all(r.status_code == 200 for r in answers.values()), \
        {k: (r.status_code, r.text[:200]) for k, r in answers.items()}
    for seed, data in uploads.items():  # the fake enhancement halves its input: the right body for each request
        sent, _ = sf.read(io.BytesIO(data), dtype="float32")
        got, sr = sf.read(io.BytesIO(answers[seed].content), dtype="float32")
        assert sr == 16000 and got.shape == sent.shape and np.abs(got - 0.5 * sent).max() < 2 / 32768
    for seed, text in texts.items():
        got, rate = sf.read(io.BytesIO(answers[seed].content), dtype="float32")
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", text) if s]
        assert rate == 24000  # the OpenAI endpoint's rate, resampled from the engine's 16 kHz
        assert len(got) == 1.5 * sum(int(16000 * FAKE_SECONDS_PER_CHAR * len(s)) for s in sentences)
        assert answers[seed].headers["x-seed"] == str(seed)
    assert "GET /v1/models" in output and "POST /v1/enhance" in output  # the access log is on...
    assert SIGTERM_KEY not in output  # ...and never shows a key


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
from bench.fake_engine import FakeEngine
from bench.inprocess import wait_until_ready

original = scheduler.Scheduler.next
def broken(self, now=None, need=None):
    if self._keys:  # the first request's rows: the loop's own code fails, not the engine
        raise RuntimeError("a bug in the scheduler")
    return original(self, now, need)
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
    assert "enhance 503" in done.stdout  # the request in flight was answered (retry elsewhere), not left hanging
    assert "the step loop died" in done.stderr
