"""`gateway loadtest`: the command line, and the run from config to verdict.

Exit 0 when every route behaves as the file declares, 1 naming each route that does not, 2 for
bad arguments (an unreadable config or plan, a bad number, a host that refuses connections).
Locust is imported only once the arguments hold (it patches the process for gevent).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.config.loader import LoadedConfig, load_config
from gateway.config.units import parse_duration
from gateway.errors import ConfigError
from gateway.registry import Registry


def register(subparsers: Any) -> None:
    """Add `gateway loadtest` to the CLI."""
    p = subparsers.add_parser(
        "loadtest",
        help="load-test a deployment with Locust users made from a config; a verdict per route",
        description="Load-test a deployment with Locust users generated from the routes of "
        "FILE, and judge each route against what FILE declares.",
    )
    p.add_argument("-c", "--config", default=os.environ.get("GATEWAY_CONFIG", "gateway.yaml"))
    p.add_argument("--host", required=True, type=_host, help="the gateway, e.g. http://h:8080")
    p.add_argument("--duration", default=30.0, type=_duration, help="e.g. 30s, 2m (default 30s)")
    p.add_argument("--rate", default=20.0, type=_positive(float), help="requests/s, all routes")
    p.add_argument("--users", default=10, type=_positive(int), help="simulated users (10)")
    p.add_argument("--sessions", default=0, type=_count, help="valid sessions to write (0)")
    p.add_argument("--plan", help="YAML: per-route weights, rates, paths, thresholds")
    p.add_argument("--reports", default=Path("reports"), type=Path, help="default reports/")
    p.add_argument("--admin", metavar="URL", help="admin listener for sessions on memory://")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--processes", type=_positive(int), help="Locust master + N workers here")
    mode.add_argument("--master", action="store_true", help="master of workers on other hosts")
    mode.add_argument("--worker", action="store_true", help="a worker of --master-host")
    p.add_argument("--master-host", default="127.0.0.1", help="with --worker")
    p.add_argument("--master-port", default=5557, type=_positive(int))
    p.add_argument("--expect-workers", default=1, type=_positive(int), help="with --master")
    p.add_argument("--web", action="store_true", help="also serve Locust's web UI")
    p.add_argument("--web-port", default=8089, type=_positive(int))
    p.set_defaults(func=cmd_loadtest)


def cmd_loadtest(args: argparse.Namespace) -> int:
    """Run the load test; the exit code is the verdict."""
    try:
        with warnings.catch_warnings():
            # Locust patches the process for gevent on import; the modules already loaded
            # (the config loader's) need no patching, so the warning says nothing to the user.
            warnings.simplefilter("ignore")
            import locust  # noqa: F401
    except ImportError:
        _error("Locust is not installed: pip install 'gateway[loadtest]'")
        return 2
    from gateway.loadtest.plan import load_plan
    from gateway.loadtest.targets import build_targets

    try:
        loaded = load_config(args.config, registry=Registry.discover())
        plan = load_plan(args.plan, [route.name for route in loaded.model.routes])
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    targets, skipped = build_targets(loaded, plan, args.rate)
    if not args.worker:
        for route, why in skipped.items():
            print(f"route {route}: not load-tested: {why}")
    if not targets:
        _error(f"{args.config}: no route to load-test")
        return 2
    if args.worker:
        return _worker(args, targets)
    refused = _unreachable(args.host)
    if refused:
        _error(refused)
        return 2
    return _run(args, loaded, targets)


def _run(args: argparse.Namespace, loaded: LoadedConfig, targets: list[Any]) -> int:
    from gateway.loadtest import sessions as store
    from gateway.loadtest.run import Settings, run
    from gateway.loadtest.targets import session_fields
    from gateway.loadtest.users import Setup
    from gateway.loadtest.verdict import judge, table

    setup = Setup()
    admin = store.admin_url(loaded, args.admin)
    wanted = session_fields(targets)
    if args.sessions and wanted:
        setup.sessions = store.plan_sessions(args.sessions, wanted, setup.run)
        try:
            store.create(loaded, setup.sessions, admin)
        except store.SessionError as exc:
            _error(f"cannot write sessions: {exc}")
            return 2
    settings = Settings(args.host, args.duration, args.users, args.rate, reports=args.reports)
    if args.web:
        settings.web_port = args.web_port
    if args.processes or args.master:
        settings.master = True
        settings.master_port = _free_port() if args.processes else args.master_port
        settings.expect_workers = args.processes or args.expect_workers
        settings.processes = args.processes or 0
        settings.worker_argv = _worker_argv(args, settings.master_port)
    print(
        f"load-testing {len(targets)} route(s) of {args.config} at {args.host}: "
        f"{args.rate:g} requests/s from {args.users} users for {args.duration:g}s"
    )
    for target in targets:
        print(f"  {target.route}: {target.method} {' '.join(target.paths)} at {target.rate:.3g}/s")
    try:
        outcome = run(settings, targets, setup)
    except RuntimeError as exc:
        _error(str(exc))
        return 1
    finally:
        if setup.sessions:
            try:
                store.remove(loaded, setup.sessions, admin)
            except store.SessionError as exc:
                print(f"warning: sessions not removed: {exc}", file=sys.stderr)
    verdicts = judge(targets, outcome.records, outcome.latency, outcome.duration, setup.sessions)
    summary = table(verdicts)
    print("\n" + summary)
    args.reports.mkdir(parents=True, exist_ok=True)
    (args.reports / "verdict.txt").write_text(summary + "\n", encoding="utf-8")
    print(f"\nreports: {args.reports}/ (loadtest.html, loadtest_stats.csv, verdict.txt)")
    return 0 if all(v.ok for v in verdicts) else 1


def _worker(args: argparse.Namespace, targets: list[Any]) -> int:
    from gateway.loadtest.run import Settings, run_worker

    settings = Settings(args.host, 0.0, args.users, args.rate)
    settings.master_host, settings.master_port = args.master_host, args.master_port
    run_worker(settings, targets)
    return 0


def _worker_argv(args: argparse.Namespace, port: int) -> list[str]:
    argv = [sys.executable, "-m", "gateway", "loadtest", "--worker", "-c", args.config]
    argv += ["--host", args.host, "--rate", repr(args.rate), "--users", str(args.users)]
    argv += ["--master-host", "127.0.0.1", "--master-port", str(port)]
    return argv + (["--plan", args.plan] if args.plan else [])


def _unreachable(host: str) -> str | None:
    """Why `host` cannot be load-tested (it refuses connections), or None."""
    parts = urlsplit(host)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=5):
            return None
    except OSError as exc:
        return f"cannot connect to {host}: {exc.strerror or exc}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _error(message: str) -> None:
    print(f"gateway loadtest: {message}", file=sys.stderr)


def _host(value: str) -> str:
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {value!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise argparse.ArgumentTypeError(f"expected http(s)://host[:port], got {value!r}")
    return value.rstrip("/")


def _duration(value: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid duration {value!r} (e.g. 30s, 2m)") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"the duration must be positive, got {value!r}")
    return seconds


def _positive(kind: type[int] | type[float]) -> Any:
    def parse(value: str) -> int | float:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}") from None
        if not number > 0 or number != number or number == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
        return number

    return parse


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}")
    return int(value)
