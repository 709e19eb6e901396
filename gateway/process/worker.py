"""A worker process: serves the public port (SO_REUSEPORT) and a private control socket.

Started by the supervisor as `python -m gateway.process.worker`; SIGTERM (or SIGINT) drains it.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys

from gateway.admin.endpoints import admin_app
from gateway.app import Gateway
from gateway.config.loader import LoadedConfig, parse_config
from gateway.errors import ConfigError
from gateway.process.control import LocalControl
from gateway.process.server import (
    drain,
    listening_socket,
    public_server,
    redirect_server,
    serve,
    start_app,
)
from gateway.registry import Registry
from gateway.runtime import Runtime
from gateway.store.factory import open_store
from gateway.telemetry.logs import AccessLog, setup_logging
from gateway.telemetry.metrics import Metrics

log = logging.getLogger("gateway.worker")


class WorkerProcess:
    """One serving process: its store, its runtime, its public server and control socket."""

    def __init__(self, loaded: LoadedConfig, registry: Registry, *, text_log: bool = False) -> None:
        self.loaded = loaded
        self.registry = registry
        self.text_log = text_log

    async def run(
        self,
        control_path: str,
        stop: asyncio.Event,
        ready_fd: int | None,
        listen_fd: int | None = None,
    ) -> None:
        model = self.loaded.model
        metrics = Metrics()
        store = open_store(model.redis, metrics.store_call, metrics.store_breaker_changed)
        runtime = Runtime(self.loaded, store, metrics)
        gateway = Gateway(runtime, AccessLog(text=self.text_log))
        server = public_server(gateway, model)
        control = LocalControl(gateway, self.registry, server)
        await runtime.start()
        metrics.start()
        if listen_fd is None:
            sock = listening_socket(model.listen, reuse_port=True)
        else:  # bound by the supervisor (claim_public_port); listening from serve() on
            sock = socket.socket(fileno=listen_fd)
            sock.setblocking(False)
        await serve(server, sock)
        redirect = redirect_server(model)
        if redirect is not None and model.redirect_http is not None:
            await serve(redirect, listening_socket(model.redirect_http, reuse_port=True))
        app = admin_app(control, self.registry, extra_routes=control.internal_routes())
        control_runner = await start_app(app, path=control_path)
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
        log.info("worker %d serving %s", os.getpid(), model.listen)
        await stop.wait()
        log.info("worker %d draining (up to %ss)", os.getpid(), model.shutdown_timeout)
        if redirect is not None:
            await drain(redirect, 0)
        cut_off = await drain(server, model.shutdown_timeout)
        if cut_off:
            log.warning(
                "shutdown_timeout (%ss) reached: %d request(s) still in progress abandoned "
                "(each has an access-log line with status 0)",
                model.shutdown_timeout,
                cut_off,
            )
        if gateway.access_log is not None:
            gateway.access_log.flush()
        await control_runner.cleanup()
        await gateway.runtime.stop()
        await store.close()
        metrics.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway-worker")
    parser.add_argument("--config-text", required=True, help="file holding the config text")
    parser.add_argument("--file", required=True, help="the config's name in messages")
    parser.add_argument("--control", required=True, help="unix socket path for the supervisor")
    parser.add_argument(
        "--ready-fd", type=int, default=None, help="write 'ready' here once serving"
    )
    parser.add_argument(
        "--listen-fd", type=int, default=None, help="the public socket, bound by the supervisor"
    )
    parser.add_argument("--parent", type=int, default=None, help="exit when this process ends")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="json", choices=["json", "text"])
    args = parser.parse_args(argv)
    if args.parent is not None:
        _die_with(args.parent)
    setup_logging(args.log_level, args.log_format)
    with open(args.config_text, encoding="utf-8") as handle:
        text = handle.read()
    registry = Registry.discover()
    try:
        loaded = parse_config(text, args.file, registry=registry)
    except ConfigError as exc:
        log.error("config refused:\n%s", exc)
        return 2
    worker = WorkerProcess(loaded, registry, text_log=args.log_format == "text")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)  # reloads come from the supervisor
        await worker.run(args.control, stop, args.ready_fd, args.listen_fd)

    _run(run())
    return 0


def _die_with(parent: int) -> None:
    """A worker must not outlive its supervisor: one killed with SIGKILL cannot stop its
    workers, which would go on serving the port with a config nobody reloads. The kernel
    sends SIGTERM (a drain) when the parent ends (Linux, where SO_REUSEPORT balances)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it ended before prctl took effect
        sys.exit(1)


def _run(coro: object) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        asyncio.run(coro)  # type: ignore[arg-type]
    else:
        uvloop.run(coro)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
