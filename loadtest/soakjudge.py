"""The soak's two judgements that depend on when things happened: was each answer one the docs
give for the state of the system while it was in flight, and how much did each
`on_store_error: local` limit admit while Redis was down, against what `limit` allows.

An answer is judged against every fault its lifetime (from when it was due to when it came)
overlapped, each fault stretched by a grace after it ended: the time the gateway documents
for noticing that the fault is over (the store's breaker probes at most every 2 s).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.config.units import parse_duration, parse_rate
from loadtest.soakload import LOCAL_ROUTES, RATE_LIMITED, ROUTES, Fault, Outcome

# After Redis answers again a process keeps its store-down answers until its breaker's next
# probe (at most 2 s later, gateway/store/breaker.py), + 1 s for the answers on their way.
GRACE = {"redis": 3.0, "upstream": 1.0, "gateway": 0.5}
# What each fault adds to the answers that are documented at any time (200, 202 on the queue
# route, 429 on a rate-limited route): (route, status, error code). The queue route answers
# 202 once the request is stored, whatever the upstream does.
DURING = {
    "redis": {
        ("strict", 503, "rate_limit_unavailable"),  # on_store_error: deny
        ("account", 503, "session_store_unavailable"),
        ("queued", 503, "queue_unavailable"),  # nothing accepted
    },
    "upstream": {
        (route, status, code)
        for route in ROUTES
        if route != "queued"
        for status, code in ((504, "gateway_timeout"), (502, "bad_gateway"))
    },
}


def active(outcome: Outcome, faults: Sequence[Fault]) -> set[str]:
    """The kinds of fault `outcome` overlapped (a gateway fault only for requests to it)."""
    kinds = set()
    for fault in faults:
        if fault.kind == "gateway" and fault.gateway != outcome.gateway:
            continue
        ended = fault.ended if fault.ended is not None else math.inf
        if outcome.due <= ended + GRACE.get(fault.kind, 0.0) and outcome.finished >= fault.began:
            kinds.add(fault.kind)
    return kinds


def undocumented(outcome: Outcome, kinds: set[str]) -> str | None:
    """Why `outcome` is not an answer the docs give while `kinds` of fault are on (None: it
    is). A hung request is counted on its own, not here."""
    if outcome.failure == "hung":
        return None
    if outcome.failure:
        return None if "gateway" in kinds else f"{outcome.failure} with the gateway up"
    if outcome.wrong:
        return f"wrong {outcome.status}: {outcome.wrong}"
    status, route = outcome.status, outcome.route
    if (status == 200 and route != "queued") or (status == 202 and route == "queued"):
        return None
    if status == 429 and route in RATE_LIMITED and outcome.code == "rate_limited":
        return None
    if any((route, status, outcome.code) in DURING.get(kind, ()) for kind in kinds):
        return None
    state = ", ".join(sorted(kinds)) or "no fault"
    return f"{status} {outcome.code} on {route} ({state})"


def undocumented_answers(outcomes: Sequence[Outcome], faults: Sequence[Fault]) -> Counter[str]:
    """Every answer not documented for its moment, counted by why."""
    return Counter(why for o in outcomes if (why := undocumented(o, active(o, faults))) is not None)


@dataclass
class LocalLimit:
    """An `on_store_error: local` limit of the soak's config, as the deployment enforces it."""

    route: str
    algorithm: str
    quota: int
    """`limit` (sliding window) or `burst` (token bucket): the q of a store decision."""
    window: float = 0.0
    rate: float = 0.0
    """Tokens per second (token bucket)."""

    def admits(self, span: float) -> float:
        """The most the whole deployment may admit in `span` seconds: any `window` holds at
        most `limit`; a bucket starts full and refills at `rate`."""
        if self.algorithm == "token_bucket":
            return self.quota + self.rate * span
        return self.quota * max(1, math.ceil(span / self.window))


def local_limits(doc: Mapping[str, Any]) -> list[LocalLimit]:
    """The LOCAL_ROUTES' limits in the rendered config (one inline limit each)."""
    found = []
    for route in doc.get("routes", []):
        if route["name"] not in LOCAL_ROUTES:
            continue
        [policy] = route["policies"]
        spec = policy["rate_limit"]
        if spec["algorithm"] == "token_bucket":
            rate = parse_rate(spec["rate"]).per_second
            found.append(LocalLimit(route["name"], "token_bucket", int(spec["burst"]), rate=rate))
        else:
            window = parse_duration(spec["window"])
            found.append(LocalLimit(route["name"], "sliding_window", int(spec["limit"]), window))
    return found


def over_admission(
    outcomes: Sequence[Outcome], faults: Sequence[Fault], limits: Sequence[LocalLimit]
) -> list[dict[str, Any]]:
    """Per Redis outage and local limit: the requests due while Redis was not running (every
    one decided in process), how many were admitted, what `limit` admits over the time those
    decisions took (from the kill to the last admitted answer), and the ratio of the two."""
    rows = []
    for number, fault in enumerate((f for f in faults if f.kind == "redis"), 1):
        down_until = fault.restarted if fault.restarted is not None else fault.ended
        if down_until is None:
            continue
        for limit in limits:
            due = [
                o for o in outcomes if o.route == limit.route and fault.began <= o.due < down_until
            ]
            admitted = [o for o in due if o.status == 200]
            last = max((o.finished for o in admitted), default=down_until)
            span = max(last, down_until) - fault.began
            allowed = limit.admits(span)
            rows.append(
                {
                    "outage": number,
                    "route": limit.route,
                    "algorithm": limit.algorithm,
                    "sent": len(due),
                    "admitted": len(admitted),
                    "span": round(span, 2),
                    "allowed": round(allowed, 1),
                    "ratio": round(len(admitted) / allowed, 3),
                }
            )
    return rows
