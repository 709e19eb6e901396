"""The container image, built from the Dockerfile and run with podman (part of `make test`).

Two containers share a redis-server and an upstream on this machine (host network, loopback
addresses only): health check, a proxied request, a rate limit counted across both, a non-root
process, and a drain on SIGTERM that lets an in-flight request finish before the container
exits 0. Where containers cannot run (no podman, no user namespaces), the test is skipped and
the summary says why.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.image.podman import image_tag, run_async
from tests.support.polling import eventually
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.upstream import Upstream

ROOT = Path(__file__).resolve().parents[2]
IMAGE = image_tag(ROOT)

pytestmark = pytest.mark.image


async def podman(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, str]:
    return await run_async(["podman", "--runtime", "runc", *args], env=env, timeout=timeout)


class Container:
    """One gateway container with its own config, on the host network."""

    def __init__(self, env: dict[str, str], folder: Path, name: str, config: str) -> None:
        self.env = env
        self.name = f"{name}-{os.getpid()}"  # runs of other checkouts may be going on
        self.port, self.admin = free_port(), free_port()
        self.config = folder / f"{name}.yaml"
        self.config.write_text(config.format(port=self.port, admin=self.admin), encoding="utf-8")
        self.config.chmod(0o644)  # read by the container's non-root user

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Container:
        await podman(self.env, "rm", "--force", self.name)
        code, out = await podman(
            self.env,
            "run",
            "--detach",
            "--network",
            "host",
            "--name",
            self.name,
            "--env",
            f"ADMIN_LISTEN=127.0.0.1:{self.admin}",
            "--volume",
            f"{self.config}:/etc/gateway/gateway.yaml:ro",
            IMAGE,
        )
        assert code == 0, out
        async with asyncio.timeout(60), aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{self.admin}/-/ready") as response:
                        if response.status == 200:
                            return self
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)

    async def logs(self) -> str:
        return (await podman(self.env, "logs", self.name))[1]

    async def remove(self) -> None:
        await podman(self.env, "rm", "--force", "--time", "0", self.name)


Start = Callable[[str], Awaitable[Container]]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    tmp_path.chmod(0o755)  # the containers' non-root user reads the configs in it
    return tmp_path


@pytest.fixture
async def containers(
    podman_env: dict[str, str], folder: Path, redis_server: RedisServer, upstream: Upstream
) -> AsyncIterator[Start]:
    redis_server.cli("FLUSHALL")
    config = textwrap.dedent(
        f"""\
        listen: 127.0.0.1:{{port}}
        admin: {{{{listen: "127.0.0.1:{{admin}}"}}}}
        shutdown_timeout: 20s
        redis: {{{{url: "{redis_server.url}"}}}}
        upstreams:
          backend: {{{{targets: ["{upstream.url}"]}}}}
        policies:
          shared:
            rate_limit: {{{{algorithm: sliding_window, limit: 3, window: 1m, key: route}}}}
        routes:
          - name: limited
            match: {{{{path: /limited}}}}
            upstream: backend
            policies: [shared]
          - name: api
            match: {{{{path: /api}}}}
            upstream: backend
            strip_prefix: /api
        """
    )
    started: list[Container] = []

    async def start(name: str) -> Container:
        container = Container(podman_env, folder, f"gateway-test-{name}", config)
        started.append(container)
        return await container.start()

    yield start
    for container in started:
        await container.remove()


async def test_image_serves_shares_limits_runs_unprivileged_and_drains(
    containers: Start, upstream: Upstream
) -> None:
    first = await containers("one")
    second = await containers("two")
    env = first.env

    # The image's own HEALTHCHECK passes, and /-/health answers on the admin listener.
    code, out = await podman(env, "healthcheck", "run", first.name)
    assert code == 0, out

    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{first.admin}/-/health") as response:
            assert response.status == 200
        # A proxied request.
        async with session.get(first.url + "/api/hello?x=1") as response:
            assert response.status == 200
            assert (await response.json())["path"] == "/hello?x=1"
        # One limit of 3 per minute, counted in Redis across both containers.
        statuses = []
        for container in (first, second, first, second):
            async with session.get(container.url + "/limited") as response:
                statuses.append(response.status)
        assert statuses == [200, 200, 200, 429]

    # Not root, inside: the supervisor (pid 1) and its worker.
    code, out = await podman(env, "exec", first.name, "sh", "-c", "grep ^Uid: /proc/[0-9]*/status")
    assert code == 0, out
    uids = {line.split()[1] for line in out.splitlines()}
    assert uids == {"10001"}, out

    # SIGTERM drains: the request in flight is answered, then the container exits 0.
    async with aiohttp.ClientSession() as session:
        slow = asyncio.ensure_future(session.get(first.url + "/api/slow/1.5"))
        await eventually(lambda: upstream.hits["/slow/1.5"] > 0, "the slow request upstream")
        code, out = await podman(env, "kill", "--signal", "TERM", first.name)
        assert code == 0, out
        response = await slow
        assert response.status == 200
        assert await response.json() == {"slept": "1.5"}
        response.release()
    code, out = await podman(env, "wait", first.name)
    assert out.strip().splitlines()[-1] == "0", out
    assert "draining" in await first.logs()
