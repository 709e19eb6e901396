"""`make soak`: steady load on a mixed config while Redis is killed and restarted (twice) and
the upstream stalls (once); every answer is judged and the recovery after each fault timed.

    .venv/bin/python -m loadtest.soak [--duration 240] [--rate 200] [--workers 2]
        [--faults full|short] [--ready-every 2] [--hang 10] [--reports DIR]

Starts a private redis-server (append-only file, so a restart on the same port comes back
with its data, as a production Redis does), loadtest/upstream.py and `gateway run` with
loadtest/soak.yaml, writes sessions into Redis, then offers a fixed request rate round robin
over the six routes (passthrough, rate_limit allow, rate_limit deny, cache, session, queue) while
the faults happen on schedule: Redis SIGKILLed and restarted on its port, twice; the upstream
SIGSTOPped and SIGCONTed, once. `/-/ready` is polled as an orchestrator would.

The report (printed, and loadtest/reports/soak-<timestamp>/report.md with report.json and
the process logs) gives the answers by status per route, each fault's time to recover (the
first fully healthy second after it ended), and the must-be-zero counts: requests that hung,
5xx other than the documented ones (502/504 from the upstream, 503 rate_limit_unavailable /
session_store_unavailable from the store), connection errors, wrong 200s, worker restarts,
tracebacks in the gateway log, faults never recovered from, requests the queue accepted (202)
that never reached the upstream (looked for once the load ends, for up to --drain seconds;
duplicates are counted and reported, they are allowed). Exit 1 when one is not zero, 2 on
bad arguments, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `loadtest.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.errors import ConfigError
from loadtest.common import create_sessions, render_config, write_report
from loadtest.procs import (
    Child,
    Children,
    StartupError,
    free_port,
    interrupt_on_signals,
    redis_ping,
    scratch_dir,
    start_gateway,
    start_upstream,
    wait_until,
)
from loadtest.soakload import HOT_KEYS, Fault, Load, drive
from loadtest.soakreport import Run, render, verdict

HERE = Path(__file__).resolve().parent
# (what, seconds from the start, seconds it lasts); a run must leave time to recover after.
SCHEDULES = {
    "full": [("redis", 30.0, 20.0), ("redis", 90.0, 10.0), ("upstream", 150.0, 15.0)],
    "short": [("redis", 6.0, 5.0), ("redis", 17.0, 4.0), ("upstream", 28.0, 5.0)],
}
DEFAULT_DURATION = {"full": 240.0, "short": 45.0}
TAIL = 8.0  # seconds after the last fault ends, at least


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="loadtest.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--faults", choices=sorted(SCHEDULES), default="full")
    p.add_argument("--duration", type=float, help="seconds (full: 240, short: 45)")
    p.add_argument("--rate", type=float, default=200.0, help="requests/s over all routes")
    p.add_argument("--workers", type=int, default=2, help="gateway worker processes")
    p.add_argument("--ready-every", type=float, default=2.0, help="poll /-/ready (0: never)")
    p.add_argument("--hang", type=float, default=10.0, help="no answer after this: hung")
    p.add_argument("--sessions", type=int, default=50, help="valid sessions to create")
    p.add_argument("--drain", type=float, default=60.0, help="seconds for the queue to deliver")
    p.add_argument("--reports", type=Path, default=HERE / "reports", help="parent directory")
    args = p.parse_args(argv)
    args.duration = args.duration or DEFAULT_DURATION[args.faults]
    schedule = SCHEDULES[args.faults]
    last_end = max(at + lasting for _, at, lasting in schedule)
    if args.duration < last_end + TAIL:
        p.error(f"--faults {args.faults} needs --duration of at least {last_end + TAIL:g}")
    if args.rate <= 0 or args.workers < 1 or args.hang <= 0 or args.sessions < 1 or args.drain < 0:
        p.error("--rate, --workers, --hang and --sessions must be positive, --drain not negative")
    return args


def report_dir(parent: Path) -> Path:
    """A fresh `soak-<timestamp>` directory under `parent`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        path = parent / (f"soak-{stamp}" if n == 0 else f"soak-{stamp}-{n}")
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"cannot create a report directory under {parent}")


def start_redis(children: Children, port: int, workdir: Path, log: Path) -> Child:
    """redis-server on `port`, persisting to `workdir` (a restart reloads what it had)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise StartupError("redis-server is not installed (`make test` installs it)")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--logfile", ""]
    child = children.spawn("redis-server", argv, log=log)
    wait_until(child, lambda: redis_ping(port), "answering PING", timeout=30)
    return child


def read_json(url: str) -> dict[str, int]:
    """GET `url` as JSON ({} when nothing answered)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.loads(response.read()))
    except (OSError, ValueError):
        return {}


def http_status(url: str, timeout: float = 5.0) -> int | None:
    """The status of GET `url`, None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


class Soak:
    """The processes of one soak run and the faults done to them."""

    def __init__(
        self, args: argparse.Namespace, report: Path, children: Children, tmp: Path
    ) -> None:
        self.args = args
        self.report = report
        self.children = children
        self.redis_dir = tmp / "redis"
        self.redis_dir.mkdir()
        self.redis_port = free_port()
        self.redis: Child | None = None
        self.upstream: Child | None = None
        self.upstream_port = 0
        self.admin_port = 0
        self.ready: list[tuple[float, int | None]] = []
        self.faults: list[Fault] = []

    def start(self) -> Load:
        """Redis, upstream, gateway, sessions, a warmed cache; the load to send."""
        report, args = self.report, self.args
        self.redis = start_redis(
            self.children, self.redis_port, self.redis_dir, report / "redis.log"
        )
        redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        upstream_port, self.upstream = start_upstream(self.children, report / "upstream.log")
        self.upstream_port = upstream_port
        port, self.admin_port = free_port(), free_port()
        env = dict(
            os.environ,
            GW_PORT=str(port),
            GW_ADMIN_PORT=str(self.admin_port),
            GW_WORKERS=str(args.workers),
            REDIS_URL=redis_url,
            UPSTREAM_PORT=str(upstream_port),
        )
        rendered = render_config(HERE / "soak.yaml", env)
        if rendered.dropped:
            raise StartupError(f"routes the gateway refuses: {rendered.dropped}")
        config = report / "gateway.yaml"
        rendered.write(config)
        start_gateway(
            self.children,
            config,
            workers=args.workers,
            env=env,
            admin_port=self.admin_port,
            log=report / "gateway.log",
            access_log=report / "gateway.access.jsonl",
        )
        base = f"http://127.0.0.1:{port}"
        for key in range(HOT_KEYS):  # the first seconds are judged like the rest
            http_status(f"{base}/cached/cacheable/k{key}")
        sessions = create_sessions(redis_url, args.sessions)
        time.sleep(1.2)  # appendfsync everysec: the sessions are on disk before any kill
        return Load(base, args.rate, args.duration, sessions, hang=args.hang)

    async def run(self, load: Load) -> None:
        started = time.perf_counter() + 0.2
        background = [
            asyncio.ensure_future(self._faults(started)),
            asyncio.ensure_future(self._poll_ready(started)),
        ]
        try:
            await drive(load, started)
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        for fault, following in itertools.pairwise(self.faults):
            fault.next_at = following.began
        if self.faults:
            self.faults[-1].next_at = load.duration

    async def _faults(self, started: float) -> None:
        loop = asyncio.get_running_loop()
        for kind, at, lasting in SCHEDULES[self.args.faults]:
            await asyncio.sleep(max(0.0, started + at - time.perf_counter()))
            if kind == "redis":
                fault = Fault(f"Redis SIGKILLed, restarted on its port after {lasting:g}s", 0.0)
                fault.began = time.perf_counter() - started
                self.faults.append(fault)
                if self.redis is not None:
                    os.kill(self.redis.process.pid, signal.SIGKILL)
                await asyncio.sleep(lasting)
                self.redis = await loop.run_in_executor(
                    None,
                    start_redis,
                    self.children,
                    self.redis_port,
                    self.redis_dir,
                    self.report / "redis.log",
                )
            else:
                fault = Fault(f"upstream SIGSTOPped for {lasting:g}s", 0.0)
                fault.began = time.perf_counter() - started
                self.faults.append(fault)
                pid = self.upstream.process.pid if self.upstream is not None else 0
                os.kill(pid, signal.SIGSTOP)
                try:
                    await asyncio.sleep(lasting)
                finally:
                    os.kill(pid, signal.SIGCONT)  # never leave it stopped, even interrupted
            fault.ended = time.perf_counter() - started

    async def _poll_ready(self, started: float) -> None:
        every = self.args.ready_every
        if every <= 0:
            return
        loop = asyncio.get_running_loop()
        url = f"http://127.0.0.1:{self.admin_port}/-/ready"
        while True:
            status = await loop.run_in_executor(None, http_status, url)
            self.ready.append((time.perf_counter() - started, status))
            await asyncio.sleep(every)

    async def queue_figures(self, load: Load) -> dict[str, int]:
        """Wait (up to --drain) until every accepted id reached the upstream; the figures."""
        accepted = {o.queued for o in load.outcomes if o.queued is not None}
        loop = asyncio.get_running_loop()
        url = f"http://127.0.0.1:{self.upstream_port}/deliveries"
        received: dict[str, int] = {}
        deadline = time.perf_counter() + self.args.drain
        while time.perf_counter() < deadline:
            received = await loop.run_in_executor(None, read_json, url)
            if accepted <= set(received):
                break
            await asyncio.sleep(0.5)
        delivered = len(accepted & set(received))
        return {
            "accepted": len(accepted),
            "delivered": delivered,
            "duplicates": sum(n - 1 for key, n in received.items() if key in accepted),
            "lost": len(accepted) - delivered,
        }

    def metrics(self) -> str:
        try:
            url = f"http://127.0.0.1:{self.admin_port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                return str(response.read().decode())
        except OSError:
            return ""


def main(argv: list[str] | None = None) -> int:
    """Run the soak; the exit code says whether every must-be-zero was zero."""
    args = parse_args(argv)
    report = report_dir(args.reports)
    interrupt_on_signals()
    try:
        with Children() as children, scratch_dir("soak-") as tmp:
            soak = Soak(args, report, children, tmp)
            load = soak.start()
            print(
                f"soak: {args.rate:g} requests/s for {args.duration:g}s, faults {args.faults}, "
                f"{args.workers} workers; reports in {report}",
                flush=True,
            )
            asyncio.run(soak.run(load))
            queue = asyncio.run(soak.queue_figures(load))
            metrics = soak.metrics()
    except KeyboardInterrupt:
        print(f"interrupted; every child process was stopped. Partial reports: {report}")
        return 130
    except (StartupError, RuntimeError, ConfigError) as exc:
        print(f"soak could not run: {exc}\nlogs: {report}", file=sys.stderr)
        return 1
    gateway_log = (report / "gateway.log").read_text(errors="replace")
    run = Run(vars(args), load.outcomes, soak.faults, soak.ready, metrics, gateway_log, queue)
    text = render(run)
    print("\n" + text)
    write_report(report / "report.md", text)
    write_report(
        report / "report.json",
        {
            "args": {k: str(v) for k, v in vars(args).items()},
            "faults": [asdict(f) for f in soak.faults],
            "verdict": verdict(run),
        },
    )
    return 0 if verdict(run)["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
