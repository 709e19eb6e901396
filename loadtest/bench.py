"""`make bench`: the gateway side by side with the upstream, NGINX and a plain aiohttp proxy.

    .venv/bin/python -m loadtest.bench [--duration 10] [--connections 50] [--rounds 3]
        [--rows direct,nginx,aiohttp,passthrough,tls,rate_limit,session,cache,all] [--workers 1]
        [--sweep 50,500,2000]

One load generator (wrk when installed, else loadtest/loadgen.py), interleaved rounds (every
row once per round, so a burst of noise from the neighbours hits one round of each row, not
all rounds of one), medians of the rounds. Then the latency at a fixed rate (1000 rps by default,
open loop) and what the gateway adds over calling the upstream directly. Absolute numbers
depend on the machine and its neighbours; the ratios are what carries. Writes the table to
docs/benchmarks.md and the raw samples to loadtest/reports/bench-<timestamp>/.

The TLS row is the passthrough route of a second gateway whose listener has a certificate
made by trustme at run time (never written outside the run's scratch folder).

Then the concurrency sweep (loadtest/sweep.py): the passthrough row and NGINX at each
`--sweep` level. The soft open-files limit is raised to the hard one first: 2,000 clients,
as many upstream connections and NGINX's own need more than the usual 1,024 descriptors.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import resource
import ssl
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `loadtest.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.errors import ConfigError
from loadtest.benchtable import Row, make_rows, report
from loadtest.common import Rendered, create_sessions, render_config, write_report
from loadtest.measure import (
    Sample,
    at_rate,
    cpu_seconds,
    full_speed,
    nginx_installed,
    process_tree,
    start_nginx,
    wrk_version,
)
from loadtest.procs import (
    Children,
    StartupError,
    free_port,
    http_ok,
    interrupt_on_signals,
    scratch_dir,
    start_gateway,
    start_redis,
    start_upstream,
    wait_until,
)
from loadtest.profile import profile
from loadtest.sweep import report as sweep_report
from loadtest.sweep import run_sweep

HERE = Path(__file__).resolve().parent
DOCS = str(HERE.parent / "docs" / "benchmarks.md")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    keys = [row.key for row in make_rows()]
    p = argparse.ArgumentParser(prog="loadtest.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per full-speed sample")
    p.add_argument("--latency-duration", type=float, default=5.0, help="seconds at fixed rate")
    p.add_argument("--rate", type=float, default=1000.0, help="the fixed rate, requests/s")
    p.add_argument("--connections", type=int, default=50)
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rows", default=",".join(keys), help=f"subset of {','.join(keys)}")
    p.add_argument("--workers", type=int, default=1, help="gateway (and proxy) processes")
    p.add_argument("--generator", choices=["auto", "wrk", "asyncio"], default="auto")
    p.add_argument("--no-access-log", action="store_true", help="gateway without access log")
    p.add_argument("--output", help=f"default: {DOCS} when every row runs; '-': print only")
    p.add_argument("--profile", help="gateway rows to sample with py-spy after the rounds")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    p.add_argument(
        "--sweep", default="50,500,2000", help="connection levels of the sweep ('' skips it)"
    )
    args = p.parse_args(argv)
    args.keys = [k for k in args.rows.split(",") if k]
    if unknown := sorted(set(args.keys) - set(keys)):
        p.error(f"unknown rows {unknown}; choose from {', '.join(keys)}")
    if args.generator == "auto":
        args.generator = "wrk" if wrk_version() else "asyncio"
    elif args.generator == "wrk" and not wrk_version():
        p.error("wrk is not installed (apt-get install wrk), use --generator asyncio")
    args.profile = [k for k in (args.profile or "").split(",") if k]
    try:
        args.levels = sorted({int(c) for c in args.sweep.split(",") if c.strip()})
    except ValueError:
        p.error(f"--sweep takes connection counts, e.g. 50,500,2000, not {args.sweep!r}")
    gateway_rows = {row.key for row in make_rows() if row.server == "gateway"}
    if not set(args.profile) <= gateway_rows:
        p.error(f"--profile takes gateway rows: {', '.join(sorted(gateway_rows))}")
    args.keys += [k for k in args.profile if k not in args.keys]
    if args.rounds < (0 if args.profile else 1):
        p.error("--rounds must be positive (or 0 with --profile: profile only)")
    if min(args.duration, args.latency_duration, args.rate, args.workers) <= 0:
        p.error("durations, --rate and --workers must be positive")
    return args


def check(row: Row, url: str, context: ssl.SSLContext | None = None) -> str:
    """'' when one request to the row answers 200 with the expected headers, else why not;
    a row that answers wrong (a 401, a MISS) must not be timed as if it were right."""
    request = urllib.request.Request(url, headers=row.headers)
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            response.read()
            status, headers = response.status, response.headers
    except OSError as exc:
        return f"sanity request failed: {exc}"
    if status != 200:
        return f"sanity request answered {status}"
    for name, value in row.expect.items():
        got = headers.get(name)
        if got is None or (value and got.upper() not in (value, "STALE")):
            return f"sanity request: {name} is {got!r}, expected {value or 'present'}"
    return ""


@dataclass
class Server:
    """A server under test: its base URL and the processes whose CPU time is its cost."""

    url: str
    pids: list[int] = field(default_factory=list)
    admin: str = ""
    context: ssl.SSLContext | None = None
    """For an https server: a client context that trusts its certificate."""


def start_servers(
    args: argparse.Namespace, rows: list[Row], children: Children, logs: Path, tmp: Path
) -> dict[str, Server]:
    """Start what the rows need; returns server name -> Server (rows without one are skipped)."""
    redis_url = start_redis(children, tmp, logs / "redis.log")
    upstream_port, upstream = start_upstream(children, logs / "upstream.log")
    servers = {"upstream": Server(f"http://127.0.0.1:{upstream_port}", [upstream.process.pid])}
    needed = {row.server for row in rows}
    if "nginx" in needed:
        if nginx_installed():
            port = free_port()
            nginx = start_nginx(
                children,
                tmp / "nginx",
                port=port,
                upstream_port=upstream_port,
                workers=args.workers,
                log=not args.no_access_log,
            )
            servers["nginx"] = Server(f"http://127.0.0.1:{port}", [nginx.process.pid])
        else:
            skip(rows, "nginx", "nginx is not installed (apt-get install nginx)")
    if "aiohttp" in needed:
        port = free_port()
        argv = [sys.executable, "-m", "loadtest.proxy", "--port", str(port), "--reuse-port"]
        argv += ["--upstream", servers["upstream"].url]
        proxies = [
            children.spawn(f"aiohttp proxy {n}", argv, log=logs / f"proxy-{n}.log")
            for n in range(args.workers)
        ]
        for proxy in proxies:
            wait_until(proxy, lambda: http_ok(f"http://127.0.0.1:{port}/fast"), "serving")
        servers["aiohttp"] = Server(f"http://127.0.0.1:{port}", [p.process.pid for p in proxies])
    if needed & {"gateway", "gateway_tls"}:
        port, admin_port = free_port(), free_port()
        env = dict(
            os.environ,
            GW_PORT=str(port),
            GW_ADMIN_PORT=str(admin_port),
            GW_WORKERS=str(args.workers),
            REDIS_URL=redis_url,
            UPSTREAM_PORT=str(upstream_port),
            GW_ACCESS_LOG="false" if args.no_access_log else "true",
        )
        rendered = render_config(HERE / "bench.yaml", env)
        for row in rows:
            if row.route in rendered.dropped:
                row.skipped = rendered.dropped[row.route]
        if "gateway" in needed:
            rendered.write(logs / "gateway.yaml")
            gateway = start_gateway(
                children,
                logs / "gateway.yaml",
                workers=args.workers,
                env=env,
                admin_port=admin_port,
                log=logs / "gateway.log",
            )
            servers["gateway"] = Server(
                f"http://127.0.0.1:{port}",
                [gateway.process.pid],
                f"http://127.0.0.1:{admin_port}",
            )
            token = create_sessions(redis_url, 1)[0]["id"]
            for row in rows:
                if row.key in ("session", "all"):
                    row.headers["Authorization"] = f"Bearer {token}"
        if "gateway_tls" in needed:
            try:
                servers["gateway_tls"] = start_tls_gateway(args, rendered, children, logs, tmp)
            except ImportError:
                skip(rows, "gateway_tls", "trustme is not installed (make install)")
    return servers


def start_tls_gateway(
    args: argparse.Namespace, rendered: Rendered, children: Children, logs: Path, tmp: Path
) -> Server:
    """The same gateway config with a `tls` section, on ports of its own: a certificate for
    127.0.0.1 made by trustme now, in the scratch folder; raise ImportError without trustme."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.private_key_pem.write_to_path(str(tmp / "tls.key"))
    (tmp / "tls.pem").write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    port, admin_port = free_port(), free_port()
    doc = dict(rendered.doc, listen=f"127.0.0.1:{port}")
    doc["admin"] = dict(doc.get("admin") or {}, listen=f"127.0.0.1:{admin_port}")
    doc["tls"] = {"cert": str(tmp / "tls.pem"), "key": str(tmp / "tls.key")}
    Rendered(doc).write(logs / "gateway-tls.yaml")
    gateway = start_gateway(
        children,
        logs / "gateway-tls.yaml",
        workers=args.workers,
        env=dict(os.environ),
        admin_port=admin_port,
        log=logs / "gateway-tls.log",
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return Server(f"https://127.0.0.1:{port}", [gateway.process.pid], context=context)


def skip(rows: list[Row], server: str, why: str) -> None:
    """Mark every row served by `server` as skipped."""
    for row in rows:
        if row.server == server:
            row.skipped = why


def timed(
    args: argparse.Namespace,
    row: Row,
    server: Server,
    duration: float,
    connections: int | None = None,
) -> Sample:
    """One full-speed sample of `row` (at `--connections` unless given), with the CPU its
    server processes spent on it."""
    pids = process_tree(server.pids)  # now: a restarted gateway worker has a new pid
    before = cpu_seconds(pids)
    sample = full_speed(
        server.url + row.path,
        row.headers,
        duration=duration,
        connections=connections or args.connections,
        threads=args.threads,
        use_wrk=args.generator == "wrk",
        context=server.context,
    )
    used = cpu_seconds(pids) - before
    return replace(sample, cpu_us=used / sample.requests * 1e6 if sample.requests else math.nan)


def run_rounds(args: argparse.Namespace, rows: list[Row], servers: dict[str, Server]) -> None:
    """Warm every row, then the interleaved rounds: full speed, then the fixed rate."""
    for row in rows:
        if not row.skipped:
            server = servers[row.server]
            url = server.url + row.path
            for _ in range(3):  # a cache row needs its MISS stored first
                request = urllib.request.Request(url, headers=row.headers)
                urllib.request.urlopen(request, context=server.context).read()
            row.skipped = check(row, url, server.context)
    live = [row for row in rows if not row.skipped]
    for row in live:
        timed(args, row, servers[row.server], 1.0)
    for n in range(1, args.rounds + 1):
        for row in live:
            server = servers[row.server]
            if why := check(row, server.url + row.path, server.context):
                print(f"  warning: {row.title}: {why}", file=sys.stderr)
            sample = timed(args, row, servers[row.server], args.duration)
            row.throughput.append(sample)
            print(
                f"round {n} {row.title:<22} {sample.rps:>9.0f} rps  p50 {sample.p50:6.2f} ms"
                f"  p99 {sample.p99:6.2f} ms  {sample.cpu_us:6.0f} us CPU/req",
                file=sys.stderr,
            )
        for row in live:
            server = servers[row.server]
            sample = at_rate(
                server.url + row.path,
                row.headers,
                rate=args.rate,
                duration=args.latency_duration,
                context=server.context,
            )
            row.latency.append(sample)
            print(
                f"round {n} {row.title:<22} @{args.rate:g} rps: p50 {sample.p50:6.2f} ms"
                f"  p99 {sample.p99:6.2f} ms",
                file=sys.stderr,
            )
        time.sleep(0.5)


def sweep(args: argparse.Namespace, rows: list[Row], servers: dict[str, Server]) -> list[str]:
    """The concurrency sweep's section (empty when skipped or without a passthrough row)."""
    by_key = {row.key: row for row in rows if not row.skipped}
    if not args.levels or not args.rounds or "passthrough" not in by_key:
        return []
    row_of = {"gateway": by_key["passthrough"]}
    if "nginx" in by_key:
        row_of["nginx"] = by_key["nginx"]

    def sample(server: str, connections: int, seconds: float) -> Sample:
        return timed(args, row_of[server], servers[server], seconds, connections)

    levels = run_sweep(
        args.levels,
        args.rounds,
        args.duration,
        sample,
        servers["gateway"].admin,
        with_nginx="nginx" in row_of,
    )
    args.sweep_levels = [asdict(level) for level in levels]  # for bench.json
    text, args.sweep_ok = sweep_report(levels, args.rounds, args.duration)
    return text


def raise_open_files() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit, for this process and every child it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    """Run the bench; prints and writes the table. Exit 1 when it could not run (or, with
    --strict, when a target fails)."""
    args = parse_args(argv)
    rows = [row for row in make_rows() if row.key in args.keys]
    logs = HERE / "reports" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    logs.mkdir(parents=True, exist_ok=True)
    interrupt_on_signals()
    raise_open_files()
    args.sweep_ok = True
    sweep_text: list[str] = []
    try:
        with Children() as children, scratch_dir("bench-") as tmp:
            servers = start_servers(args, rows, children, logs, tmp)
            for row in rows:
                if row.skipped:
                    print(f"{row.title}: skipped: {row.skipped}", file=sys.stderr)
            run_rounds(args, rows, servers)
            sweep_text = sweep(args, rows, servers)
            for row in rows:
                if row.key in args.profile and not row.skipped:
                    server = servers[row.server]
                    workers = process_tree(server.pids)[1:]  # not the idle supervisor
                    print(f"profile of {row.title} ({args.duration:g} s at full speed):")
                    print(
                        profile(
                            workers,
                            functools.partial(timed, args, row, server, args.duration),
                            duration=args.duration,
                            out=logs,
                            label=row.key,
                        )
                    )
    except KeyboardInterrupt:
        print(f"interrupted; every child process was stopped. Logs: {logs}", file=sys.stderr)
        return 130
    except (StartupError, RuntimeError, ConfigError, OSError) as exc:
        print(f"bench could not run: {exc}\nlogs: {logs}", file=sys.stderr)
        return 1
    if not args.rounds:
        return 0
    text, ok = report(args, rows)
    text += "\n" + "\n".join(sweep_text) if sweep_text else ""
    ok = ok and args.sweep_ok
    print("\n" + text)
    write_report(logs / "bench.json", {"args": vars(args), "rows": [asdict(row) for row in rows]})
    write_report(logs / "benchmarks.md", text)
    # A partial table (--rows) must not replace the full one in the docs unless asked to.
    output = args.output or (DOCS if set(args.keys) == {r.key for r in make_rows()} else None)
    if output and output != "-":
        write_report(Path(output), text)
        print(f"written to {output}; raw samples in {logs}/bench.json", file=sys.stderr)
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
