"""File descriptors (issue 22, item 3): the soft limit is raised to the hard one at start; at the
hard limit a refused accept is logged, counted and said by `/-/ready`, and service resumes."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import resource
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from tests.gateway.test_process import write_config
from tests.support.harness import GatewayProcess
from tests.support.ports import free_port
from tests.support.upstream import Upstream

Clients = list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]


def _limit(soft: int, hard: int) -> Callable[[], None]:
    def preexec() -> None:  # in the child, before `gateway run` starts
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return preexec


@pytest.fixture
async def gateway_with_limit(
    tmp_path: Path, upstream: Upstream
) -> AsyncIterator[Callable[[int, int], asyncio.Future[tuple[GatewayProcess, int, int]]]]:
    started: list[GatewayProcess] = []

    async def start(soft: int, hard: int) -> tuple[GatewayProcess, int, int]:
        port, admin = free_port(), free_port()
        config = tmp_path / "gw.yaml"
        write_config(config, upstream.url, port, admin)
        process = GatewayProcess(str(config), preexec_fn=_limit(soft, hard))
        started.append(process)
        await process.start()
        return process, port, admin

    yield start  # type: ignore[misc]
    for process in started:
        await process.stop()


async def _connect(port: int, count: int) -> Clients:
    return [await asyncio.open_connection("127.0.0.1", port) for _ in range(count)]


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    writer.write(b"GET /api/x HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    await reader.readexactly(int(length.group(1)) if length else 0)
    return int(head.split()[1])


def _close(clients: Clients) -> None:
    for _, writer in clients:
        writer.close()


async def test_the_soft_limit_is_raised_so_more_clients_than_it_are_served(
    gateway_with_limit: Callable[[int, int], asyncio.Future[tuple[GatewayProcess, int, int]]],
) -> None:
    gateway, port, _ = await gateway_with_limit(100, 1024)
    await gateway.wait_for("open-file limit: soft 100 raised to the hard limit 1024")
    clients = await _connect(port, 300)  # three times the soft limit, all open at once
    try:
        async with asyncio.timeout(30):
            statuses = await asyncio.gather(*(_get(r, w) for r, w in clients))
        assert statuses == [200] * 300
    finally:
        _close(clients)


async def _admin(admin: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{admin}{path}") as response,
    ):
        return response.status, await response.text()


def _refusals(metrics: str) -> float:
    found = re.search(r'^gateway_accept_errors_total\{error="EMFILE"\} (\S+)$', metrics, re.M)
    return float(found.group(1)) if found else 0.0


async def test_at_the_hard_limit_refusals_are_logged_counted_and_ready_says_why(
    gateway_with_limit: Callable[[int, int], asyncio.Future[tuple[GatewayProcess, int, int]]],
) -> None:
    gateway, port, admin = await gateway_with_limit(128, 128)
    assert (await _admin(admin, "/-/ready"))[0] == 200
    clients = await _connect(port, 200)  # more than the worker has descriptors for
    try:
        line = await gateway.wait_for("cannot accept connections (EMFILE)", timeout=15)
        assert "refused since the last warning; open-file limit 128 (hard 128)" in line
        metrics = ""

        async def counted() -> bool:
            nonlocal metrics
            metrics = (await _admin(admin, "/metrics"))[1]
            # The paused accept loop retries every 0.5 s: refusals go on, warnings do not.
            return _refusals(metrics) >= 3

        for _ in range(40):  # workers fold their counters in once a second
            if await counted():
                break
            await asyncio.sleep(0.25)
        assert _refusals(metrics) >= 3
        status, body = await _admin(admin, "/-/ready")
        assert (status, "worker 0: out of file descriptors") == (503, json.loads(body)["reason"])
        # However many accepts were refused meanwhile, warnings are 10 s apart at least.
        warnings = [json.loads(x) for x in gateway.stderr_lines if "cannot accept connections" in x]
        times = [datetime.fromisoformat(w["ts"].replace("Z", "+00:00")) for w in warnings]
        assert all((b - a).total_seconds() >= 9.9 for a, b in itertools.pairwise(times))
        assert len(warnings) < _refusals(metrics)
    finally:
        _close(clients)
    # Service resumes once the clients are gone: their descriptors are free again.
    await gateway.wait_for("accepting connections again", timeout=15)
    fresh = await _connect(port, 1)
    try:
        assert await _get(*fresh[0]) == 200
    finally:
        _close(fresh)
    ready: list[int] = []

    async def is_ready() -> None:
        ready.append((await _admin(admin, "/-/ready"))[0])

    for _ in range(40):
        await is_ready()
        if ready[-1] == 200:
            break
        await asyncio.sleep(0.25)
    assert ready[-1] == 200
