"""The supervisor's side of its workers: a handle per worker process, and the admin listener's
view of them all (readiness, routes, metrics and stats summed, policies' admin calls)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlencode

import aiohttp
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.process.fds import out_of_fds
from gateway.telemetry.stats import Stats, merge_into


class WorkerHandle:
    """One worker process as the supervisor sees it."""

    def __init__(self, index: int, control: str) -> None:
        self.index = index
        self.control = control
        self.process: asyncio.subprocess.Process | None = None
        self.started = 0.0
        self.session: aiohttp.ClientSession | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def call(
        self, method: str, path: str, payload: Any = None, timeout: float = 30.0
    ) -> tuple[int, Any]:
        if self.session is None or self.session.closed:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.control),
                timeout=aiohttp.ClientTimeout(total=timeout),
            )
        async with self.session.request(method, f"http://worker{path}", json=payload) as response:
            body = await response.json(content_type=None)
            return response.status, body


class Fleet(Protocol):
    """What the admin view needs of the supervisor (a protocol, so this module sits below it)."""

    workers: list[WorkerHandle]
    stopping: bool
    metrics_dir: str
    registry_metrics: CollectorRegistry

    async def reload(self, source: str) -> list[str]: ...


class SupervisorControl:
    """The admin listener's view of all workers."""

    def __init__(self, supervisor: Fleet) -> None:
        self.supervisor = supervisor

    async def ready(self) -> tuple[bool, str]:
        sup = self.supervisor
        if sup.stopping:
            return False, "shutting down"
        down = [w.index for w in sup.workers if not w.alive]
        if down:
            return False, f"worker(s) {down} not running"
        results = await asyncio.gather(
            *(w.call("GET", "/-/ready", timeout=5) for w in sup.workers), return_exceptions=True
        )
        for worker, result in zip(sup.workers, results, strict=True):
            if isinstance(result, BaseException):
                # A worker out of descriptors cannot accept the control connection either:
                # its descriptor table, read from outside, says why.
                process = worker.process
                if process is not None and out_of_fds(process.pid):
                    return False, f"worker {worker.index}: out of file descriptors"
                return False, f"worker {worker.index} does not answer"
            if result[0] != 200:
                return False, f"worker {worker.index}: {result[1].get('reason', 'not ready')}"
        return True, "ok"

    async def routes(self) -> list[dict[str, Any]]:
        worker = self._first()
        if worker is None:
            return []
        status, body = await worker.call("GET", "/-/routes")
        return body["routes"] if status == 200 else []

    async def metrics(self) -> bytes:
        # Workers buffer metric updates; have them fold in what they hold, so a scrape sees
        # every request answered before it.
        await asyncio.gather(
            *(
                w.call("POST", "/-/internal/flush", timeout=5)
                for w in self.supervisor.workers
                if w.alive
            ),
            return_exceptions=True,
        )
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.supervisor.metrics_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry) + generate_latest(self.supervisor.registry_metrics)

    async def reload(self) -> list[str]:
        return await self.supervisor.reload("POST /-/reload")

    async def stats(self) -> dict[str, Any]:
        alive = [w for w in self.supervisor.workers if w.alive]
        results = await asyncio.gather(
            *(w.call("GET", "/-/internal/stats", timeout=5) for w in alive),
            return_exceptions=True,
        )
        total: dict[str, Any] = {}
        for result in results:
            if not isinstance(result, BaseException) and result[0] == 200:
                merge_into(total, result[1])
        if not total:  # no worker answered
            total = Stats((), ()).snapshot([])
            total["workers"] = 0
        return total

    async def policy_call(
        self, policy: str, endpoint: str, body: Any, query: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        # Policies keep shared state in the store, so one worker speaks for all (and with
        # memory:// there is only one worker).
        method, _, path = endpoint.partition(" ")
        worker = self._first()
        if worker is None:
            return 503, {"error": "no_worker_running"}
        if query:
            path = f"{path}?{urlencode(query)}"
        return await worker.call(method, path, body)

    def _first(self) -> WorkerHandle | None:
        return next((worker for worker in self.supervisor.workers if worker.alive), None)
