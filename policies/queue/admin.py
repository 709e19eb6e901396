"""The queue's admin calls: `GET /-/queue` and `POST /-/queue/replay`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from gateway.api import AdminCall, StoreUnavailable
from policies.queue.delivery import Consumer
from policies.queue.scripts import GROUP, RouteKeys, scripts


class Queue(Protocol):
    """What the admin calls need of a `queue` instance (policy.py imports this module)."""

    consumers: Mapping[str, Consumer]
    backlog: Any


RECENT_DEAD = 10
"""Dead letters listed per route by `GET /-/queue`, newest first."""
_PAGE = 200


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _routes(call: AdminCall) -> dict[str, Queue]:
    found: dict[str, Queue] = {}
    for instance in call.instances:
        for route in instance.context.routes:
            found[route] = instance  # type: ignore[assignment]  # only queue instances come
    return found


def _age(now_ms: int, entry_id: str) -> float:
    if not entry_id:
        return 0.0
    return max(0.0, (now_ms - int(entry_id.partition("-")[0])) / 1000)


async def status(call: AdminCall) -> tuple[int, Any]:
    """Per route: backlog (accepted, not yet delivered or dead), in flight, waiting for a
    retry, dead, the oldest undelivered entry's age, deliveries and failed attempts."""
    out = {}
    routes = _routes(call)
    try:
        for route in sorted(routes):
            keys = RouteKeys.of(route)
            now, length, pending, parked, dead, oldest, tally, recent = await call.store.eval(
                scripts().stats,
                [keys.stream, keys.due, keys.dead, keys.counts],
                [GROUP, RECENT_DEAD],
            )
            routes[route].backlog.labels(route).set(int(length) + int(parked))
            out[route] = {
                "backlog": int(length) + int(parked),
                "in_flight": int(pending),
                "retrying": int(parked),
                "dead": int(dead),
                "oldest_age_s": round(_age(int(now), _text(oldest)), 3),
                "delivered": int(tally[0]),
                "failed_attempts": int(tally[1]),
                "dead_letters": [
                    {
                        "id": _text(key),
                        "attempts": int(attempts),
                        "status": _text(last_status),
                        "error": _text(error),
                        "method": _text(method),
                        "target": _text(target),
                        "dead_since_s": round(_age(int(now), _text(dead_id)), 3),
                    }
                    for dead_id, key, attempts, last_status, error, method, target in recent
                ],
            }
    except StoreUnavailable as exc:
        return 503, {"error": "queue_unavailable", "detail": str(exc)}
    return 200, {"routes": out}


async def replay(call: AdminCall) -> tuple[int, Any]:
    """`{"route": R, "id": ID}` or `{"route": R, "all": true}`: dead letters back in the queue."""
    body = call.body
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("route"), str)
        or set(body) - {"route", "id", "all"}
        or ("id" in body) == (body.get("all") is True)
        or ("id" in body and not isinstance(body["id"], str))
    ):
        return 400, {
            "error": "invalid_replay",
            "detail": 'expected {"route": ..., "id": ...} or {"route": ..., "all": true}',
        }
    route = body["route"]
    instance = _routes(call).get(route)
    if instance is None:
        return 404, {"error": "unknown_route", "route": route}
    keys = RouteKeys.of(route)
    wanted = body.get("id", "")
    moved = 0
    start = "-"
    try:
        while start:
            count, after = await call.store.eval(
                scripts().replay, [keys.stream, keys.dead], [wanted, start, _PAGE]
            )
            moved += int(count)
            start = _text(after)
            if wanted and moved:
                break
    except StoreUnavailable as exc:
        return 503, {"error": "queue_unavailable", "detail": str(exc), "replayed": moved}
    if wanted and not moved:
        return 404, {"error": "unknown_dead_letter", "route": route, "id": wanted}
    consumer = instance.consumers.get(route)
    if consumer is not None:
        consumer.wake()
    return 200, {"replayed": moved}
