"""The soak's report: answers by route, each fault and its recovery, the over-admission of the
local limits during the Redis outages, and the must-be-zeros."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loadtest.common import table
from loadtest.soakjudge import LocalLimit, active, over_admission, undocumented_answers
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
    limits: Sequence[LocalLimit] = ()
    gateways: int = 1
    hang: dict[str, float] | None = None
    """Per route, seconds without an answer after which a request is hung."""

    @property
    def bound(self) -> float:
        """The over-admission a local limit must stay under: 1 + one process's share (1/N)."""
        return 1.0 + 1.0 / (self.gateways * int(self.args["workers"]))


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
    over = over_admission(outcomes, run.faults, run.limits)
    return {
        "requests that hung (no answer within the bound)": sum(
            o.failure == "hung" for o in outcomes
        ),
        "answers not documented for the state of the system then": sum(
            undocumented_answers(outcomes, run.faults).values()
        ),
        "queued requests accepted (202) and never delivered": (run.queue or {}).get("lost", 0),
        "local limits over the over-admission bound in an outage": sum(
            row["ratio"] > run.bound for row in over
        ),
        "gateway workers that died": run.gateway_log.count("; replacing it"),
        "tracebacks in the gateway logs": run.gateway_log.count("Traceback"),
        "faults not recovered from before the next one (or the end)": unrecovered,
    }


def verdict(run: Run) -> dict[str, Any]:
    """Machine-readable summary: the must-be-zeros, recoveries, and whether all held."""
    zeros = must_be_zero(run)
    return {
        "ok": not any(zeros.values()),
        "must_be_zero": zeros,
        "undocumented": dict(undocumented_answers(run.outcomes, run.faults)),
        "over_admission": over_admission(run.outcomes, run.faults, run.limits),
        "over_admission_bound": round(run.bound, 3),
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
        f"{len(ROUTES)} routes, spread over {run.gateways} `gateway run` with "
        f"{args['workers']} workers each (one Redis), faults `{args['faults']}`; the first "
        f"gateway's `/-/ready` polled every {args['ready_every']:g} s (0: never); a request "
        f"without an answer {_bounds(run.hang or {})} after it was due is hung (the route's "
        "timeouts + 1 s).",
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

    dropped = [o for o in outcomes if o.failure and o.failure != "hung"]
    expected = sum("gateway" in active(o, run.faults) for o in dropped)
    if dropped:
        lines += [
            f"Connection errors (no HTTP answer): {len(dropped)}, {expected} of them to the "
            "killed gateway between its SIGKILL and its restart: expected then (nothing "
            "listened on its port, or it died with the request); the other gateway served.",
            "",
        ]
    lines += _over_admission(run)
    why = undocumented_answers(outcomes, run.faults)
    if why:
        lines += ["Answers not documented for their moment: "]
        lines += [f"- {count} x {reason}" for reason, count in why.most_common(10)] + [""]
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


def _bounds(hang: dict[str, float]) -> str:
    common = Counter(hang.values()).most_common(1)
    if not common:
        return "10 s"
    usual = common[0][0]
    others = ", ".join(f"{route} {bound:g} s" for route, bound in hang.items() if bound != usual)
    return f"{usual:g} s" + (f" ({others})" if others else "")


def _over_admission(run: Run) -> list[str]:
    rows = over_admission(run.outcomes, run.faults, run.limits)
    if not rows:
        return []
    lines = [
        "## Local limits while Redis was down",
        "",
        "Requests due between the kill and the restart, all decided in process "
        "(`on_store_error: local`); allowed: what the limit admits across the deployment "
        "over the time those decisions took; ratio = admitted / allowed, must stay under "
        f"{run.bound:.3g} (1 + one process's share).",
        "",
    ]
    heads = ["outage", "route", "algorithm", "sent", "admitted", "over s", "allowed", "ratio"]
    lines += [table(heads, [list(row.values()) for row in rows]), ""]
    return lines
