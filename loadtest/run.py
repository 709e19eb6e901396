"""`make loadtest`: the Locust scenarios against a real gateway, judged by thresholds.yaml.

    .venv/bin/python -m loadtest.run [--scenario passthrough,mixed] [--duration 20]
        [--users N] [--rate RPS] [--workers 2] [--checks all|errors]

Starts a private redis-server, loadtest/upstream.py and `gateway run` with loadtest/gateway.yaml
(routes whose policy is not installed yet are left out, and their scenarios skipped with the
reason), writes sessions into Redis and warms the hot cache keys, then runs each scenario
headless at its fixed offered rate. Reports (Locust CSV and HTML, the effective config, the
process logs, summary.md/json) go to loadtest/reports/<timestamp>/. Exits 1 when a threshold
is missed, 2 on bad arguments, 130 when interrupted; every child is stopped in all cases.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `loadtest.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.errors import ConfigError
from loadtest.checks import Limits, Outcome, judge, load_thresholds
from loadtest.common import create_sessions, render_config, table, write_report
from loadtest.procs import (
    Children,
    StartupError,
    free_port,
    interrupt_on_signals,
    scratch_dir,
    start_gateway,
    start_redis,
    start_upstream,
)

HERE = Path(__file__).resolve().parent
SCENARIOS = {  # scenario -> (Locust user class, routes it cannot do without)
    "passthrough": ("PassthroughUser", ("passthrough",)),
    "cached_reads": ("CachedReadsUser", ("cached",)),
    "rate_limited": ("RateLimitedUser", ("limited",)),
    "session_users": ("SessionUser", ("account",)),
    "mixed": ("MixedUser", ("passthrough",)),
}
MIXED_TAGS = {"cache": "cached", "session": "account", "rate_limit": "api"}  # tag -> route
RL_WINDOW = 1  # seconds; short, so a run of a few seconds sees many windows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    cpus = os.cpu_count() or 1
    p = argparse.ArgumentParser(prog="loadtest.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", default="all", help="comma-separated, or 'all' (default)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per scenario")
    p.add_argument("--users", type=int, help="simulated users (default: thresholds.yaml)")
    p.add_argument("--rate", type=float, help="offered requests/s (default: thresholds.yaml)")
    p.add_argument("--workers", type=int, default=2, help="gateway worker processes")
    p.add_argument("--locust-processes", type=int, help="default: the cores left over")
    p.add_argument("--checks", choices=["all", "errors"], default="all", help="errors: CI")
    p.add_argument("--reports", type=Path, default=HERE / "reports", help="parent directory")
    p.add_argument("--thresholds", type=Path, default=HERE / "thresholds.yaml")
    p.add_argument("--config", type=Path, default=HERE / "gateway.yaml")
    p.add_argument("--sessions", type=int, default=200, help="valid sessions to create")
    p.add_argument("--hot-keys", type=int, default=20, help="cached_reads key count")
    args = p.parse_args(argv)
    names = list(SCENARIOS) if args.scenario == "all" else args.scenario.split(",")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    args.names = names
    if args.locust_processes is None:
        # Leave a core to each gateway worker and one to upstream + Redis.
        args.locust_processes = max(1, cpus - args.workers - 1)
    if args.duration <= 0 or args.workers < 1 or (args.users is not None and args.users < 1):
        p.error("--duration, --workers and --users must be positive")
    return args


def report_dir(parent: Path) -> Path:
    """A fresh loadtest/reports/<timestamp>/ (suffixed if two runs start in one second)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        path = parent / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"cannot create a report directory under {parent}")


def warm_cache(base: str, keys: int) -> int:
    """GET every hot key until it is a HIT (a few tries); returns how many are."""
    hits = 0
    for key in range(keys):
        for _ in range(5):
            with urllib.request.urlopen(f"{base}/cached/cacheable/k{key}", timeout=5) as r:
                r.read()
                if r.headers.get("X-Cache", "").upper() == "HIT":
                    hits += 1
                    break
            time.sleep(0.02)  # the first MISS may still be storing its entry
    return hits


def run_locust(
    args: argparse.Namespace,
    children: Children,
    scenario: str,
    limits: Limits,
    prefix: Path,
    host: str,
    env: dict[str, str],
    exclude: list[str],
) -> None:
    """One headless Locust run of `scenario`; its CSV/HTML reports land at `prefix`."""
    users = args.users or limits.users
    user_class = SCENARIOS[scenario][0]
    argv = [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), user_class]
    argv.append("--headless")
    argv += ["-u", str(users), "-r", str(users), "-t", f"{args.duration:g}s", "--host", host]
    argv += ["--csv", str(prefix), "--html", f"{prefix}.html", "--only-summary"]
    argv += ["--stop-timeout", "5", "--loglevel", "WARNING", "--exit-code-on-error", "0"]
    if args.locust_processes > 1:
        argv += ["--processes", str(args.locust_processes)]
    if exclude:
        argv += ["--exclude-tags", *exclude]  # last: it takes every word after it
    log = prefix.with_suffix(".locust.log")
    child = children.spawn(f"locust {scenario}", argv, log=log, env=env, group=True)
    try:
        code = child.process.wait(timeout=args.duration + 90)
    except Exception:
        children.stop(child)
        raise
    children.stop(child)
    if not Path(f"{prefix}_stats.csv").exists():
        raise StartupError(f"locust wrote no report (exit {code}); see {log}")


def run_all(
    args: argparse.Namespace,
    thresholds: dict[str, Limits],
    report: Path,
    children: Children,
    tmp: Path,
) -> list[Outcome]:
    """Start everything, run each selected scenario, judge it."""
    rl = thresholds.get("rate_limited")
    rl_rate = args.rate or (rl.rate if rl else 200.0)
    rl_share = rl.shares.get("429", {}).get("expected", 0.5) if rl else 0.5
    rl_limit = max(1, round(rl_rate * RL_WINDOW * (1 - rl_share)))
    invalid = thresholds.get("session_users")
    invalid_share = invalid.shares.get("401", {}).get("expected", 0.1) if invalid else 0.1

    redis_url = start_redis(children, tmp, report / "redis.log")
    upstream_port, _ = start_upstream(children, report / "upstream.log")
    port, admin_port = free_port(), free_port()
    env = dict(
        os.environ,
        GW_PORT=str(port),
        GW_ADMIN_PORT=str(admin_port),
        GW_WORKERS=str(args.workers),
        REDIS_URL=redis_url,
        UPSTREAM_PORT=str(upstream_port),
        RL_LIMIT=str(rl_limit),
        RL_WINDOW=str(RL_WINDOW),
        GW_ACCESS_LOG="true",
    )
    rendered = render_config(args.config, env)
    for route, why in rendered.dropped.items():
        print(f"route {route!r} left out: {why}", file=sys.stderr)
    config = report / "gateway.yaml"
    rendered.write(config)
    gateway = start_gateway(
        children,
        config,
        workers=args.workers,
        env=env,
        admin_port=admin_port,
        log=report / "gateway.log",
        access_log=report / "gateway.access.jsonl",
    )
    host = f"http://127.0.0.1:{port}"
    sessions_file = tmp / "sessions.json"  # ids are credentials: not kept in the report
    sessions_file.write_text(json.dumps(create_sessions(redis_url, args.sessions)))
    served = rendered.routes
    if "cached" in served:
        hits = warm_cache(host, args.hot_keys)
        print(f"cache warmed: {hits}/{args.hot_keys} hot keys answer HIT", file=sys.stderr)

    outcomes: list[Outcome] = []
    for scenario in args.names:
        limits = thresholds.get(scenario)
        missing = [r for r in SCENARIOS[scenario][1] if r not in served]
        if limits is None or missing or not gateway.alive:
            why = "no thresholds" if limits is None else "the gateway exited"
            why = rendered.dropped[missing[0]] if missing else why
            outcomes.append(Outcome(scenario, skipped=why))
            print(f"{scenario}: skipped: {why}", file=sys.stderr)
            continue
        rate = args.rate or limits.rate
        exclude = [t for t, route in MIXED_TAGS.items() if route not in served]
        exclude = exclude if scenario == "mixed" else []
        scenario_env = dict(
            env,
            LOADTEST_RATE=str(rate),
            LOADTEST_SESSIONS=str(sessions_file),
            LOADTEST_INVALID_SHARE=str(invalid_share),
            LOADTEST_HOT_KEYS=str(args.hot_keys),
            LOADTEST_RL_LIMIT=str(rl_limit),
            LOADTEST_RL_WINDOW=str(RL_WINDOW),
        )
        users = args.users or limits.users
        note = f" without {', '.join(exclude)}" if scenario == "mixed" and exclude else ""
        print(f"{scenario}: {rate:g} rps offered by {users} users for {args.duration:g}s{note}")
        prefix = report / scenario
        restarts = worker_restarts(report / "gateway.log")
        run_locust(args, children, scenario, limits, prefix, host, scenario_env, exclude)
        expected: dict[str, float] = {}
        if scenario == "rate_limited":
            # The share of 429s follows the rate the quota actually met.
            achieved = judge(scenario, limits, prefix, offered=rate, errors_only=True).achieved
            expected["429"] = max(0.0, 1 - rl_limit / max(achieved * RL_WINDOW, 1e-9))
        outcome = judge(
            scenario,
            limits,
            prefix,
            offered=rate,
            expected=expected,
            errors_only=args.checks == "errors",
        )
        # A worker that crashed under load is wrong behaviour, even if the others hid it.
        if crashed := worker_restarts(report / "gateway.log") - restarts:
            outcome.misses.append(f"{crashed} gateway worker(s) died and were replaced")
        if not gateway.alive:
            outcome.misses.append("the gateway exited during the run (see gateway.log)")
        outcomes.append(outcome)
    return outcomes


def worker_restarts(log: Path) -> int:
    """How many times the supervisor replaced a dead worker, per its log so far."""
    try:
        return log.read_text(errors="replace").count("; replacing it")
    except OSError:
        return 0


def summarize(outcomes: list[Outcome], report: Path) -> str:
    """The result table, plus one line per missed threshold or skipped scenario."""
    heads = ["scenario", "offered rps", "achieved rps", "requests", "p50 ms", "p95 ms", "p99 ms"]
    heads += ["errors", "verdict", "shares"]
    rows: list[list[object]] = []
    for o in outcomes:
        if o.skipped:
            rows.append([o.scenario, *["-"] * 7, "skipped", "-"])
            continue
        shares = " ".join(f"{k}={v:.1%}" for k, v in sorted(o.shares.items())) or "-"
        numbers = [f"{o.offered:g}", f"{o.achieved:.0f}", o.requests]
        numbers += [f"{o.p50:.0f}", f"{o.p95:.0f}", f"{o.p99:.0f}", f"{o.error_share:.2%}"]
        rows.append([o.scenario, *numbers, o.verdict, shares])
    notes = [f"- {o.scenario}: skipped: {o.skipped}" for o in outcomes if o.skipped]
    notes += [f"- {o.scenario}: {miss}" for o in outcomes for miss in o.misses]
    text = table(heads, rows)
    return text + ("\n\n" + "\n".join(notes) if notes else "") + f"\n\nreports: {report}\n"


def main(argv: list[str] | None = None) -> int:
    """Run the load test; the exit code says whether every threshold held."""
    args = parse_args(argv)
    try:
        thresholds = load_thresholds(args.thresholds)
    except (OSError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 2
    report = report_dir(args.reports)
    interrupt_on_signals()
    try:
        with Children() as children, scratch_dir("loadtest-") as tmp:
            outcomes = run_all(args, thresholds, report, children, tmp)
    except KeyboardInterrupt:
        print(f"interrupted; every child process was stopped. Partial reports: {report}")
        return 130
    except (StartupError, RuntimeError, ConfigError) as exc:
        print(f"load test could not run: {exc}\nlogs: {report}", file=sys.stderr)
        return 1
    summary = summarize(outcomes, report)
    print("\n" + summary)
    write_report(report / "summary.md", summary)
    write_report(report / "summary.json", [vars(o) | {"verdict": o.verdict} for o in outcomes])
    requested = args.scenario != "all"
    failed = any(o.misses or (requested and o.skipped) for o in outcomes)
    ran = any(not o.skipped for o in outcomes)
    return 1 if failed or not ran else 0


if __name__ == "__main__":
    sys.exit(main())
