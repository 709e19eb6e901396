"""Child processes of `make loadtest` and `make bench`: private Redis, the fast upstream, the
gateway, and the guarantee that all of them are gone when the run ends (Ctrl-C included).

Every child starts in its own session (process group), so a Ctrl-C in the terminal reaches only
the runner, which then stops the children in reverse order: SIGTERM to the child, a bounded
wait, then SIGKILL to its whole group (the gateway's workers are in the supervisor's group).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
SERVING_LINE = "worker(s); admin on"


class StartupError(RuntimeError):
    """A child did not come up; the message carries the tail of its log."""


def free_port() -> int:
    """A free loopback port (the tiny race until the child binds it is acceptable here)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Child:
    """One started process and the file its output goes to."""

    def __init__(
        self, name: str, process: subprocess.Popen[bytes], log: Path | None, group: bool
    ) -> None:
        self.name = name
        self.process = process
        self.log = log
        self.group = group

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def fail(self, why: str) -> StartupError:
        """A StartupError naming this child, with its exit code and log tail."""
        code = self.process.poll()
        state = f"exited with {code}" if code is not None else "still running"
        tail = _tail(self.log)
        return StartupError(f"{self.name} {why} ({state})" + (f":\n{tail}" if tail else ""))


class Children:
    """Owns child processes; `with Children() as children:` stops them all on the way out."""

    def __init__(self) -> None:
        self.started: list[Child] = []
        self._files: list[IO[bytes]] = []

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        # A second Ctrl-C must not cut the cleanup short and leave children behind.
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        try:
            self.stop_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log: Path | None = None,
        stdout: Path | None = None,
        env: dict[str, str] | None = None,
        stderr_pipe: bool = False,
        group: bool = False,
    ) -> Child:
        """Start `argv`; stderr goes to `log` (or a pipe), stdout to `stdout` (else `log`).
        `group`: the child starts helpers of its own (gateway workers, Locust processes) that
        stopping it must also reach."""
        err_file = self._open(log) if log else subprocess.DEVNULL
        out_file = self._open(stdout) if stdout else err_file
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=subprocess.PIPE if stderr_pipe else err_file,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        child = Child(name, process, log, group)
        self.started.append(child)
        return child

    def _open(self, path: Path) -> IO[bytes]:
        handle = open(path, "ab")  # noqa: SIM115 - closed in stop_all
        self._files.append(handle)
        return handle

    def stop(self, child: Child, timeout: float = 15.0) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL (the whole group for a group child)."""
        process = child.process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        if child.group:
            # Helpers left behind (workers of a supervisor that died first) go too. The group
            # id is the child's pid, which cannot be reused while any member is alive.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        elif process.poll() is None:
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        if child in self.started:
            self.started.remove(child)

    def stop_all(self) -> None:
        """Stop every child, newest first, and close their log files."""
        while self.started:
            self.stop(self.started[-1])
        for handle in self._files:
            handle.close()
        self._files.clear()


def interrupt_on_signals() -> None:
    """Turn SIGINT, SIGTERM and SIGHUP into KeyboardInterrupt, so cleanup always runs. SIGINT
    is set explicitly: a shell without job control starts background commands with it ignored."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def wait_until(
    child: Child, ready: Callable[[], bool], what: str, timeout: float = 30.0, every: float = 0.1
) -> None:
    """Poll `ready` until it holds; a bounded number of tries, and stop early if the child died."""
    tries = max(1, int(timeout / every))
    for _ in range(tries):
        if not child.alive:
            raise child.fail(f"died before {what}")
        if ready():
            return
        time.sleep(every)
    raise child.fail(f"not {what} after {timeout:.0f}s")


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when GET `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def redis_ping(port: int) -> bool:
    """True when a redis-server on loopback `port` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A private temporary directory, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def start_redis(children: Children, workdir: Path, log: Path) -> str:
    """A private redis-server (no persistence) on a free port; returns its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise StartupError("redis-server is not installed (`make test` installs it)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    argv += ["no", "--dir", str(workdir), "--logfile", ""]
    child = children.spawn("redis-server", argv, log=log)
    wait_until(child, lambda: redis_ping(port), "answering PING")
    return f"redis://127.0.0.1:{port}/0"


def start_upstream(children: Children, log: Path) -> tuple[int, Child]:
    """loadtest/upstream.py on a free port; returns the port and the process."""
    port = free_port()
    argv = [sys.executable, "-m", "loadtest.upstream", "--port", str(port)]
    child = children.spawn("upstream", argv, log=log)
    wait_until(child, lambda: http_ok(f"http://127.0.0.1:{port}/fast"), "serving")
    return port, child


def start_gateway(
    children: Children,
    config: Path,
    *,
    workers: int,
    env: dict[str, str],
    admin_port: int,
    log: Path,
    access_log: Path | None = None,
    timeout: float = 90.0,
) -> Child:
    """`gateway run -c CONFIG --workers N`; returns once the supervisor logged that it serves
    and its admin listener answers GET /-/ready with 200."""
    argv = [sys.executable, "-m", "gateway", "run", "-c", str(config), "--workers", str(workers)]
    child = children.spawn(
        "gateway",
        argv,
        stdout=access_log or Path(os.devnull),
        env=env,
        stderr_pipe=True,
        group=True,
    )
    child.log = log
    serving = threading.Event()

    def copy_stderr() -> None:
        # Copies the process log to a file, and notices the supervisor's "serving" line.
        stream = child.process.stderr
        if stream is None:
            return
        with open(log, "ab") as out:
            for raw in stream:
                out.write(raw)
                out.flush()
                if SERVING_LINE in raw.decode(errors="replace"):
                    serving.set()

    threading.Thread(target=copy_stderr, daemon=True).start()
    wait_until(child, serving.is_set, "serving", timeout=timeout, every=0.05)
    ready = f"http://127.0.0.1:{admin_port}/-/ready"
    wait_until(child, lambda: http_ok(ready), "ready (GET /-/ready)", timeout=30.0, every=0.2)
    return child
