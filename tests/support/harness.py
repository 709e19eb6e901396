"""Gateways under test: in this process (fast, inspectable) or as a real `gateway run`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from gateway.admin.endpoints import admin_app
from gateway.app import Gateway
from gateway.config.loader import LoadedConfig, parse_config
from gateway.process.control import LocalControl
from gateway.process.server import listening_socket, public_server, serve, start_app
from gateway.registry import Registry
from gateway.runtime import Runtime
from gateway.store import Store
from gateway.store.memory import MemoryStore
from gateway.telemetry.logs import AccessLog
from gateway.telemetry.metrics import Metrics


class InProcessGateway:
    """The real app on real sockets (public and admin), inside the test's event loop."""

    def __init__(self, loaded: LoadedConfig, store: Store, registry: Registry) -> None:
        self.loaded = loaded
        self.store = store
        self.registry = registry
        self.log_file = tempfile.NamedTemporaryFile(prefix="gw-access-", delete=False)  # noqa: SIM115
        self.metrics = Metrics()
        self.runtime = Runtime(loaded, store, self.metrics)
        self.gateway = Gateway(self.runtime, AccessLog(fd=self.log_file.fileno()))
        self.control = LocalControl(self.gateway, registry)
        self.url = ""
        self.admin_url = ""
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> InProcessGateway:
        await self.runtime.start()
        sock = listening_socket("127.0.0.1:0", reuse_port=False)
        scheme = "https" if self.loaded.model.tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
        self._server = public_server(self.gateway, self.loaded.model)
        self.control.listener = self._server
        await serve(self._server, sock)
        admin_sock = listening_socket("127.0.0.1:0", reuse_port=False)
        self.admin_url = f"http://127.0.0.1:{admin_sock.getsockname()[1]}"
        token = self.loaded.model.admin.token
        self._admin = await start_app(
            admin_app(
                self.control, self.registry, token=token.get_secret_value() if token else None
            ),
            sock=admin_sock,
        )
        self.session = aiohttp.ClientSession(auto_decompress=False)
        return self

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        assert self.session is not None
        # encoded=True: the path goes out exactly as written (tests send odd paths on purpose).
        url = URL(self.url + path, encoded=True)
        return self.session.request(method, url, allow_redirects=False, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        assert self.session is not None
        return self.session.request(method, self.admin_url + path, **kwargs)

    def access_lines(self) -> list[dict[str, Any]]:
        self.gateway.access_log.flush() if self.gateway.access_log else None
        with open(self.log_file.name, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        await self._server.shutdown(1)
        await self._admin.cleanup()
        await self.gateway.runtime.stop()
        self.log_file.close()
        os.unlink(self.log_file.name)


def load(text: str, upstream_url: str = "", file: str = "test.yaml", **env: str) -> LoadedConfig:
    """Parse a test config; `UPSTREAM_URL` in it becomes the test upstream's address."""
    return parse_config(text.replace("UPSTREAM_URL", upstream_url), file, env=env)


async def start_gateway(
    text: str, upstream_url: str = "", store: Store | None = None, file: str = "test.yaml"
) -> InProcessGateway:
    loaded = load(text, upstream_url, file)
    return await InProcessGateway(loaded, store or MemoryStore(), Registry.discover()).start()


class GatewayProcess:
    """`gateway run` as a child process (supervisor and workers), for signals and workers."""

    def __init__(
        self,
        config_path: str,
        *args: str,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.config_path = config_path
        self.args = args
        self.preexec_fn = preexec_fn
        self.env = dict(os.environ, **(env or {}))
        self.process: asyncio.subprocess.Process | None = None
        self.stderr_lines: list[str] = []
        self._serving = asyncio.Event()
        self._new_line = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, wait: bool = True) -> GatewayProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "run",
            "-c",
            self.config_path,
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            start_new_session=True,
            preexec_fn=self.preexec_fn,
        )
        self.stdout_lines: list[str] = []
        self._reader = asyncio.ensure_future(self._read())
        self._out_reader = asyncio.ensure_future(self._read_stdout())
        if wait:
            async with asyncio.timeout(60):
                waiter = asyncio.ensure_future(self._serving.wait())
                done, _ = await asyncio.wait(
                    {waiter, asyncio.ensure_future(self.process.wait())},
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if waiter not in done:
                    waiter.cancel()
                    raise RuntimeError("gateway exited:\n" + "".join(self.stderr_lines))
        return self

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace")
            self.stderr_lines.append(line)
            if "worker(s); admin on" in line:
                self._serving.set()
            async with self._new_line:
                self._new_line.notify_all()

    async def wait_for(self, text: str, after: int = 0, timeout: float = 30) -> str:
        """The first stderr line (from index `after`) containing `text`, as soon as it appears."""
        async with asyncio.timeout(timeout), self._new_line:
            while True:
                for line in self.stderr_lines[after:]:
                    if text in line:
                        return line
                await self._new_line.wait()

    def worker_pids(self) -> list[int]:
        """PIDs of the supervisor's worker processes (children, from /proc)."""
        assert self.process is not None
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                pids.append(int(entry))
        return sorted(pids)

    async def _read_stdout(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.stdout_lines.append(raw.decode(errors="replace"))

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        # The pipes too: a process it left behind (a stray worker) would hold them open.
        async with asyncio.timeout(timeout):
            code = await self.process.wait()
            if self._reader is not None:
                await self._reader
            await self._out_reader
        return code

    async def stop(self) -> int | None:
        if self.process is None or self.process.returncode is not None:
            return self.process.returncode if self.process else None
        self.signal(signal.SIGTERM)
        try:
            return await self.wait(60)
        except TimeoutError:
            os.killpg(self.process.pid, signal.SIGKILL)
            return await self.wait(10)

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)


__all__ = ["GatewayProcess", "InProcessGateway", "load", "start_gateway", "web"]
