"""Locust as a library: the generated users on a local, master or worker runner.

Locust's own runners, stats, CSV files and HTML report are used as they are; `--processes N`
is Locust's master in this process and N workers (`gateway loadtest --worker`) beside it. Each
process records its answers (users.Ledger); workers send theirs to the master with Locust's
periodic stats reports, so the master judges the whole run.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent  # type: ignore[import-untyped]
from locust.env import Environment
from locust.html import get_html_report
from locust.runners import WORKER_REPORT_INTERVAL, MasterRunner, Runner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV, StatsCSVFileWriter

from gateway.loadtest.targets import Record, Target
from gateway.loadtest.users import Ledger, Setup, make_user
from gateway.loadtest.verdict import Latency

_SETUP = "gateway_setup"
_REPORT_KEY = "gateway_answers"
PREFIX = "loadtest"


@dataclass
class Settings:
    """How to run: the load, and where this process sits in a distributed run."""

    host: str
    duration: float
    users: int
    rate: float
    reports: Path | None = None
    master: bool = False
    expect_workers: int = 1
    master_bind: str = "*"
    master_host: str = "127.0.0.1"
    master_port: int = 5557
    web_port: int | None = None
    worker_argv: list[str] = field(default_factory=list)
    """With --processes: the command line of each local worker (empty: none started)."""
    processes: int = 0


@dataclass
class Outcome:
    """What a run produced for the verdict."""

    records: list[Record]
    latency: dict[str, Latency]
    duration: float


def run(settings: Settings, targets: Sequence[Target], setup: Setup) -> Outcome:
    """Run the load on this machine (local or master runner); reports written on the way."""
    ledger = Ledger()
    user = make_user(targets, setup, ledger, rate=settings.rate, users=settings.users)
    env = Environment(user_classes=[user], host=settings.host, stop_timeout=2)
    records: list[Record] = []
    workers: list[subprocess.Popen[bytes]] = []
    runner: Runner
    reports: dict[str, int] = {}
    if settings.master:
        runner = env.create_master_runner(settings.master_bind, settings.master_port)

        def on_report(client_id: str, data: dict[str, Any]) -> None:
            records.extend(tuple(r) for r in data.get(_REPORT_KEY, ()))
            reports[client_id] = reports.get(client_id, 0) + 1

        env.events.worker_report.add_listener(on_report)  # type: ignore[no-untyped-call]
        for _ in range(settings.processes):
            workers.append(subprocess.Popen(settings.worker_argv, stdin=subprocess.DEVNULL))
        _wait_for_workers(runner, settings.expect_workers, workers)
        print(f"{settings.expect_workers} workers connected", flush=True)
        runner.send_message(_SETUP, {"run": setup.run, "sessions": setup.sessions})
    else:
        runner = env.create_local_runner()
    if settings.web_port is not None:
        # Locust's UI re-reads sys.argv with its own parser on every page; ours is parsed.
        sys.argv = sys.argv[:1]
        env.create_web_ui("127.0.0.1", settings.web_port)
        print(f"Locust's web UI: http://127.0.0.1:{settings.web_port}", flush=True)
    writer = None
    if settings.reports is not None:
        settings.reports.mkdir(parents=True, exist_ok=True)
        writer = StatsCSVFileWriter(env, PERCENTILES_TO_REPORT, str(settings.reports / PREFIX))
        history = gevent.spawn(writer.stats_writer)
    progress = gevent.spawn(_progress, runner, time.monotonic())
    started = time.time()
    try:
        runner.start(settings.users, spawn_rate=max(settings.users, 1))
        gevent.sleep(settings.duration)
        ended = time.time()
        if isinstance(runner, MasterRunner):
            before = dict(reports)
            runner.stop()
            # One more report from each worker carries the answers of its last seconds.
            deadline = time.monotonic() + 3 * WORKER_REPORT_INTERVAL
            while time.monotonic() < deadline and any(
                reports.get(c.id, 0) <= before.get(c.id, 0) for c in runner.clients.all
            ):
                gevent.sleep(0.2)
        runner.quit()
    finally:
        progress.kill()
        for worker in workers:
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
    records.extend(ledger.drain())
    if writer is not None and settings.reports is not None:
        history.kill()
        writer.close_files()
        _final_reports(env, settings.reports)
    latency = {}
    for target in targets:
        entry = env.stats.get(target.route, target.method)
        p50 = entry.get_response_time_percentile(0.5) if entry.num_requests else float("nan")
        p99 = entry.get_response_time_percentile(0.99) if entry.num_requests else float("nan")
        latency[target.route] = Latency(entry.num_requests, p50, p99)
    return Outcome(records, latency, ended - started)


def run_worker(settings: Settings, targets: Sequence[Target]) -> None:
    """A worker: wait for the master's setup and start, send answers with each report."""
    setup = Setup()
    ledger = Ledger()
    user = make_user(targets, setup, ledger, rate=settings.rate, users=settings.users)
    env = Environment(user_classes=[user], host=settings.host, stop_timeout=2)
    runner = env.create_worker_runner(settings.master_host, settings.master_port)

    def on_setup(environment: Environment, msg: Any) -> None:
        setup.run = msg.data["run"]
        setup.sessions = msg.data["sessions"]

    def on_report(client_id: str, data: dict[str, Any]) -> None:
        data[_REPORT_KEY] = ledger.drain()

    runner.register_message(_SETUP, on_setup)
    env.events.report_to_master.add_listener(on_report)  # type: ignore[no-untyped-call]
    if runner.greenlet is not None:
        runner.greenlet.join()


def _wait_for_workers(
    runner: MasterRunner, count: int, workers: Sequence[subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + 60
    while len(runner.clients.ready) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(runner.clients.ready)} of {count} workers connected in 60s")
        if any(w.poll() is not None for w in workers):
            raise RuntimeError("a worker process exited before the run started")
        gevent.sleep(0.1)


def _progress(runner: Runner, started: float) -> None:
    while True:
        gevent.sleep(5)
        total = runner.stats.total
        print(
            f"  {time.monotonic() - started:4.0f}s  {runner.user_count} users, "
            f"{total.num_requests} requests, {total.current_rps:.1f} rps, "
            f"{total.num_failures} failures",
            flush=True,
        )


def _final_reports(env: Environment, reports: Path) -> None:
    """The CSV files with the final numbers, and Locust's HTML report."""
    final = StatsCSV(env, PERCENTILES_TO_REPORT)
    for suffix, write in (
        ("stats", final.requests_csv),
        ("failures", final.failures_csv),
        ("exceptions", final.exceptions_csv),
    ):
        with open(reports / f"{PREFIX}_{suffix}.csv", "w", newline="", encoding="utf-8") as out:
            write(csv.writer(out))
    html = get_html_report(env, show_download_link=False)  # type: ignore[no-untyped-call]
    (reports / f"{PREFIX}.html").write_text(html, encoding="utf-8")
