"""`speechflow serve`: the app under uvicorn, with a graceful SIGTERM.

On SIGTERM / SIGINT readiness turns 503 and new work is refused at once (before uvicorn stops listening), uvicorn
then lets open requests finish (up to the request deadline), the lifespan shutdown drains the step loop (every
admitted row finishes), and the process exits 0.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn

from .app import create_app
from .settings import Settings


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()  # only sets a flag: safe inside a signal handler
        super().handle_exit(sig, frame)


def _drained(sig: int, frame: FrameType | None) -> None:
    """The handler uvicorn restores and calls after its graceful shutdown: nothing left to do."""


def drain_timeout_s(settings: Settings) -> int:
    """How long a SIGTERM waits for admitted requests (`Settings.drain_s`, whole seconds for uvicorn; the step loop
    fails what is left after it); orchestrators must allow at least this (compose's stop_grace_period, Kubernetes'
    terminationGracePeriodSeconds)."""
    return math.ceil(settings.drain_s)


def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT (exit 0 after the drain) or until the step loop dies (exit 1, so that an
    orchestrator restarts the process: a dead scheduler must not look healthy)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, lifespan="on", log_level="info",
                            timeout_graceful_shutdown=drain_timeout_s(settings), server_header=False)
    runtime = app.state.runtime
    runtime.load()  # a bad bundle stops here with one line (speechflow serve: error: ...), exit status 2
    server = GracefulServer(config, on_exit=runtime.begin_shutdown)
    died: list[BaseException] = []

    def fatal(error: BaseException) -> None:
        died.append(error)
        runtime.begin_shutdown()
        server.should_exit = True

    runtime.on_fatal = fatal
    # uvicorn re-raises the signal it drained for once it has put back the handlers it found; the default ones
    # would then kill the process (status 143 after SIGTERM, a KeyboardInterrupt after Ctrl-C) although every
    # admitted request was answered. Handlers that do nothing let serve() return: exit 0 after a clean drain.
    if threading.current_thread() is threading.main_thread():  # signals can only be set from there
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _drained)
    server.run()
    if died:
        logging.getLogger(__name__).error("exiting with status 1: the step loop died (%r)", died[0])
        sys.exit(1)
