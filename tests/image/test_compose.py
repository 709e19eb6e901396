"""deploy/compose.yaml brought up by podman-compose (part of `make test`, with the image test).

Redis, the two gateway replicas and the demo upstream run on the compose network as a user runs
them, from the image the image test builds (built once per run) and a Redis image made locally
(no registry is reachable here). Over loopback: the README's curl lines (a MISS through one
replica, then a HIT through the other, once stored) and one rate limit counted across both replicas. Then
`down`, and nothing of the project is left. Skipped, saying why, where containers cannot run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.image.podman import REDIS, image_tag, redis_image, run_async
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "compose.yaml"
LIMIT = 100  # config.example.yaml's per-client: 100 a minute, on the routes used here

pytestmark = pytest.mark.image


def podman_compose() -> str | None:
    """The podman-compose of this virtualenv (the test extra), or one on PATH."""
    beside = Path(sys.executable).parent / "podman-compose"
    return str(beside) if beside.exists() else shutil.which("podman-compose")


class Project:
    """One compose project of deploy/compose.yaml, named per run, on ports of its own."""

    def __init__(self, env: dict[str, str], command: str) -> None:
        self.name = f"gateway-compose-test-{os.getpid()}"
        self.ports = (free_port(), free_port())
        self.command = command
        self.env = dict(
            env,
            GATEWAY_IMAGE=image_tag(ROOT),
            REDIS_IMAGE=REDIS,
            GATEWAY_1_PORT=f"127.0.0.1:{self.ports[0]}",
            GATEWAY_2_PORT=f"127.0.0.1:{self.ports[1]}",
        )

    @property
    def urls(self) -> tuple[str, str]:
        return tuple(f"http://127.0.0.1:{port}" for port in self.ports)  # type: ignore[return-value]

    async def compose(self, *args: str, timeout: float = 120) -> str:
        code, out = await run_async(
            [self.command, "-p", self.name, "-f", str(COMPOSE), *args],
            env=self.env,
            timeout=timeout,
        )
        assert code == 0, out[-4000:]
        return out

    async def left(self) -> list[str]:
        """What of the project still exists: containers, then its network."""
        _, out = await run_async(
            [
                "podman",
                "ps",
                "--all",
                "--quiet",
                "--filter",
                f"label=io.podman.compose.project={self.name}",
            ],
            env=self.env,
        )
        left = out.split()
        code, _ = await run_async(
            ["podman", "network", "exists", f"{self.name}_default"], env=self.env
        )
        return left + ([f"network {self.name}_default"] if code == 0 else [])


@pytest.fixture
async def project(podman_env: dict[str, str]) -> AsyncIterator[Project]:
    command = podman_compose()
    if command is None:
        pytest.skip("compose not tested: no podman-compose (`make install` installs it)")
    redis_image(podman_env)
    project = Project(podman_env, command)
    yield project
    if await project.left():  # the test failed before its own `down`
        await project.compose("down", "--timeout", "5")


async def test_compose_serves_the_readme_curls_and_shares_a_limit_across_replicas(
    project: Project,
) -> None:
    await project.compose("up", "--detach", "--no-build", timeout=180)
    statuses: dict[str, list[int]] = {url: [] for url in project.urls}

    async def get(session: aiohttp.ClientSession, url: str, path: str) -> aiohttp.ClientResponse:
        async with session.get(url + path) as response:
            await response.read()
            statuses[url].append(response.status)
            return response

    async with aiohttp.ClientSession() as session:
        # Both replicas up and reaching the upstream (Redis and the demo start meanwhile).
        for url in project.urls:
            async with asyncio.timeout(90):
                while True:
                    try:
                        if (await get(session, url, "/")).status == 200:
                            break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.5)

        # The README's curl lines: a MISS through replica 1, then a HIT through replica 2.
        first, second = project.urls
        response = await get(session, first, "/api/catalog")
        assert (response.status, response.headers["X-Cache"]) == (200, "MISS")
        # The entry is stored as the body finishes streaming, just after the client has it.
        async with asyncio.timeout(10):
            while (response := await get(session, second, "/api/catalog")).headers[
                "X-Cache"
            ] != "HIT":
                assert response.status == 200
                await asyncio.sleep(0.1)
        assert response.status == 200

        # per-client (100 a minute) counts the requests to both replicas together: alternating,
        # neither replica alone reaches 100, yet only 100 in all are admitted.
        for index in range(120):
            await get(session, project.urls[index % 2], "/")
    admitted = sum(status != 429 for seen in statuses.values() for status in seen)
    assert admitted == LIMIT, statuses
    assert all(seen.count(429) > 0 for seen in statuses.values()), statuses
    assert all(len(seen) <= LIMIT for seen in statuses.values()), statuses

    await project.compose("down", "--timeout", "5")
    assert await project.left() == []
