"""Driving an app in process: its lifespan with an httpx client over ASGI, and bounded waits for a state change
(the tests and the simulated bench)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx


@asynccontextmanager
async def serving(app: Any, base_url: str = "http://testserver") -> AsyncIterator[Any]:
    """Run ``app``'s lifespan and yield an httpx.AsyncClient that calls it in process; shutdown on exit."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield client


def wait_until_ready(client: Any, attempts: int = 2000) -> None:
    """Poll ``/readyz`` with an httpx.Client until a server in another thread or process is warm (bounded)."""
    for _ in range(attempts):
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        threading.Event().wait(0.005)
    raise AssertionError("the server did not become ready")


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Yield to the event loop until ``predicate()`` holds (a state change, not a timing assumption); fail after
    ``timeout_s`` so a broken test cannot hang."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout_s
    while not predicate():
        if loop.time() > give_up:
            raise AssertionError(f"condition not reached within {timeout_s} s")
        await asyncio.sleep(0.001)
