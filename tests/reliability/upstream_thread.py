"""The test upstream (tests/support/upstream.py) served from a thread, for synchronous tests
(hypothesis drives them) that talk to a gateway subprocess over blocking sockets."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from aiohttp import web

from tests.support.upstream import Upstream

UPSTREAM_MARK = "X-Test-Upstream"
"""Set on every answer the upstream gives (its own errors included), so a test can tell
them from the gateway's."""


async def _mark(_: web.Request, response: web.StreamResponse) -> None:
    response.headers[UPSTREAM_MARK] = "1"


class ThreadedUpstream:
    """`with ThreadedUpstream() as upstream:` serves `upstream.url` until the block ends."""

    def __init__(self) -> None:
        self.backend = Upstream()
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _start(self) -> str:
        app = self.backend.app()
        app.on_response_prepare.append(_mark)
        # auto_decompress off: bodies arrive exactly as the gateway sent them.
        self._runner = web.AppRunner(app, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    def __enter__(self) -> ThreadedUpstream:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
