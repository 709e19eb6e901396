"""Helpers for the queue tests: a queue route to the test upstream, and what it received."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tests.support.harness import InProcessGateway


def config(options: str = "") -> str:
    """One route `/hooks` with `queue: {small durations, options}` to the test upstream."""
    return f"""
upstreams:
  backend:
    targets: [UPSTREAM_URL]
    timeouts: {{connect: 1s, read: 2s}}
routes:
  - name: hooks
    match: {{path: /hooks}}
    upstream: backend
    policies:
      - queue: {{max_body: 1KiB, max_attempts: 3, retry: {{first: 50ms, max: 200ms}},
                 visibility_timeout: 2s, poll: 100ms{", " + options if options else ""}}}
"""


class Receiver:
    """An upstream path that records each delivery and answers from a script of statuses."""

    def __init__(self, *statuses: int | tuple[int, dict[str, str]]) -> None:
        self.statuses = list(statuses)
        self.received: list[dict[str, Any]] = []
        self.times: list[float] = []

    async def __call__(self, request: web.Request) -> web.Response:
        self.received.append(
            {
                "headers": dict(request.headers),
                "body": await request.read(),
                "path": request.path_qs,
            }
        )
        self.times.append(asyncio.get_running_loop().time())
        answer = self.statuses.pop(0) if self.statuses else 200
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return web.Response(status=status, text=f"answer {status}", headers=headers)


async def post(gateway: InProcessGateway, path: str, body: bytes = b"{}") -> tuple[int, Any]:
    async with gateway.request("POST", path, data=body) as response:
        return response.status, await response.json()


async def queue_status(gateway: InProcessGateway) -> dict[str, Any]:
    async with gateway.admin("GET", "/-/queue") as response:
        assert response.status == 200
        payload: dict[str, Any] = await response.json()
        return payload["routes"]["hooks"]


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll `check` (the queue delivers in the background and tells no one)."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
