"""The soak's report: answers by route, each fault and its recovery, and the must-be-zeros."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loadtest.common import table
from loadtest.soakload import ROUTES, Fault, Outcome, by_route, health_by_second, recovery


@dataclass
class Run:
    """Everything one soak produced."""

    args: dict[str, Any]
    outcomes: Sequence[Outcome]
    faults: Sequence[Fault]
    ready: Sequence[tuple[float, int | None]]
    """(seconds from the start, status of GET /-/ready or None)."""
    metrics: str
    gateway_log: str
    queue: dict[str, int] | None = None
    """The queue route's figures: accepted, delivered, duplicates, lost."""


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def must_be_zero(run: Run) -> dict[str, int]:
    """The counts that make the soak fail when any is not zero."""
    outcomes = run.outcomes
    unrecovered = sum(recovery(outcomes, fault)[0] is None for fault in run.faults)
    return {
        "requests that hung (no answer within the bound)": sum(
            o.failure == "hung" for o in outcomes
        ),
        "5xx other than the documented ones": sum(o.undocumented for o in outcomes),
        "connection errors (no HTTP answer)": sum(
            bool(o.failure and o.failure != "hung") for o in outcomes
        ),
        "200 answers with a wrong body or identity": sum(bool(o.wrong) for o in outcomes),
        "gateway workers that died": run.gateway_log.count("; replacing it"),
        "tracebacks in the gateway log": run.gateway_log.count("Traceback"),
        "faults not recovered from before the next one (or the end)": unrecovered,
        "queued requests accepted (202) and never delivered": (run.queue or {}).get("lost", 0),
    }


def verdict(run: Run) -> dict[str, Any]:
    """Machine-readable summary: the must-be-zeros, recoveries, and whether all held."""
    zeros = must_be_zero(run)
    return {
        "ok": not any(zeros.values()),
        "must_be_zero": zeros,
        "requests": len(run.outcomes),
        "recoveries": [
            {"fault": f.name, "first_healthy_second": recovery(run.outcomes, f)[0]}
            for f in run.faults
        ],
        "by_route": {route: dict(counts) for route, counts in by_route(run.outcomes).items()},
        "queue": run.queue,
    }


def _ready_again(run: Run, fault: Fault) -> str:
    if fault.ended is None:
        return "-"
    down = any(fault.began <= t <= fault.ended and s != 200 for t, s in run.ready)
    after = [t for t, s in run.ready if t >= fault.ended and s == 200]
    if not run.ready:
        return "not polled"
    again = f"+{after[0] - fault.ended:.1f}s" if after else "never"
    return ("503 during, " if down else "200 during, ") + f"200 again {again}"


def render(run: Run) -> str:
    """The report as Markdown (it reads as well in a terminal)."""
    args, outcomes = run.args, run.outcomes
    lines = [
        "# Fault soak",
        "",
        f"{args['duration']:g} s at {args['rate']:g} requests/s round robin over "
        f"{len(ROUTES)} routes, `gateway run` with {args['workers']} workers, faults "
        f"`{args['faults']}`; `/-/ready` polled every {args['ready_every']:g} s "
        f"(0: never); a request without an answer {args['hang']:g} s after it was due is hung.",
        "",
        "## Answers by route (status, or why there was none)",
        "",
    ]
    counts = by_route(outcomes)
    columns = sorted({key for c in counts.values() for key in c}, key=lambda k: (len(k), k))
    rows: list[list[object]] = []
    for route in ROUTES:
        sent = sum(counts[route].values())
        rows.append([route, sent, *(counts[route].get(k, 0) for k in columns)])
    total = Counter[str]()
    for c in counts.values():
        total.update(c)
    rows.append(["all", len(outcomes), *(total.get(k, 0) for k in columns)])
    lines += [table(["route", "sent", *columns], rows), ""]

    codes = Counter(f"{o.status} {o.code}" for o in outcomes if o.status and o.status >= 500)
    if codes:
        lines += ["5xx by error code: " + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items()))]
        lines += [""]

    first = run.faults[0].began if run.faults else args["duration"]
    baseline = health_by_second(outcomes, 1.0, first)
    lines += [
        "## Faults and recovery",
        "",
        f"Before the first fault, {sum(baseline)} of {len(baseline)} seconds were fully "
        "healthy (every request counted by Redis, cached, authenticated as it should).",
        "",
    ]
    rows = []
    for fault in run.faults:
        window = [o for o in outcomes if fault.began <= o.due < (fault.ended or fault.began)]
        degraded = sum(not o.healthy for o in window)
        first_ok, last_bad = recovery(outcomes, fault)
        rows.append(
            [
                fault.name,
                f"{fault.began:.1f}",
                f"{fault.ended:.1f}" if fault.ended is not None else "-",
                f"{degraded}/{len(window)}",
                f"+{first_ok}s" if first_ok is not None else "NOT RECOVERED",
                f"+{last_bad:.2f}s" if last_bad is not None else "none",
                _ready_again(run, fault),
            ]
        )
    heads = ["fault", "began s", "ended s", "degraded answers during"]
    heads += ["first fully healthy second after", "last degraded answer after", "/-/ready"]
    lines += [table(heads, rows), ""]

    zeros = must_be_zero(run)
    lines += ["## Must be zero", ""]
    lines += [
        table(
            ["check", "count", ""],
            [[name, value, "ok" if value == 0 else "FAIL"] for name, value in zeros.items()],
        ),
        "",
        f"Store calls that failed: {_metric(run.metrics, 'gateway_store_errors_total'):g} "
        "(calls skipped by an open breaker are not calls); breaker open at the end: "
        f"{_metric(run.metrics, 'gateway_store_breaker_open'):g}.",
        "",
        "Queue (at least once, every 202 looked for at the upstream after the run): "
        + ", ".join(f"{k} {v}" for k, v in (run.queue or {}).items())
        + ".",
        "",
        "Verdict: " + ("PASS" if not any(zeros.values()) else "FAIL"),
    ]
    return "\n".join(lines) + "\n"
