"""A private redis-server process on a free loopback port, as tests need it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from typing import IO

from tests.support.ports import free_port


def start_until(argv: list[str], ready: str, what: str) -> subprocess.Popen[str]:
    """Start `argv` with its log on a pipe; return once a log line contains `ready`.

    Its log keeps being read in the background afterwards, so a full pipe never blocks it.
    """
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:  # blocks until the process reports readiness (or exits)
        lines.append(line)
        if ready in line:
            break
    else:
        raise RuntimeError(f"{what} did not start:\n" + "".join(lines))
    threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()
    return process


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass


class RedisServer:
    """`redis-server` in the foreground; start() returns once it accepts connections."""

    def __init__(self, port: int | None = None, extra: Sequence[str] = ()) -> None:
        self.port = port or free_port()
        self.extra = list(extra)
        self.dir = tempfile.mkdtemp(prefix="gw-redis-")
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
        self.process = start_until(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--logfile",
                "",
                *self.extra,
            ],
            "Ready to accept connections",
            "redis-server",
        )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def cli(self, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, check=True
        ).stdout.strip()
