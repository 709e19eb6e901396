"""The concurrency sweep of `make bench`: the passthrough row and NGINX at 50, 500 and 2,000
connections, interleaved, with the gateway's new upstream connections per request.

Issue 22's goal: the gateway's rps at the highest level >= 0.8x its rps at the lowest, with
fewer than 0.01 new upstream connections per request in steady state (after a warm-up sample
at each level). Ratios are taken within a round, so a busy neighbour hits both sides alike.
"""

from __future__ import annotations

import math
import re
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from loadtest.common import table
from loadtest.measure import Sample

GOAL_RATIO = 0.8
GOAL_NEW_PER_REQUEST = 0.01
_OPENED = re.compile(r"^gateway_upstream_connections_opened_total\{[^}]*\} ([0-9.e+]+)$", re.M)
_REQUESTS = re.compile(r"^gateway_requests_total\{[^}]*\} ([0-9.e+]+)$", re.M)

Timed = Callable[[str, int, float], Sample]
"""`(server, connections, seconds) -> Sample`: one full-speed sample of a sweep row."""


@dataclass
class Level:
    """One concurrency level: samples per round for each server, and the gateway's churn."""

    connections: int
    nginx: list[Sample] = field(default_factory=list)
    gateway: list[Sample] = field(default_factory=list)
    new_per_request: list[float] = field(default_factory=list)


def counts(admin_url: str) -> tuple[float, float]:
    """Upstream connections opened and requests answered by the gateway so far, summed over
    targets, routes and workers."""
    with urllib.request.urlopen(admin_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(map(float, _OPENED.findall(text))), sum(map(float, _REQUESTS.findall(text)))


def steady_churn(admin_url: str, run: Callable[[], Sample], settle: float) -> tuple[Sample, float]:
    """`run()`'s sample, and the new upstream connections per request from `settle` seconds
    into it to its end. The first moments are left out: the clients of the previous sample
    hung up mid-request, which cost the upstream connections those requests held (the
    gateway, like NGINX, aborts an exchange whose client is gone), and they are re-opened as
    the next sample starts."""
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run)
        time.sleep(settle)
        opened0, answered0 = counts(admin_url)
        sample = running.result()
    opened1, answered1 = counts(admin_url)
    answered = answered1 - answered0
    return sample, (opened1 - opened0) / answered if answered else math.nan


def run_sweep(
    levels: Sequence[int],
    rounds: int,
    duration: float,
    timed: Timed,
    admin_url: str,
    with_nginx: bool,
) -> list[Level]:
    """Interleaved rounds: each level, NGINX then the gateway, a warm-up sample before each."""
    out = [Level(c) for c in levels]
    for n in range(1, rounds + 1):
        for level in out:
            c = level.connections
            if with_nginx:
                timed("nginx", c, 1.0)
                level.nginx.append(sample := timed("nginx", c, duration))
                _say(n, "NGINX", c, sample, "")
            timed("gateway", c, 1.0)  # the pool grows to this level before it is measured
            settle = min(2.0, duration / 3)
            sample, new = steady_churn(admin_url, partial(timed, "gateway", c, duration), settle)
            level.gateway.append(sample)
            level.new_per_request.append(new)
            _say(n, "gateway", c, sample, f"  {new:.4f} new upstream conns/req")
    return out


def _say(n: int, who: str, connections: int, sample: Sample, extra: str) -> None:
    print(
        f"sweep {n} {who:<8} c={connections:<5} {sample.rps:>9.0f} rps  p99 {sample.p99:7.2f} ms"
        f"  errors {sample.errors} non-2xx {sample.bad_status}{extra}",
        file=sys.stderr,
    )


def _ratio(a: list[Sample], b: list[Sample]) -> float:
    ratios = [x.rps / y.rps for x, y in zip(a, b, strict=False) if y.rps]
    return statistics.median(ratios) if ratios else math.nan


def _fmt(value: float, spec: str) -> str:
    return "-" if math.isnan(value) else format(value, spec)


def report(levels: list[Level], rounds: int, duration: float) -> tuple[list[str], bool]:
    """The sweep's section of docs/benchmarks.md and whether issue 22's goal held."""
    if not levels or not levels[0].gateway:
        return [], True
    low, high = levels[0], levels[-1]
    rows = []
    for level in levels:
        gw = statistics.median(s.rps for s in level.gateway)
        ng = statistics.median(s.rps for s in level.nginx) if level.nginx else math.nan
        p99 = statistics.median(s.p99 for s in level.gateway)
        errors = sum(s.errors + s.bad_status for s in level.gateway)
        cpu = statistics.median(s.cpu_us for s in level.gateway)
        rows.append(
            [f"{level.connections}", _fmt(ng, ".0f"), f"{gw:.0f}", f"{p99:.2f}", _fmt(cpu, ".0f"),
             _fmt(_ratio(level.gateway, level.nginx), ".2f"),
             f"{_ratio(level.gateway, low.gateway):.2f}",
             _fmt(_ratio(level.nginx, low.nginx), ".2f"),
             f"{statistics.median(level.new_per_request):.4f}", f"{errors}"]
        )  # fmt: skip
    held = _ratio(high.gateway, low.gateway)
    churn = max(statistics.median(level.new_per_request) for level in levels)
    ok = held >= GOAL_RATIO and churn < GOAL_NEW_PER_REQUEST
    text = [
        "## Concurrency sweep (issue 22)",
        "",
        f"The passthrough row and NGINX at each level, {rounds} interleaved round(s) of "
        f"{duration:g} s after a 1 s warm-up at the level; medians. `vs lowest` is a row's rps "
        "over its own at the lowest level, `vs NGINX` the gateway's over NGINX's, both taken "
        "within a round. `new conns/req`: upstream connections the gateway opened during the "
        "measured sample (`gateway_upstream_connections_opened_total`, from up to 2 s into it, "
        "see loadtest/sweep.py) per request answered meanwhile. "
        "`errors`: wrk's socket errors (connect, read, write, timeout at 5 s) and non-2xx "
        "answers over all rounds. The machine is shared and loaded, and at 2,000 connections "
        "wrk itself takes a larger share of the two cores: compare the ratios and the CPU time "
        "per request (the steadier figure), not the absolute rps.",
        "",
        table(["connections", "NGINX rps", "gateway rps", "gateway p99 ms",
               "gateway CPU us/req", "vs NGINX",
               "gateway vs lowest", "NGINX vs lowest", "new conns/req", "errors"], rows),
        "",
        f"- goal: gateway rps at {high.connections} >= {GOAL_RATIO}x at {low.connections}: "
        f"**{held:.2f}x** ({'holds' if held >= GOAL_RATIO else 'does NOT hold'})",
        f"- goal: < {GOAL_NEW_PER_REQUEST} new upstream connections per request at every "
        f"level: **{churn:.4f}** ({'holds' if churn < GOAL_NEW_PER_REQUEST else 'does NOT hold'})",
        "",
    ]  # fmt: skip
    return text, ok
