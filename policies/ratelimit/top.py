"""`GET /-/top?route=NAME&window=1m&n=10`: a route's top consumers by rate-limit key,
counted by every gateway on the store (the rate_limit policy's admin endpoint).

The answer: `{"route", "window", "policy", "key", "consumers": [{"key", "requests",
"rejected"}]}`, busiest first. `requests` are those that reached the policy, `rejected` those
it answered 429. Keys from `header.*` and `query.*` are shown as fingerprints only
(`keys.shown`). With several rate_limit policies on the route, `policy=NAME` picks one (by
default the first that serves it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from gateway.api import AdminCall, PolicyContext, StoreUnavailable, parse_duration
from policies.ratelimit.leaderboard import BUCKET_SECONDS, KEEP_SECONDS

MAX_N = 100


class Counted(Protocol):
    """What this endpoint needs of a rate_limit instance (`policy.RateLimit`)."""

    context: PolicyContext

    @property
    def key_spec(self) -> str: ...

    async def top(self, route: str, window: int, n: int) -> list[dict[str, Any]]: ...


class BadQuery(ValueError):
    pass


def _window(text: str) -> int:
    try:
        seconds = parse_duration(text)
    except ValueError:  # pydantic's PydanticCustomError is one
        raise BadQuery(f"window: invalid duration {text!r}") from None
    if not BUCKET_SECONDS <= seconds <= KEEP_SECONDS:
        raise BadQuery(f"window: from {BUCKET_SECONDS}s to {KEEP_SECONDS // 60}m")
    return math.ceil(seconds)


def _n(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_N:
        raise BadQuery(f"n: a whole number from 1 to {MAX_N}")
    return int(text)


def _pick(instances: Sequence[Any], route: str, name: str | None) -> Counted | None:
    serving = [p for p in instances if route in p.context.routes]
    if name is not None:
        serving = [p for p in serving if p.context.name == name]
    return serving[0] if serving else None


async def top(call: AdminCall) -> tuple[int, Any]:
    query = call.query
    route = query.get("route", "")
    window_text = query.get("window", "1m")
    try:
        if not route:
            raise BadQuery("route: the name of a route")
        window, n = _window(window_text), _n(query.get("n", "10"))
    except BadQuery as exc:
        return 400, {"error": "invalid_request", "reason": str(exc)}
    if route not in call.routes:
        return 404, {"error": "unknown_route", "route": route}
    limiter = _pick(call.instances, route, query.get("policy"))
    if limiter is None:
        return 404, {
            "error": "no_rate_limit",
            "route": route,
            "reason": "no rate_limit policy (of that name) serves this route",
        }
    try:
        consumers = await limiter.top(route, window, n)
    except StoreUnavailable as exc:
        return 503, {"error": "store_unavailable", "reason": str(exc)}
    return 200, {
        "route": route,
        "window": window_text,
        "policy": limiter.context.name,
        "key": limiter.key_spec,
        "consumers": consumers,
    }
