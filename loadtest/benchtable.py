"""The rows of `make bench` and the Markdown page built from their samples."""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.common import table
from loadtest.measure import Sample, median, wrk_version


@dataclass
class Row:
    """One line of the table: what serves it, which path, which headers."""

    key: str
    title: str
    server: str  # upstream | nginx | aiohttp | gateway
    path: str
    route: str | None = None
    expect: dict[str, str] = field(default_factory=dict)  # header -> value ("" = present)
    headers: dict[str, str] = field(default_factory=dict)
    skipped: str = ""
    throughput: list[Sample] = field(default_factory=list)
    latency: list[Sample] = field(default_factory=list)


def make_rows() -> list[Row]:
    """Every row the bench knows, in table order."""
    hit = {"X-Cache": "HIT"}
    return [
        Row("direct", "direct upstream", "upstream", "/fast"),
        Row("nginx", "NGINX proxy", "nginx", "/fast"),
        Row("aiohttp", "plain aiohttp proxy", "aiohttp", "/fast"),
        Row("passthrough", "gateway passthrough", "gateway", "/pass/fast", "passthrough"),
        Row(
            "rate_limit",
            "gateway + rate_limit",
            "gateway",
            "/limited/fast",
            "limited",
            {"RateLimit": ""},
        ),
        Row("session", "gateway + session", "gateway", "/account/fast", "account"),
        Row("cache", "gateway cache hit", "gateway", "/cached/cacheable", "cached", hit),
        Row(
            "all",
            "gateway + all three",
            "gateway",
            "/all/cacheable",
            "all",
            {**hit, "RateLimit": ""},
        ),
    ]


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def report(args: argparse.Namespace, rows: list[Row]) -> tuple[str, bool]:
    """The Markdown page (tables, targets, notes) and whether every target held."""
    done = {
        row.key: (median(row.throughput), median(row.latency)) for row in rows if row.throughput
    }
    rps = {key: pair[0].rps for key, pair in done.items()}
    base_p50 = done["direct"][1].p50 if "direct" in done else math.nan
    base_p99 = done["direct"][1].p99 if "direct" in done else math.nan
    heads = ["row", "rps", "p50 ms", "p99 ms", "vs passthrough", "vs NGINX"]
    heads += [f"p50 @{args.rate:g}", f"p99 @{args.rate:g}", "added p50", "added p99"]
    lines = []
    for row in rows:
        if row.key not in done:
            continue
        full, fixed = done[row.key]
        lines.append(
            [
                row.title,
                f"{full.rps:.0f}",
                _ms(full.p50),
                _ms(full.p99),
                _ratio(full.rps, rps.get("passthrough")),
                _ratio(full.rps, rps.get("nginx")),
                _ms(fixed.p50),
                _ms(fixed.p99),
                _ms(fixed.p50 - base_p50),
                _ms(fixed.p99 - base_p99),
            ]
        )
    targets, ok = _targets(rps, done, base_p50, base_p99)
    notes = [f"- {row.title}: skipped: {row.skipped}" for row in rows if row.skipped]
    for key, (full, fixed) in done.items():
        if full.bad_status or full.errors or fixed.bad_status or fixed.errors:
            notes.append(
                f"- {key}: {full.bad_status + fixed.bad_status} non-2xx answers, "
                f"{full.errors + fixed.errors} socket errors over all rounds"
            )
        if fixed.requests < 0.95 * args.rate * args.latency_duration * args.rounds:
            notes.append(f"- {key}: the fixed rate was not reached ({fixed.requests} answers)")
    generator = wrk_version() if args.generator == "wrk" else "loadtest/loadgen.py (asyncio)"
    access = "off" if args.no_access_log else "on (to /dev/null; NGINX: buffered file)"
    text = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` (loadtest/bench.py) on {time.strftime('%Y-%m-%d %H:%M')}: "
        f"{platform.machine()}, {os.cpu_count()} cores ({_cpu()}), Python "
        f"{platform.python_version()}. The machine is shared and noisy: absolute numbers move "
        "between runs, the ratios are what carries.",
        "",
        f"- load generator: {generator}, {args.connections} connections, {args.threads} thread(s);"
        f" {args.rounds} interleaved rounds of {args.duration:g} s per row, medians",
        f"- fixed rate: {args.rate:g} requests/s for {args.latency_duration:g} s per round "
        "(open loop, loadtest/loadgen.py); added = row minus direct upstream",
        f"- gateway and plain proxy: {args.workers} worker process(es); Redis-backed policies on "
        f"a private redis-server; gateway access log {access}",
        "",
        table(heads, lines),
        "",
        "## Targets (issue 6)",
        "",
        table(["target", "measured", "holds"], targets),
        "",
    ]
    if notes:
        text += ["## Notes", "", *notes, ""]
    return "\n".join(text), ok


def _targets(
    rps: dict[str, float], done: dict[str, tuple[Sample, Sample]], p50: float, p99: float
) -> tuple[list[list[str]], bool]:
    rows: list[list[str]] = []
    ok = True

    def target(name: str, value: float | None, good: bool, shown: str) -> None:
        nonlocal ok
        if value is None or math.isnan(value):
            rows.append([name, "not measured", "-"])
            return
        ok = ok and good
        rows.append([name, shown, "yes" if good else "NO"])

    base = rps.get("passthrough")

    def ratio(key: str, over: str | None = None) -> float | None:
        other = rps.get(over) if over else base
        return rps[key] / other if key in rps and other else None

    r = ratio("passthrough", "aiohttp")
    target("passthrough >= 1.5x plain aiohttp proxy", r, (r or 0) >= 1.5, f"{r or 0:.2f}x")
    for key in ("rate_limit", "session"):
        r = ratio(key)
        cost = 1 - (r or 0)
        target(f"{key} costs <= 12% of passthrough", r, cost <= 0.12, f"{cost:.1%}")
    r = ratio("cache")
    target("cache hit >= 3x passthrough", r, (r or 0) >= 3, f"{r or 0:.2f}x")
    fixed = done["passthrough"][1] if "passthrough" in done else None
    for name, limit in (("p50", 1.0), ("p99", 3.0)):
        base_ms = p50 if name == "p50" else p99
        added = getattr(fixed, name) - base_ms if fixed is not None else None
        shown = f"{added or 0:.2f} ms"
        target(f"added {name} at fixed rate <= {limit:g} ms", added, (added or 0) <= limit, shown)
    return rows, ok


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
