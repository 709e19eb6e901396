"""`gateway loadtest` end to end: a real gateway process, a real upstream, Locust as a library.

Each run is a few seconds on loopback; the gateway runs the same file with `LIMIT` set to what
the deployment enforces, while `gateway loadtest` reads the file with the declared `LIMIT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.harness import GatewayProcess
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.upstream import Upstream

CONFIG = """
listen: 127.0.0.1:${PORT}
admin: {listen: "127.0.0.1:${ADMIN_PORT}"}
redis: {url: "memory://"}
access_log: false
upstreams:
  backend: {targets: ["${UPSTREAM}"]}
routes:
  - name: limited
    match: {path: /limited}
    upstream: backend
    policies:
      - rate_limit: {algorithm: sliding_window, limit: ${LIMIT}, window: 1s, key: header.X-Api-Key}
  - name: cached
    match: {path: /cached, methods: [GET, HEAD]}
    upstream: backend
    policies:
      - cache: {ttl: 30s}
  - name: account
    match: {path: /account}
    upstream: backend
    policies:
      - session: {cookie: sid, bearer: true, forward: {user_id: X-User-Id}}
  - name: plain
    match: {path: /}
    upstream: backend
"""
# 12 requests/s over 2 keys against 3 per second per key: about half are refused.
PLAN = """
defaults: {p99_ms: 5000}
routes:
  limited: {rate: 12, keys: 2}
"""
ROUTES = ("limited", "cached", "account", "plain")


class Deployment:
    def __init__(self, tmp: Path, upstream: Upstream) -> None:
        self.config = tmp / "gateway.yaml"
        self.config.write_text(CONFIG)
        self.plan = tmp / "plan.yaml"
        self.plan.write_text(PLAN)
        self.reports = tmp / "reports"
        port, admin = free_port(), free_port()
        self.host = f"http://127.0.0.1:{port}"
        self.env = {"PORT": str(port), "ADMIN_PORT": str(admin), "UPSTREAM": upstream.url}
        self.gateway: GatewayProcess | None = None

    async def start(self, limit: int) -> None:
        env = dict(self.env, LIMIT=str(limit))
        self.gateway = await GatewayProcess(str(self.config), env=env).start()

    async def loadtest(
        self, *args: str, limit: int = 3, timeout: float = 150
    ) -> tuple[int, str, str]:
        argv = ["-c", str(self.config), "--host", self.host, "--plan", str(self.plan)]
        argv += ["--duration", "5s", "--rate", "36", "--users", "4", "--sessions", "3"]
        argv += ["--reports", str(self.reports), *args]
        return await run_cli(*argv, env=dict(self.env, LIMIT=str(limit)), timeout=timeout)


async def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "loadtest", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, **(env or {})), start_new_session=True,
    )  # fmt: skip
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        os.killpg(process.pid, 9)
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def deployment(tmp_path: Path, upstream: Upstream) -> AsyncIterator[Deployment]:
    deployed = Deployment(tmp_path, upstream)
    yield deployed
    if deployed.gateway is not None:
        await deployed.gateway.stop()


def stats_rows(reports: Path) -> list[dict[str, str]]:
    """The rows of Locust's `loadtest_stats.csv`."""
    with open(reports / "loadtest_stats.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def route_lines(out: str) -> dict[str, str]:
    return {
        line.split()[0]: line
        for line in out.splitlines()
        if line.split()[:1] and line.split()[0] in ROUTES and "  " in line
    }


async def test_a_deployment_that_enforces_the_file_passes(deployment: Deployment) -> None:
    await deployment.start(limit=3)
    code, out, err = await deployment.loadtest()
    assert code == 0, out + err
    lines = route_lines(out)
    assert set(lines) == set(ROUTES), out
    assert all(line.rstrip().endswith("ok") for line in lines.values()), out
    assert "429 " in lines["limited"], out
    assert "hits " in lines["cached"], out
    assert "401 unknown 100%" in lines["account"], out
    assert "401 valid 0%" in lines["account"], out
    for name in ("loadtest.html", "loadtest_stats.csv", "loadtest_failures.csv", "verdict.txt"):
        assert (deployment.reports / name).is_file(), name
    assert "<html" in (deployment.reports / "loadtest.html").read_text().lower()
    names = {row["Name"] for row in stats_rows(deployment.reports)}
    assert set(ROUTES) <= names


async def test_a_looser_limit_than_the_file_fails_naming_the_route(deployment: Deployment) -> None:
    await deployment.start(limit=100)  # the deployment does not enforce the file's 3/s
    code, out, err = await deployment.loadtest(limit=3)
    assert code == 1, out + err
    fails = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert len(fails) == 1, out
    assert fails[0].startswith("FAIL limited: admitted"), out


async def test_processes_run_a_master_and_workers_and_sum_their_stats(
    deployment: Deployment,
) -> None:
    await deployment.start(limit=3)
    code, out, err = await deployment.loadtest("--processes", "2", timeout=240)
    assert code == 0, out + err
    assert "2 workers connected" in out, out
    lines = route_lines(out)
    total = sum(int(line.split()[1]) for line in lines.values())
    aggregated = next(r for r in stats_rows(deployment.reports) if r["Name"] == "Aggregated")
    # The master's stats are the workers' summed, and each answer reached the verdict.
    assert int(aggregated["Request Count"]) == total, out
    assert total >= 0.5 * 36 * 5, out  # both workers' users ran: one alone offers half


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-c", "no-such.yaml", "--host", "http://127.0.0.1:1"], "no-such.yaml: cannot read"),
        (
            ["--rate", "fast", "--host", "http://127.0.0.1:1"],
            "--rate: expected a positive number, got 'fast'",
        ),
        (["--host", "http://127.0.0.1:PORT"], "cannot connect to http://127.0.0.1:"),
    ],
)
async def test_bad_arguments_exit_2_with_one_clear_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    env = {"PORT": "1", "ADMIN_PORT": "2", "UPSTREAM": "http://127.0.0.1:3", "LIMIT": "3"}
    args = [a.replace("PORT", str(free_port())) for a in args]
    if "-c" not in args:
        args = ["-c", str(config), *args]
    code, out, err = await run_cli(*args, env=env)
    assert code == 2, out + err
    assert "Traceback" not in err
    assert message in err.strip().splitlines()[-1], err


async def test_web_serves_locusts_ui_during_the_run(deployment: Deployment) -> None:
    await deployment.start(limit=3)
    port = free_port()
    run = asyncio.ensure_future(deployment.loadtest("--web", "--web-port", str(port)))
    seen: list[int] = []
    async with aiohttp.ClientSession() as client:
        for _ in range(300):  # bounded: 30 s
            with contextlib.suppress(aiohttp.ClientError):
                async with client.get(f"http://127.0.0.1:{port}/") as answer:
                    seen.append(answer.status)
                    if answer.status == 200 and "locust" in (await answer.text()).lower():
                        break
            await asyncio.sleep(0.1)
    code, out, err = await run
    assert seen[-1:] == [200], out + err
    assert code == 0, out + err
    assert f"Locust's web UI: http://127.0.0.1:{port}" in out


SESSION_ONLY = """
listen: 127.0.0.1:${PORT}
admin: {listen: "127.0.0.1:${ADMIN_PORT}"}
redis: {url: "${REDIS_URL}"}
access_log: false
upstreams:
  backend: {targets: ["${UPSTREAM}"]}
routes:
  - name: account
    match: {path: /account}
    upstream: backend
    policies:
      - session: {cookie: sid, key_prefix: "app:s:", require: {role: [admin]}}
      - rate_limit: {algorithm: token_bucket, rate: 2/s, burst: 3, key: session.user_id}
"""


async def test_sessions_are_written_to_redis_as_an_app_does_and_removed_after(
    tmp_path: Path, upstream: Upstream, redis_server: RedisServer, redis_url: str
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(SESSION_ONLY)
    port, admin = free_port(), free_port()
    env = {
        "PORT": str(port),
        "ADMIN_PORT": str(admin),
        "UPSTREAM": upstream.url,
        "REDIS_URL": redis_url,
    }
    gateway = await GatewayProcess(str(config), env=env).start()
    try:
        argv = ["-c", str(config), "--host", f"http://127.0.0.1:{port}", "--duration", "4s"]
        argv += [
            "--rate",
            "20",
            "--users",
            "4",
            "--sessions",
            "4",
            "--reports",
            str(tmp_path / "r"),
        ]
        code, out, err = await run_cli(*argv, env=env, timeout=120)
    finally:
        await gateway.stop()
    assert code == 0, out + err
    line = route_lines(out)["account"]
    # Each session is its own bucket (session.user_id): 4 x (3 + 2/s x 4 s) at most admitted.
    assert "401 valid 0%" in line, out
    assert "429 " in line, out
    assert redis_server.cli("KEYS", "app:s:*") == ""  # removed after the run
