"""The supervisor: starts N workers on one port, replaces crashed ones, coordinates reloads,
serves the admin listener, and drains everything on SIGTERM.

Workers are separate interpreters (`python -m gateway.process.worker`), so a worker that dies takes
nothing else with it. Each has a private control socket (a unix socket in a 0700 directory)
through which the supervisor asks for readiness, policy admin calls and two-phase reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from gateway.admin.endpoints import admin_app
from gateway.config.loader import LoadedConfig, load_config
from gateway.errors import ConfigError, ConfigProblem
from gateway.process.server import listening_socket, start_app
from gateway.registry import Registry

log = logging.getLogger("gateway.supervisor")

_RESTART_ONLY = ("listen", "redirect_http", "workers", "admin", "redis", "client")


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


class Supervisor:
    """Runs the workers for one config file until told to stop."""

    def __init__(
        self,
        loaded: LoadedConfig,
        registry: Registry,
        *,
        workers: int | None = None,
        log_level: str = "info",
        log_format: str = "json",
    ) -> None:
        self.loaded = loaded
        self.registry = registry
        self.count = workers or loaded.workers
        self.log_args = ["--log-level", log_level, "--log-format", log_format]
        self.rundir = tempfile.mkdtemp(prefix="gateway-")
        os.chmod(self.rundir, 0o700)
        self.metrics_dir = os.path.join(self.rundir, "metrics")
        os.mkdir(self.metrics_dir)
        self.text_path = os.path.join(self.rundir, "config.yaml")
        self.workers = [
            WorkerHandle(i, os.path.join(self.rundir, f"worker-{i}.sock"))
            for i in range(self.count)
        ]
        self.stopping = False
        self._reload_lock = asyncio.Lock()
        self.registry_metrics = CollectorRegistry()
        self.reloads = Counter(
            "gateway_config_reloads_total",
            "Config reloads by result.",
            ["result"],
            registry=self.registry_metrics,
        )
        self.restarts = Counter(
            "gateway_worker_restarts_total",
            "Workers replaced after they died.",
            registry=self.registry_metrics,
        )

    # -- lifecycle ---------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self._sighup()))
        # Fail fast, with one clear message, when the public port is taken.
        listening_socket(self.loaded.model.listen, reuse_port=True).close()
        if self.loaded.model.redirect_http is not None:
            listening_socket(self.loaded.model.redirect_http, reuse_port=True).close()
        self._write_text(self.loaded.text)
        try:
            await asyncio.gather(*(self._spawn(worker) for worker in self.workers))
        except RuntimeError as exc:
            log.error("%s", exc)
            await self._stop_workers()
            return 1
        model = self.loaded.model
        token = model.admin.token.get_secret_value() if model.admin.token else None
        admin = await start_app(
            admin_app(SupervisorControl(self), self.registry, token=token),
            listen=model.admin.listen,
        )
        monitors = [asyncio.ensure_future(self._monitor(worker)) for worker in self.workers]
        log.info(
            "serving %s with %d worker(s); admin on %s",
            model.listen,
            self.count,
            model.admin.listen,
        )
        await stop.wait()
        self.stopping = True
        log.info("stopping: draining workers (up to %ss)", model.shutdown_timeout)
        await self._stop_workers()
        for monitor in monitors:
            monitor.cancel()
        await admin.cleanup()
        for worker in self.workers:
            if worker.session is not None:
                await worker.session.close()
        shutil.rmtree(self.rundir, ignore_errors=True)
        return 0

    def _write_text(self, text: str) -> None:
        temp = self.text_path + ".new"
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, self.text_path)

    async def _spawn(self, worker: WorkerHandle) -> None:
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=self.metrics_dir)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(worker.control)
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.process.worker",
            "--config-text",
            self.text_path,
            "--file",
            self.loaded.file,
            "--control",
            worker.control,
            "--ready-fd",
            str(write_fd),
            *self.log_args,
            env=env,
            pass_fds=(write_fd,),
        )
        os.close(write_fd)
        worker.started = time.monotonic()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb")
        )
        try:
            async with asyncio.timeout(60):
                line = await reader.readline()
        finally:
            transport.close()
        if line.strip() != b"ready":
            code = await worker.process.wait()
            raise RuntimeError(f"worker {worker.index} failed to start (exit code {code})")

    async def _monitor(self, worker: WorkerHandle) -> None:
        backoff = 0.1
        while True:
            process = worker.process
            if process is None:
                return
            code = await process.wait()
            mark_process_dead(process.pid, self.metrics_dir)  # type: ignore[no-untyped-call]
            if self.stopping:
                return
            log.error(
                "worker %d (pid %d) exited with %s; replacing it", worker.index, process.pid, code
            )
            self.restarts.inc()
            if time.monotonic() - worker.started < 10:
                await asyncio.sleep(backoff)  # crash loop: do not spin
                backoff = min(backoff * 2, 10.0)
            else:
                backoff = 0.1
            try:
                await self._spawn(worker)
            except (RuntimeError, TimeoutError, OSError) as exc:
                log.error("restarting worker %d failed: %s", worker.index, exc)

    async def _stop_workers(self) -> None:
        timeout = self.loaded.model.shutdown_timeout + 10
        alive = [w.process for w in self.workers if w.alive]
        for process in alive:
            if process is not None:
                process.send_signal(signal.SIGTERM)
        for process in alive:
            if process is None:
                continue
            try:
                async with asyncio.timeout(timeout):
                    await process.wait()
            except TimeoutError:
                log.error("worker pid %d did not stop in time; killing it", process.pid)
                process.kill()
                await process.wait()

    async def _sighup(self) -> None:
        try:
            warnings = await self.reload()
        except ConfigError as exc:
            log.error("reload refused, still serving the previous config:\n%s", exc)
        else:
            for warning in warnings:
                log.warning("%s", warning)

    # -- reload -----------------------------------------------------------------------------
    async def reload(self) -> list[str]:
        """Validate the file, prepare it in every worker, then commit everywhere (or nowhere)."""
        async with self._reload_lock:
            try:
                loaded = load_config(self.loaded.file, registry=self.registry)
                await self._prepare_all(loaded)
            except ConfigError:
                self.reloads.labels("refused").inc()
                raise
            await asyncio.gather(
                *(w.call("POST", "/-/internal/commit") for w in self.workers if w.alive)
            )
            self._write_text(loaded.text)
            warnings = list(loaded.warnings)
            changed = [
                key
                for key in _RESTART_ONLY
                if getattr(loaded.model, key) != getattr(self.loaded.model, key)
            ]
            if changed:
                warnings.append(f"changes to {', '.join(changed)} take effect after a restart")
            self.loaded = loaded
            self.reloads.labels("ok").inc()
            log.info("config reloaded in %d worker(s)", sum(w.alive for w in self.workers))
            return warnings

    async def _prepare_all(self, loaded: LoadedConfig) -> None:
        payload = {"text": loaded.text, "file": loaded.file}
        alive = [w for w in self.workers if w.alive]
        results = await asyncio.gather(
            *(w.call("POST", "/-/internal/prepare", payload) for w in alive),
            return_exceptions=True,
        )
        problems: list[ConfigProblem] = []
        for worker, result in zip(alive, results, strict=True):
            if isinstance(result, BaseException):
                problems.append(
                    ConfigProblem(loaded.file, None, "", f"worker {worker.index}: {result}")
                )
            elif result[0] != 200:
                problems.extend(
                    ConfigProblem(loaded.file, None, "", text)
                    for text in result[1].get("problems", [])
                )
        if problems:
            await asyncio.gather(
                *(w.call("POST", "/-/internal/abort") for w in alive), return_exceptions=True
            )
            raise ConfigError(problems)


class SupervisorControl:
    """The admin listener's view of all workers."""

    def __init__(self, supervisor: Supervisor) -> None:
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
        return await self.supervisor.reload()

    async def policy_call(self, policy: str, endpoint: str, body: Any) -> tuple[int, Any]:
        # Policies keep shared state in the store, so one worker speaks for all (and with
        # memory:// there is only one worker).
        method, _, path = endpoint.partition(" ")
        worker = self._first()
        if worker is None:
            return 503, {"error": "no_worker_running"}
        return await worker.call(method, path, body)

    def _first(self) -> WorkerHandle | None:
        return next((worker for worker in self.supervisor.workers if worker.alive), None)
