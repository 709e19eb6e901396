"""The verdict per route: what the deployment did against what the file declares.

Pure functions over the answers recorded during the run (no I/O): the expected 429s come from
replaying the declared limits (limits.py) over the requests each bucket actually saw, keyed as
the limiter keys them.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.loadtest.limits import admitted
from gateway.loadtest.targets import ANONYMOUS, UNKNOWN_SESSION, Limiter, Record, Target, explain

_FRESH = ("header", "query", "session")  # key parts whose values are new to this run


@dataclass(frozen=True)
class Latency:
    """Locust's numbers for one route."""

    requests: int
    p50: float
    p99: float


@dataclass
class Expected:
    """The rate-limited share a route's limiters should produce for the traffic sent."""

    reached: int = 0
    admitted: int = 0
    buckets: int = 0
    stale: int = 0
    """Admissions that state from before the run may already hold (keys the run cannot make
    new: `client_ip`, `route`, constant headers)."""


@dataclass
class RouteVerdict:
    """One line of the summary, and the reasons it fails."""

    route: str
    requests: int = 0
    rps: float = 0.0
    p50: float = math.nan
    p99: float = math.nan
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    limited: int = 0
    expected: Expected | None = None
    tolerance: tuple[int, int] = (0, 0)
    hits: float | None = None
    unknown_401: float | None = None
    valid_401: float | None = None
    misses: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.misses

    def cells(self) -> list[str]:
        """route, requests, rps, p50, p99, status mix, what the policies did, verdict."""
        mix = " ".join(f"{s or 'none'}:{n}" for s, n in sorted(self.statuses.items()))
        did = []
        if self.expected is not None:
            reached = max(self.expected.reached, 1)
            low, high = (min(1.0, n / reached) for n in self.tolerance)
            did.append(f"429 {self.limited / reached:.0%} (limits: {1 - high:.0%}..{1 - low:.0%})")
        if self.hits is not None:
            did.append(f"hits {self.hits:.0%}")
        if self.unknown_401 is not None:
            did.append(f"401 unknown {self.unknown_401:.0%}")
        if self.valid_401 is not None:
            did.append(f"401 valid {self.valid_401:.0%}")
        return [
            self.route,
            str(self.requests),
            f"{self.rps:.1f}",
            f"{self.p50:.0f}",
            f"{self.p99:.0f}",
            mix or "-",
            ", ".join(did) or "-",
            "ok" if self.ok else "FAIL",
        ]


HEADS = ["route", "requests", "rps", "p50 ms", "p99 ms", "statuses", "policies", "verdict"]


def table(verdicts: Sequence[RouteVerdict]) -> str:
    """The summary: one aligned line per route, then why each failing route failed."""
    rows = [HEADS, *(v.cells() for v in verdicts)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    lines += [f"FAIL {v.route}: {'; '.join(v.misses)}" for v in verdicts if v.misses]
    return "\n".join(lines)


def identity(
    limiter: Limiter,
    target: Target,
    record: Record,
    sessions: Mapping[str, Sequence[dict[str, Any]]],
) -> tuple[str, bool]:
    """(the bucket identity the limiter counts this request by, whether it is new this run)."""
    _, _, _, _, credential, key = record
    values, fresh = [], True
    for spec in limiter.key:
        kind, _, name = spec.partition(".")
        value: str | None
        if kind == "client_ip":
            value = "client"  # one client address: this machine
        elif kind == "route":
            value = target.route
        elif kind == "header" and name in target.key_headers:
            value = f"key-{key}"
        elif kind == "header":
            value = target.plan.headers.get(name)
        elif kind == "query" and name in target.key_queries:
            value = f"key-{key}"
        elif kind == "query":
            value = None
        else:  # a field of the request's session
            session = target.session
            known = sessions.get(session.prefix, []) if session else []
            value = known[credential]["fields"].get(name) if 0 <= credential < len(known) else None
        varied = (
            kind in _FRESH
            and value is not None
            and not (kind == "header" and name not in target.key_headers)
        )
        fresh = fresh and varied
        values.append(ANONYMOUS if value is None else value)
    return "\x1f".join(values), fresh


def expected_limited(
    targets: Sequence[Target],
    records: Sequence[Record],
    sessions: Mapping[str, Sequence[dict[str, Any]]],
) -> tuple[dict[int, bool], dict[str, Expected]]:
    """(record index -> whether the declared limits refuse it, route -> Expected).

    A request reaches a limiter unless an earlier step of its chain answered it: a session
    step (unknown id), a cache step (a HIT or STALE), or an earlier limiter of the file.
    """
    by_route = {t.route: t for t in targets}
    refused: dict[int, bool] = {}
    expected = {t.route: Expected() for t in targets if t.limiters}
    # Each limiter scope, in the order of its first step; buckets of a named definition are
    # shared by every route using it.
    scopes: dict[str, Limiter] = {}
    for target in targets:
        for limiter in target.limiters:
            scopes.setdefault(limiter.scope, limiter)
    reached: list[int] = []
    for scope, limiter in scopes.items():
        buckets: dict[str, list[int]] = defaultdict(list)
        stale_buckets: set[str] = set()
        counted: dict[str, set[str]] = defaultdict(set)
        for index, record in enumerate(records):
            found = by_route.get(record[0])
            if (
                found is None
                or record[2] == 0
                or not _reaches(found, scope, record, refused, index)
            ):
                continue
            who, fresh = identity(limiter, found, record, sessions)
            buckets[who].append(index)
            counted[found.route].add(who)
            if not fresh:
                stale_buckets.add(who)
        for indexes in buckets.values():
            indexes.sort(key=lambda i: records[i][1])
            verdicts = admitted([records[i][1] for i in indexes], limiter.limits)
            for i, ok in zip(indexes, verdicts, strict=True):
                refused[i] = refused.get(i, False) or not ok
                if _first_limiter(by_route[records[i][0]], scope):
                    reached.append(i)
        ceiling = sum(limit.ceiling for limit in limiter.limits)
        for route, names in counted.items():
            expected[route].buckets += len(names)
            expected[route].stale += ceiling * len(names & stale_buckets)
    for i in reached:
        tally = expected[records[i][0]]
        tally.reached += 1
        tally.admitted += not refused[i]
    return refused, expected


def _first_limiter(target: Target, scope: str) -> bool:
    return bool(target.limiters) and target.limiters[0].scope == scope


def _reaches(target: Target, scope: str, record: Record, refused: dict[int, bool], i: int) -> bool:
    """Whether the request gets to the limiter `scope` in its route's chain."""
    for step in target.steps:
        if step.limiter is not None:
            if step.limiter.scope == scope:
                return True
            if refused.get(i):
                return False
        elif step.session is not None:
            if record[4] == UNKNOWN_SESSION and not step.session.optional:
                return False
        elif step.kind == "cache" and record[3] in ("HIT", "STALE"):
            return False
    return False


def judge(
    targets: Sequence[Target],
    records: Sequence[Record],
    latency: Mapping[str, Latency],
    duration: float,
    sessions: Mapping[str, Sequence[dict[str, Any]]],
) -> list[RouteVerdict]:
    """One verdict per target, in config order."""
    _, expected = expected_limited(targets, records, sessions)
    out = []
    for target in targets:
        mine = [r for r in records if r[0] == target.route]
        seen = latency.get(target.route, Latency(len(mine), math.nan, math.nan))
        v = RouteVerdict(target.route, requests=len(mine), p50=seen.p50, p99=seen.p99)
        v.rps = len(mine) / duration if duration > 0 else 0.0
        v.statuses = Counter(r[2] for r in mine)
        v.errors = sum(1 for r in mine if explain(target, r[2], r[4]) is not None)
        v.limited = v.statuses[429]
        plan = target.plan
        if not mine:
            v.misses.append("no requests were sent")
            out.append(v)
            continue
        share = v.errors / len(mine)
        if share > plan.max_error_share:
            reasons = Counter(explain(target, r[2], r[4]) for r in mine)
            reasons.pop(None, None)
            top = ", ".join(f"{n}x {why}" for why, n in reasons.most_common(3))
            v.misses.append(f"errors {share:.1%} > {plan.max_error_share:.1%} ({top})")
        if not v.p99 <= plan.p99_ms and not math.isnan(v.p99):
            v.misses.append(f"p99 {v.p99:.0f} ms > {plan.p99_ms:g} ms")
        if v.rps < plan.min_rps:
            v.misses.append(f"{v.rps:.1f} rps < {plan.min_rps:g}")
        answered = [r for r in mine if 200 <= r[2] < 400]
        if target.cached and answered:  # none: earlier steps answered all (as declared)
            v.hits = sum(r[3] in ("HIT", "STALE") for r in answered) / len(answered)
            if v.hits < plan.min_hit_share:
                v.misses.append(f"cache hits {v.hits:.0%} < {plan.min_hit_share:.0%}")
        if target.session is not None:
            unknown = [r for r in mine if r[4] == UNKNOWN_SESSION]
            valid = [r for r in mine if r[4] >= 0]
            if unknown:
                v.unknown_401 = sum(r[2] == 401 for r in unknown) / len(unknown)
            if valid:
                v.valid_401 = sum(r[2] == 401 for r in valid) / len(valid)
        if target.route in expected:
            exp = v.expected = expected[target.route]
            slack = math.ceil(plan.admit_tolerance * exp.admitted) + 2 * exp.buckets
            v.tolerance = (max(0, exp.admitted - slack - exp.stale), exp.admitted + slack)
            got = exp.reached - v.limited
            if not v.tolerance[0] <= got <= v.tolerance[1]:
                v.misses.append(
                    f"admitted {got} of {exp.reached}, the file's "
                    f"{' then '.join(lim.describe() for lim in target.limiters)} admits "
                    f"{exp.admitted} (allowed {v.tolerance[0]}..{v.tolerance[1]})"
                )
        out.append(v)
    return out
