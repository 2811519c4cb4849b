"""`speechflow serve`: the app under uvicorn, with a graceful SIGTERM.

On SIGTERM / SIGINT readiness turns 503 and new work is refused at once (before uvicorn stops listening), uvicorn
then lets open requests finish (up to the request deadline), and the lifespan shutdown drains the batcher.
"""

from __future__ import annotations

import logging
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


def serve(settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, lifespan="on", log_level="info",
                            timeout_graceful_shutdown=int(settings.request_timeout_s) + 5, server_header=False)
    GracefulServer(config, on_exit=app.state.runtime.begin_shutdown).run()
