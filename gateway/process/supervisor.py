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
import socket
import sys
import tempfile
import time

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.multiprocess import mark_process_dead

from gateway.admin.endpoints import admin_app
from gateway.config.loader import LoadedConfig, load_config
from gateway.errors import ConfigError, ConfigProblem
from gateway.process.fds import raise_open_files_limit
from gateway.process.server import (
    StartError,
    claim_public_port,
    listening_socket,
    start_app,
    worker_socket,
)
from gateway.process.workers import SupervisorControl, WorkerHandle
from gateway.registry import Registry

log = logging.getLogger("gateway.supervisor")

_RESTART_ONLY = ("listen", "redirect_http", "workers", "admin", "redis", "client")


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
        self.running = loaded.model
        """The config that the process started with: what restart-only settings are now."""
        self._port_lock: socket.socket | None = None
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
        """Serve until SIGTERM or SIGINT, then drain. Raises `StartError` when it cannot start,
        once every worker it had started is stopped and the run folder is gone."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self._sighup()))
        model = self.running
        admin: web.AppRunner | None = None
        monitors: list[asyncio.Future[None]] = []
        raise_open_files_limit()  # before the workers, which inherit it
        try:
            admin = await self._start()
            monitors = [asyncio.ensure_future(self._monitor(worker)) for worker in self.workers]
            log.info(
                "serving %s with %d worker(s); admin on %s",
                model.listen,
                self.count,
                model.admin.listen,
            )
            await stop.wait()
            log.info("stopping: draining workers (up to %ss)", model.shutdown_timeout)
        finally:
            self.stopping = True
            await self._stop_workers()
            for monitor in monitors:
                monitor.cancel()
            if admin is not None:
                await admin.cleanup()
            for worker in self.workers:
                if worker.session is not None:
                    await worker.session.close()
            if self._port_lock is not None:
                self._port_lock.close()
            shutil.rmtree(self.rundir, ignore_errors=True)
        return 0

    async def _start(self) -> web.AppRunner:
        """Claim both addresses before any worker starts, so that a port in use stops the start
        with nothing to undo; then the workers; the admin app serves once they are ready."""
        model = self.running
        self._port_lock = claim_public_port(model.listen)
        try:
            admin_sock = listening_socket(model.admin.listen, reuse_port=False)
        except OSError as exc:
            raise StartError(
                f"cannot serve {model.admin.listen} (the admin listener): {exc.strerror}"
            ) from None
        try:
            if model.redirect_http is not None:
                try:  # the workers bind it with SO_REUSEPORT; nothing else may hold it
                    listening_socket(model.redirect_http, reuse_port=False).close()
                except OSError as exc:
                    raise StartError(
                        f"cannot serve {model.redirect_http} (redirect_http): {exc.strerror}"
                    ) from None
            self._write_text(self.loaded.text)
            results = await asyncio.gather(
                *(self._spawn(worker) for worker in self.workers), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            token = model.admin.token.get_secret_value() if model.admin.token else None
            return await start_app(
                admin_app(SupervisorControl(self), self.registry, token=token), sock=admin_sock
            )
        except BaseException:
            admin_sock.close()
            raise

    def _write_text(self, text: str) -> None:
        temp = self.text_path + ".new"
        with open(temp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, self.text_path)

    async def _spawn(self, worker: WorkerHandle) -> None:
        """Start `worker` on a public socket bound here, from the address in force (see
        `claim_public_port`); raises `StartError` when it does not get ready."""
        try:
            sock = worker_socket(self.running.listen)
        except OSError as exc:
            raise StartError(f"cannot serve {self.running.listen}: {exc.strerror}") from None
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=self.metrics_dir)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(worker.control)
        try:
            args = ["--config-text", self.text_path, "--file", self.loaded.file]
            args += ["--control", worker.control, "--ready-fd", str(write_fd)]
            args += ["--listen-fd", str(sock.fileno()), "--parent", str(os.getpid())]
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gateway.process.worker",
                *args,
                *self.log_args,
                env=env,
                pass_fds=(write_fd, sock.fileno()),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            # The worker has its own copies: a socket held here too would outlive a dead
            # worker and keep taking its share of connections, with no one to accept them.
            sock.close()
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
        except TimeoutError:
            raise StartError(f"worker {worker.index} was not ready within 60s") from None
        finally:
            transport.close()
        if line.strip() != b"ready":
            code = await worker.process.wait()
            raise StartError(f"worker {worker.index} failed to start (exit code {code})")

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
            except StartError as exc:
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
        with contextlib.suppress(ConfigError):  # logged by reload
            await self.reload("SIGHUP")

    # -- reload -----------------------------------------------------------------------------
    async def reload(self, source: str) -> list[str]:
        """Validate the file, prepare it in every worker, then commit everywhere (or nowhere).
        Logs the outcome alike whatever asked for it (`source`: SIGHUP, POST /-/reload)."""
        async with self._reload_lock:
            try:
                loaded = load_config(self.loaded.file, registry=self.registry)
                await self._prepare_all(loaded)
            except ConfigError as exc:
                self.reloads.labels("refused").inc()
                log.error(
                    "reload (%s) refused, still serving the previous config:\n%s", source, exc
                )
                raise
            await asyncio.gather(
                *(w.call("POST", "/-/internal/commit") for w in self.workers if w.alive)
            )
            self._write_text(loaded.text)
            warnings = list(loaded.warnings)
            # Against what runs, not against the previous file: a value put back to the one in
            # force has nothing left to wait for.
            changed = [
                key
                for key in _RESTART_ONLY
                if getattr(loaded.model, key) != getattr(self.running, key)
            ]
            if changed:
                warnings.append(f"changes to {', '.join(changed)} take effect after a restart")
            self.loaded = loaded
            self.reloads.labels("ok").inc()
            for warning in warnings:
                log.warning("reload (%s): %s", source, warning)
            log.info(
                "config reloaded in %d worker(s) (%s)", sum(w.alive for w in self.workers), source
            )
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
