"""`gateway run` as operators run it: workers, reloads, signals, crashes, admin, memory."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from gateway.process.server import listening_socket, worker_socket
from tests.support.harness import GatewayProcess
from tests.support.polling import eventually
from tests.support.ports import free_port
from tests.support.upstream import Upstream, pattern

ProcessFactory = Callable[..., "asyncio.Future[GatewayProcess]"]


def write_config(
    path: Path, upstream: str, port: int, admin: int, extra: str = "", routes: str = ""
) -> None:
    path.write_text(
        textwrap.dedent(
            f"""\
            listen: 127.0.0.1:{port}
            admin: {{listen: 127.0.0.1:{admin}}}
            shutdown_timeout: 10s
            upstreams:
              backend: {{targets: ["{upstream}"]}}
            routes:
              - {{name: api, match: {{path: /api}}, upstream: backend}}
            """
        )
        + routes
        + extra
    )


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    started: list[GatewayProcess] = []

    async def start(config: Path, *args: str, env: dict[str, str] | None = None) -> GatewayProcess:
        process = await GatewayProcess(str(config), *args, env=env).start()
        started.append(process)
        return process

    yield start
    for process in started:
        await process.stop()


async def get(url: str, **kwargs: object) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, **kwargs) as response:  # type: ignore[arg-type]
        return response.status, await response.read()


async def test_workers_serve_one_port_and_metrics_sum_them(
    tmp_path: Path, upstream: Upstream, redis_url: str, running: Callable[..., object]
) -> None:
    port, admin = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    write_config(
        config, upstream.url, port, admin, extra=f"workers: 2\nredis: {{url: '{redis_url}'}}\n"
    )
    gateway: GatewayProcess = await running(config)  # type: ignore[operator]
    assert len(gateway.worker_pids()) == 2
    connector = aiohttp.TCPConnector(force_close=True)  # new connections spread over workers
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(40):
            async with session.get(f"http://127.0.0.1:{port}/api/x") as response:
                assert response.status == 200
    status, body = await get(f"http://127.0.0.1:{admin}/metrics")
    assert status == 200
    assert 'gateway_requests_total{route="api",status="200"} 40.0' in body.decode()


async def test_reload_applies_a_good_config_and_refuses_a_bad_one(
    tmp_path: Path, upstream: Upstream, redis_url: str, running: Callable[..., object]
) -> None:
    port, admin = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    extra = f"workers: 2\nredis: {{url: '{redis_url}'}}\n"
    write_config(config, upstream.url, port, admin, extra=extra)
    gateway: GatewayProcess = await running(config)  # type: ignore[operator]
    assert (await get(f"http://127.0.0.1:{port}/new/x"))[0] == 404

    new_route = "  - {name: new, match: {path: /new}, upstream: backend}\n"
    write_config(config, upstream.url, port, admin, extra=extra, routes=new_route)
    mark = len(gateway.stderr_lines)
    gateway.signal(signal.SIGHUP)
    await gateway.wait_for("config reloaded in 2 worker(s)", after=mark)
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(20):  # every worker serves the new route
            async with session.get(f"http://127.0.0.1:{port}/new/x") as response:
                assert response.status == 200

    write_config(
        config,
        upstream.url,
        port,
        admin,
        extra=extra + "max_request_body: lots\n",
        routes=new_route,
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{admin}/-/reload") as response,
    ):
        assert response.status == 400
        body = await response.json()
    assert body["error"] == "invalid_config"
    assert body["problems"] == [f"{config}:11: max_request_body: invalid size 'lots'"]
    assert (await get(f"http://127.0.0.1:{port}/new/x"))[0] == 200  # the old config serves on


async def test_sigterm_finishes_in_flight_requests_then_exits_zero(
    tmp_path: Path, upstream: Upstream, running: Callable[..., object]
) -> None:
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(text="finished")

    upstream.route("/api/slow", slow)
    port, admin = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    write_config(config, upstream.url, port, admin)
    gateway: GatewayProcess = await running(config)  # type: ignore[operator]
    in_flight = asyncio.ensure_future(get(f"http://127.0.0.1:{port}/api/slow"))
    await arrived.wait()
    mark = len(gateway.stderr_lines)
    gateway.signal(signal.SIGTERM)
    await gateway.wait_for("draining", after=mark)
    release.set()
    assert await in_flight == (200, b"finished")
    assert await gateway.wait() == 0


async def test_a_crashed_worker_is_replaced(
    tmp_path: Path, upstream: Upstream, running: Callable[..., object]
) -> None:
    port, admin = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    write_config(config, upstream.url, port, admin)
    gateway: GatewayProcess = await running(config)  # type: ignore[operator]
    (old,) = gateway.worker_pids()
    mark = len(gateway.stderr_lines)
    os.kill(old, signal.SIGKILL)
    await gateway.wait_for("replacing it", after=mark)
    await gateway.wait_for("serving", after=mark)
    # /proc is read while processes come and go (the killed one lingers until reaped).
    await eventually(lambda: len(set(gateway.worker_pids()) - {old}) == 1, "one new worker")
    assert (await get(f"http://127.0.0.1:{port}/api/x"))[0] == 200
    _, body = await get(f"http://127.0.0.1:{admin}/metrics")
    assert "gateway_worker_restarts_total 1.0" in body.decode()


async def test_admin_endpoints_and_token(
    tmp_path: Path, upstream: Upstream, running: Callable[..., object]
) -> None:
    port, admin = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    write_config(config, upstream.url, port, admin)
    text = config.read_text().replace(
        f"admin: {{listen: 127.0.0.1:{admin}}}",
        f"admin: {{listen: 127.0.0.1:{admin}, token: '${{TOKEN}}'}}",
    )
    config.write_text(text)
    gateway: GatewayProcess = await running(config, env={"TOKEN": "s3cret"})  # type: ignore[operator]
    base = f"http://127.0.0.1:{admin}"
    assert (await get(base + "/-/health"))[0] == 200  # liveness needs no token
    assert (await get(base + "/-/ready"))[0] == 401
    auth = {"Authorization": "Bearer s3cret"}
    assert (await get(base + "/-/ready", headers=auth))[0] == 200
    status, body = await get(base + "/-/routes", headers=auth)
    assert status == 200
    assert b'"name": "api"' in body
    # The admin endpoints are not on the public listener.
    assert (await get(f"http://127.0.0.1:{port}/-/ready", headers=auth))[0] == 404
    assert "s3cret" not in gateway.stderr


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


async def test_large_bodies_stream_without_growing_the_worker(
    tmp_path: Path, upstream: Upstream, running: Callable[..., object]
) -> None:
    port, admin = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    write_config(
        config,
        upstream.url,
        port,
        admin,
        extra="max_request_body: 2GiB\n",
        routes="  - {name: all, match: {path: /}, upstream: backend}\n",
    )
    gateway: GatewayProcess = await running(config)  # type: ignore[operator]
    (worker,) = gateway.worker_pids()
    assert (await get(f"http://127.0.0.1:{port}/api/warmup"))[0] == 200
    before = _peak_rss_kib(worker)
    size = 300 * 1024 * 1024
    async with aiohttp.ClientSession() as session:
        received = 0
        async with session.get(f"http://127.0.0.1:{port}/bytes/{size}?length=1") as response:
            async for chunk in response.content.iter_chunked(1 << 20):
                received += len(chunk)
        assert received == size
        block = pattern(1 << 20)

        async def body() -> AsyncIterator[bytes]:
            for _ in range(size >> 20):
                yield block

        async with session.post(f"http://127.0.0.1:{port}/upload", data=body()) as response:
            seen = await response.json()
    expected = hashlib.sha256(block * (size >> 20)).hexdigest()
    assert seen.get("body_sha256") == expected, seen
    grown_mib = (_peak_rss_kib(worker) - before) / 1024
    print(f"worker peak RSS grew by {grown_mib:.1f} MiB")
    assert grown_mib < 16, f"worker peak RSS grew by {grown_mib:.1f} MiB for 2x300 MiB"


# -- start-up: one gateway per port, nothing left behind (issue 21, item 6) ---------------------


def _listening(port: int) -> bool:
    """Whether anything accepts connections on 127.0.0.1:`port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return False
    return True


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has ended
    except FileNotFoundError:
        return True


async def _failed_start(config: Path, run_dir: Path) -> tuple[int, str]:
    """Run a `gateway run` that must fail; its exit code and stderr. Whatever it leaves
    behind is killed afterwards (its process group), so a failing test stays contained."""
    os.mkdir(run_dir)
    process = GatewayProcess(str(config), env={"TMPDIR": str(run_dir)})
    await process.start(wait=False)
    assert process.process is not None
    try:
        code = await process.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.process.pid, signal.SIGKILL)
    return code, process.stderr


@pytest.mark.parametrize("admin_too", [True, False], ids=["same-config", "own-admin-port"])
async def test_a_second_gateway_on_the_same_port_refuses_and_leaves_nothing(
    tmp_path: Path, upstream: Upstream, running: Callable[..., object], admin_too: bool
) -> None:
    port, admin = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    write_config(config, upstream.url, port, admin)
    first: GatewayProcess = await running(config)  # type: ignore[operator]
    second = tmp_path / "second.yaml"
    write_config(second, upstream.url, port, admin if admin_too else free_port())

    code, stderr = await _failed_start(second, tmp_path / "run")

    assert code == 1
    assert f"cannot serve 127.0.0.1:{port}: another gateway holds port {port}" in stderr
    assert os.listdir(tmp_path / "run") == []  # the run folder is gone
    assert (await get(f"http://127.0.0.1:{port}/api/x"))[0] == 200
    assert await first.stop() == 0
    # Nothing of the second one serves on: not a worker of it with its own config.
    assert not _listening(port)


async def test_a_failed_start_names_the_address_and_stops_what_it_started(
    tmp_path: Path, upstream: Upstream
) -> None:
    port, admin = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    write_config(config, upstream.url, port, admin)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", admin))
        taken.listen()
        code, stderr = await _failed_start(config, tmp_path / "run")
    assert code == 1
    assert f"cannot serve 127.0.0.1:{admin} (the admin listener): " in stderr
    assert f"127.0.0.1:{port}" not in stderr
    assert os.listdir(tmp_path / "run") == []
    assert not _listening(port)


async def test_workers_end_with_a_killed_supervisor(
    tmp_path: Path, upstream: Upstream, redis_url: str, running: Callable[..., object]
) -> None:
    port, admin = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    write_config(
        config, upstream.url, port, admin, extra=f"workers: 2\nredis: {{url: '{redis_url}'}}\n"
    )
    gateway: GatewayProcess = await running(config)  # type: ignore[operator]
    workers = gateway.worker_pids()
    assert len(workers) == 2
    gateway.signal(signal.SIGKILL)
    try:
        await eventually(lambda: all(_gone(pid) for pid in workers), "workers to end")
    finally:
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not _listening(port)


# -- `--workers auto` (item 8) ------------------------------------------------------------------


async def test_workers_auto_on_the_command_line_starts_one_per_cpu(
    tmp_path: Path, upstream: Upstream, redis_url: str, running: Callable[..., object]
) -> None:
    port, admin = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    write_config(config, upstream.url, port, admin, extra=f"redis: {{url: '{redis_url}'}}\n")
    gateway: GatewayProcess = await running(config, "--workers", "auto")  # type: ignore[operator]
    assert len(gateway.worker_pids()) == (os.cpu_count() or 1)
    assert f"with {os.cpu_count() or 1} worker(s)" in gateway.stderr


# -- requests cut off by shutdown_timeout (item 9) ----------------------------------------------


async def test_requests_cut_off_by_shutdown_timeout_are_logged(
    tmp_path: Path, upstream: Upstream, running: Callable[..., object]
) -> None:
    arrived: list[str] = []
    both = asyncio.Event()
    never = asyncio.Event()

    async def stuck(request: web.Request) -> web.Response:
        arrived.append(request.path)
        if len(arrived) == 2:
            both.set()
        await never.wait()
        return web.Response(text="too late")

    upstream.route("/api/stuck", stuck)
    port, admin = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    write_config(config, upstream.url, port, admin)
    config.write_text(config.read_text().replace("shutdown_timeout: 10s", "shutdown_timeout: 1s"))
    gateway: GatewayProcess = await running(config)  # type: ignore[operator]
    cut = [asyncio.ensure_future(get(f"http://127.0.0.1:{port}/api/stuck")) for _ in range(2)]
    await both.wait()
    gateway.signal(signal.SIGTERM)
    assert await gateway.wait() == 0
    for request in cut:
        with pytest.raises(aiohttp.ClientError):
            await request
    never.set()
    assert "shutdown_timeout (1.0s) reached: 2 request(s) still in progress abandoned" in (
        gateway.stderr
    )
    lines = [json.loads(line) for line in gateway.stdout_lines]
    abandoned = [line for line in lines if line["path"] == "/api/stuck"]
    assert len(abandoned) == 2
    for line in abandoned:
        assert line["status"] == 0
        assert line["bytes"] == 0
        assert line["route"] == "api"
        assert line["duration_ms"] >= 1000


# -- reload logging (item 10) -------------------------------------------------------------------


async def test_refused_reloads_are_logged_alike_and_restart_warnings_compare_with_what_runs(
    tmp_path: Path, upstream: Upstream, running: Callable[..., object]
) -> None:
    port, admin = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    write_config(config, upstream.url, port, admin)
    gateway: GatewayProcess = await running(config)  # type: ignore[operator]
    good = config.read_text()

    config.write_text(good + "max_request_body: lots\n")
    mark = len(gateway.stderr_lines)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{admin}/-/reload") as response,
    ):
        assert response.status == 400
    by_admin = await gateway.wait_for("refused", after=mark, timeout=10)
    mark = len(gateway.stderr_lines)
    gateway.signal(signal.SIGHUP)
    by_signal = await gateway.wait_for("refused", after=mark, timeout=10)
    shape = "reload ({}) refused, still serving the previous config:\\n{}:8: max_request_body"
    assert shape.format("POST /-/reload", config) in by_admin
    assert shape.format("SIGHUP", config) in by_signal

    # A new listen waits for a restart; the running one put back has nothing to wait for.
    other = free_port()
    config.write_text(good.replace(f"listen: 127.0.0.1:{port}", f"listen: 127.0.0.1:{other}"))
    mark = len(gateway.stderr_lines)
    gateway.signal(signal.SIGHUP)
    await gateway.wait_for("config reloaded in 1 worker(s) (SIGHUP)", after=mark)
    assert "changes to listen take effect after a restart" in "".join(gateway.stderr_lines[mark:])

    config.write_text(good)
    mark = len(gateway.stderr_lines)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{admin}/-/reload") as response,
    ):
        assert (await response.json())["warnings"] == []
    await gateway.wait_for("config reloaded in 1 worker(s) (POST /-/reload)", after=mark)
    assert "after a restart" not in "".join(gateway.stderr_lines[mark:])


# -- a starting worker holds no connection (found by the soak's gateway restart, issue 20) ------


def test_a_starting_workers_socket_takes_no_connection_until_it_serves() -> None:
    """The supervisor binds each worker's socket and the worker listens once it serves: until
    then connections go to the workers that serve (or are refused), never into a queue that
    nobody accepts from while the worker starts."""
    serving = listening_socket("127.0.0.1:0", reuse_port=True)
    port = serving.getsockname()[1]
    starting = worker_socket(f"127.0.0.1:{port}")
    try:
        assert not starting.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        serving.setblocking(True)
        serving.settimeout(5)
        for _ in range(32):  # the kernel would spread these over both if `starting` listened
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                accepted, _ = serving.accept()
                accepted.close()
        serving.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        starting.listen(8)  # what the worker's server does once it serves
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        serving.close()
        starting.close()
