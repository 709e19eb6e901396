"""`make soak`: steady load on a mixed config served by two gateways sharing one Redis, while
Redis is killed and restarted (twice), one gateway is killed and restarted (once) and the
upstream stalls past its timeout (once); every answer is judged against the state of the system
at its moment, and the recovery after each fault timed.

    .venv/bin/python -m loadtest.soak [--duration 240] [--rate 200] [--workers 2]
        [--faults full|short] [--ready-every 2] [--hang S] [--reports DIR]

Starts a private redis-server (append-only file, so a restart on the same port comes back
with its data, as a production Redis does), loadtest/upstream.py and two `gateway run` (separate
supervisors, public and admin ports) with loadtest/soak.yaml, writes sessions into Redis, then
offers a fixed request rate round robin over the eight routes (passthrough; rate_limit with
on_store_error allow, deny, and local with a sliding window and a token bucket; cache;
session; queue), each round to the next gateway, while the faults happen on schedule:

    full  (240 s): Redis SIGKILLed at 30 s, restarted on its port 20 s later; again at 80 s for
                   10 s; gateway B's process group (supervisor and workers) SIGKILLed at 120 s,
                   restarted 10 s later; the upstream SIGSTOPped at 170 s for 15 s
    short  (55 s): the same at 6 s (5 s), 16 s (4 s), 26 s (3 s), 40 s (5 s)

The upstream stall is longer than its read timeout (checked): the documented answer is 504.
The first gateway's `/-/ready` is polled as an orchestrator would.

The report (printed, and loadtest/reports/soak-<timestamp>/report.md with report.json and
the process logs) gives the answers by status per route, each fault's time to recover (the
first fully healthy second after it ended), the over-admission of each local limit while Redis
was down (admitted / what `limit` admits across the deployment over that time; bound: 1 + 1/N,
N the gateway processes), and the must-be-zero counts: requests that hung (no answer within
the route's timeouts + 1 s: redis.timeout + upstream connect + read; the upstream's twice on
the cached route, as a collapsed miss first waits for the leader's), answers not documented
for the state of the system at that moment (loadtest/soakjudge.py: e.g. a connection error
only from the killed gateway while it is down, a 504 only around the stall), requests the
queue accepted (202) that never reached the upstream (looked for once the load ends, for up
to --drain seconds; duplicates are counted and reported, they are allowed), local limits over
the bound, worker restarts, tracebacks in the gateway logs, faults never recovered from. Exit
1 when one is not zero, 2 on bad arguments, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import itertools
import os
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
    scratch_dir,
    start_gateway,
    start_upstream,
)
from loadtest.soakjudge import LocalLimit, local_limits
from loadtest.soakload import HOT_KEYS, Fault, Load, drive
from loadtest.soakprocs import (
    Gateway,
    http_status,
    read_json,
    report_dir,
    start_redis,
    timeouts,
)
from loadtest.soakreport import Run, render, verdict

HERE = Path(__file__).resolve().parent
# (what, seconds from the start, seconds it lasts); a run must leave time to recover after.
# A gateway's restart takes as long as it takes to be ready again: the next fault waits for it.
SCHEDULES = {
    "full": [
        ("redis", 30.0, 20.0),
        ("redis", 80.0, 10.0),
        ("gateway", 120.0, 10.0),
        ("upstream", 170.0, 15.0),
    ],
    "short": [
        ("redis", 6.0, 5.0),
        ("redis", 16.0, 4.0),
        ("gateway", 26.0, 3.0),
        ("upstream", 40.0, 5.0),
    ],
}
DEFAULT_DURATION = {"full": 240.0, "short": 55.0}
TAIL = 8.0  # seconds after the last fault ends, at least
GATEWAYS = ("a", "b")  # the last one is killed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="loadtest.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--faults", choices=sorted(SCHEDULES), default="full")
    p.add_argument("--duration", type=float, help="seconds (full: 240, short: 55)")
    p.add_argument("--rate", type=float, default=200.0, help="requests/s over all routes")
    p.add_argument("--workers", type=int, default=2, help="gateway worker processes")
    p.add_argument("--ready-every", type=float, default=2.0, help="poll /-/ready (0: never)")
    p.add_argument("--hang", type=float, help="no answer after this: hung (timeouts + 1 s)")
    p.add_argument("--sessions", type=int, default=50, help="valid sessions to create")
    p.add_argument("--drain", type=float, default=60.0, help="seconds for the queue to deliver")
    p.add_argument("--reports", type=Path, default=HERE / "reports", help="parent directory")
    args = p.parse_args(argv)
    args.duration = args.duration or DEFAULT_DURATION[args.faults]
    schedule = SCHEDULES[args.faults]
    last_end = max(at + lasting for _, at, lasting in schedule)
    if args.duration < last_end + TAIL:
        p.error(f"--faults {args.faults} needs --duration of at least {last_end + TAIL:g}")
    if args.hang is not None and args.hang <= 0:
        p.error("--hang must be positive")
    if args.rate <= 0 or args.workers < 1 or args.sessions < 1 or args.drain < 0:
        p.error("--rate, --workers, --hang and --sessions must be positive, --drain not negative")
    return args


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
        self.gateways: list[Gateway] = []
        self.limits: list[LocalLimit] = []
        self.ready: list[tuple[float, int | None]] = []
        self.faults: list[Fault] = []

    def start(self) -> Load:
        """Redis, upstream, the gateways, sessions, a warmed cache; the load to send."""
        report, args = self.report, self.args
        self.redis = start_redis(
            self.children, self.redis_port, self.redis_dir, report / "redis.log"
        )
        redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        upstream_port, self.upstream = start_upstream(self.children, report / "upstream.log")
        self.upstream_port = upstream_port
        for name in GATEWAYS:
            port, admin_port = free_port(), free_port()
            env = dict(
                os.environ,
                GW_PORT=str(port),
                GW_ADMIN_PORT=str(admin_port),
                GW_WORKERS=str(args.workers),
                GW_PROCESSES=str(args.workers * len(GATEWAYS)),
                REDIS_URL=redis_url,
                UPSTREAM_PORT=str(upstream_port),
            )
            rendered = render_config(HERE / "soak.yaml", env)
            if rendered.dropped:
                raise StartupError(f"routes the gateway refuses: {rendered.dropped}")
            config = report / f"gateway-{name}.yaml"
            rendered.write(config)
            self.gateways.append(Gateway(name, port, admin_port, env, config))
        self.limits = local_limits(rendered.doc)
        read, bounds = timeouts(rendered.doc)
        stalls = [lasting for kind, _, lasting in SCHEDULES[args.faults] if kind == "upstream"]
        if any(lasting <= read for lasting in stalls):
            raise StartupError(f"the upstream stall must outlast its read timeout ({read:g}s)")
        hang = {route: args.hang or bound + 1.0 for route, bound in bounds.items()}
        with concurrent.futures.ThreadPoolExecutor(len(self.gateways)) as pool:
            for gateway, child in zip(
                self.gateways, pool.map(self._start_gateway, self.gateways), strict=True
            ):
                gateway.child = child
        for key in range(HOT_KEYS):  # the first seconds are judged like the rest
            http_status(f"{self.gateways[0].base}/cached/cacheable/k{key}")
        sessions = create_sessions(redis_url, args.sessions)
        time.sleep(1.2)  # appendfsync everysec: the sessions are on disk before any kill
        bases = [gateway.base for gateway in self.gateways]
        quotas = {limit.route: limit.quota for limit in self.limits}
        return Load(bases, args.rate, args.duration, sessions, hang=hang, quotas=quotas)

    def _start_gateway(self, gateway: Gateway) -> Child:
        return start_gateway(
            self.children,
            gateway.config,
            workers=self.args.workers,
            env=gateway.env,
            admin_port=gateway.admin_port,
            log=self.report / f"gateway-{gateway.name}.log",
            access_log=self.report / f"gateway-{gateway.name}.access.jsonl",
        )

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
        for kind, at, lasting in SCHEDULES[self.args.faults]:
            await asyncio.sleep(max(0.0, started + at - time.perf_counter()))
            fault = Fault("", time.perf_counter() - started, kind=kind)
            self.faults.append(fault)
            if kind == "redis":
                fault.name = f"Redis SIGKILLed, restarted on its port after {lasting:g}s"
                await self._kill_redis(lasting)
            elif kind == "gateway":
                fault.gateway = len(self.gateways) - 1
                gateway = self.gateways[fault.gateway]
                fault.name = (
                    f"gateway {gateway.name.upper()} (supervisor and workers) SIGKILLed, "
                    f"restarted after {lasting:g}s"
                )
                await self._kill_gateway(gateway, lasting)
            else:
                fault.name = f"upstream SIGSTOPped for {lasting:g}s"
                pid = self.upstream.process.pid if self.upstream is not None else 0
                os.kill(pid, signal.SIGSTOP)
                try:
                    await asyncio.sleep(lasting)
                finally:
                    os.kill(pid, signal.SIGCONT)  # never leave it stopped, even interrupted
            if kind != "upstream":
                fault.restarted = fault.began + lasting
            fault.ended = time.perf_counter() - started

    async def _kill_redis(self, lasting: float) -> None:
        if self.redis is not None:
            os.kill(self.redis.process.pid, signal.SIGKILL)
        await asyncio.sleep(lasting)
        self.redis = await asyncio.get_running_loop().run_in_executor(
            None,
            start_redis,
            self.children,
            self.redis_port,
            self.redis_dir,
            self.report / "redis.log",
        )

    async def _kill_gateway(self, gateway: Gateway, lasting: float) -> None:
        loop = asyncio.get_running_loop()
        old = gateway.child
        if old is not None:
            # Its group: the supervisor and every worker at once, as a lost machine would.
            os.killpg(old.process.pid, signal.SIGKILL)
            await loop.run_in_executor(None, self.children.stop, old, 5.0)  # reaped
        await asyncio.sleep(lasting)
        gateway.child = await loop.run_in_executor(None, self._start_gateway, gateway)

    async def _poll_ready(self, started: float) -> None:
        every = self.args.ready_every
        if every <= 0:
            return
        loop = asyncio.get_running_loop()
        url = f"http://127.0.0.1:{self.gateways[0].admin_port}/-/ready"
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
        """Both gateways' /metrics, one after the other (the restarted one counts from then)."""
        texts = []
        for gateway in self.gateways:
            try:
                url = f"http://127.0.0.1:{gateway.admin_port}/metrics"
                with urllib.request.urlopen(url, timeout=10) as response:
                    texts.append(response.read().decode())
            except OSError:
                continue
        return "\n".join(texts)

    def logs(self) -> str:
        """Every gateway's process log."""
        return "\n".join(
            (self.report / f"gateway-{g.name}.log").read_text(errors="replace")
            for g in self.gateways
        )


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
                f"{len(GATEWAYS)} gateways of {args.workers} workers; reports in {report}",
                flush=True,
            )
            asyncio.run(soak.run(load))
            queue = asyncio.run(soak.queue_figures(load))
            metrics = soak.metrics()
            gateway_log = soak.logs()
    except KeyboardInterrupt:
        print(f"interrupted; every child process was stopped. Partial reports: {report}")
        return 130
    except (StartupError, RuntimeError, ConfigError) as exc:
        print(f"soak could not run: {exc}\nlogs: {report}", file=sys.stderr)
        return 1
    run = Run(vars(args), load.outcomes, soak.faults, soak.ready, metrics, gateway_log, queue)
    run.limits, run.gateways, run.hang = soak.limits, len(soak.gateways), load.hang
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
