"""Control of one gateway process: readiness, reload (in two phases), policies' admin calls.

The supervisor drives each worker through its private control socket: `prepare` builds and
starts the new config beside the serving one in every worker, and only when all succeeded
does `commit` swap it in everywhere (else `abort` drops it), so workers never disagree.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.app import Gateway
from gateway.config.loader import LoadedConfig, load_config, parse_config
from gateway.errors import ConfigError, ConfigProblem, StoreUnavailable
from gateway.http.listener import Listener
from gateway.policy import AdminCall
from gateway.registry import Registry
from gateway.runtime import Runtime

log = logging.getLogger("gateway.control")


class LocalControl:
    """Controls the `Gateway` of this process."""

    def __init__(
        self, gateway: Gateway, registry: Registry, listener: Listener | None = None
    ) -> None:
        self.gateway = gateway
        self.registry = registry
        self.listener = listener
        """The public listener, whose accept loop knows when descriptors ran out."""
        self._pending: Runtime | None = None
        self._lock = asyncio.Lock()

    @property
    def runtime(self) -> Runtime:
        return self.gateway.runtime

    async def ready(self) -> tuple[bool, str]:
        if self.listener is not None and self.listener.out_of_fds:
            return False, "out of file descriptors"
        try:
            await self.runtime.store.ping()
        except StoreUnavailable as exc:
            return False, str(exc)
        return True, "ok"

    async def routes(self) -> list[dict[str, Any]]:
        return self.runtime.table()

    async def metrics(self) -> bytes:
        return self.runtime.metrics.exposition()

    async def stats(self) -> dict[str, Any]:
        metrics = self.runtime.metrics
        metrics.flush()  # requests answered before this call are in it
        return metrics.stats.snapshot([route.name for route in self.runtime.routes])

    async def reload(self) -> list[str]:
        reloads = self.runtime.metrics.reloads
        try:
            loaded = load_config(self.runtime.loaded.file, registry=self.registry)
            await self.prepare(loaded)
        except ConfigError as exc:
            reloads.labels("refused").inc()
            # Worded as the supervisor's, so one search finds refused reloads of both.
            log.error(
                "reload (%s) refused, still serving the previous config:\n%s", "POST /-/reload", exc
            )
            raise
        await self.commit()
        reloads.labels("ok").inc()
        return loaded.warnings

    async def prepare(self, loaded: LoadedConfig) -> None:
        """Build and start `loaded` beside the serving config."""
        async with self._lock:
            if self._pending is not None:
                await self._pending.stop()
            current = self.runtime
            runtime = Runtime(loaded, current.store, current.metrics)
            if (runtime.server_tls is None) != (self.gateway.tls is None):
                await runtime.stop()
                raise loaded.problem(("tls",), "turning TLS on or off takes a restart")
            try:
                await runtime.start()
            except Exception as exc:  # a policy that cannot start refuses the whole config
                log.exception("starting the new config failed")
                await runtime.stop()
                problem = ConfigProblem(loaded.file, None, "", f"cannot start: {exc}")
                raise ConfigError([problem]) from exc
            self._pending = runtime

    async def commit(self) -> None:
        async with self._lock:
            if self._pending is None:
                return
            old = self.gateway.swap(self._pending)
            self._pending = None
        log.info("config reloaded from %s", self.runtime.loaded.file)
        await old.stop()

    async def abort(self) -> None:
        async with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            await pending.stop()

    async def policy_call(
        self, policy: str, endpoint: str, body: Any, query: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        cls = self.registry[policy]
        runtime = self.runtime
        call = AdminCall(
            body=body,
            store=runtime.store,
            instances=[p for p in runtime.policies if isinstance(p, cls)],
            query=query or {},
            routes=[route.name for route in runtime.routes],
        )
        return await cls.admin_endpoints[endpoint](call)

    def internal_routes(self) -> dict[str, Any]:
        """The supervisor's side door, served on the worker's private control socket only."""

        async def prepare(request: web.Request) -> web.Response:
            data = await request.json()
            try:
                loaded = parse_config(data["text"], data["file"], registry=self.registry)
                await self.prepare(loaded)
            except ConfigError as exc:
                return web.json_response({"problems": [str(p) for p in exc.problems]}, status=400)
            return web.json_response({"status": "prepared"})

        async def commit(_: web.Request) -> web.Response:
            await self.commit()
            return web.json_response({"status": "committed"})

        async def abort(_: web.Request) -> web.Response:
            await self.abort()
            return web.json_response({"status": "aborted"})

        async def flush(_: web.Request) -> web.Response:
            self.runtime.metrics.flush()
            return web.json_response({"status": "flushed"})

        async def stats(_: web.Request) -> web.Response:
            return web.json_response(await self.stats())

        return {
            "POST /-/internal/flush": flush,
            "GET /-/internal/stats": stats,
            "POST /-/internal/prepare": prepare,
            "POST /-/internal/commit": commit,
            "POST /-/internal/abort": abort,
        }
