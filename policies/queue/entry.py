"""A queued request as the store holds it, and the rules of its delivery (no I/O here)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from gateway.api import Request, Value

RETRYABLE = frozenset({408, 429})
"""4xx statuses that are worth another attempt (besides every 5xx)."""


@dataclass(frozen=True)
class Entry:
    """One entry taken from the stream for delivery."""

    id: str
    """The stream id it was taken under (changes when a retry re-adds it)."""
    key: str
    """The id it was accepted under: the `queued` answer and the `Idempotency-Key`."""
    attempts: int
    """Deliveries tried so far, lost ones (a gateway that died mid-delivery) included."""
    method: str
    target: str
    meta: dict[str, Any]
    body: bytes
    status: str
    error: str


def fields(request: Request, body: bytes) -> list[Value]:
    """The stream fields of an accepted request: what the proxy would have sent."""
    meta = {
        "headers": list(request.headers.items()),
        "client_ip": request.client_ip,
        "host": request.host,
        "scheme": request.scheme,
        "request_id": request.request_id,
    }
    return ["m", request.method, "p", request.target, "h", json.dumps(meta), "b", body]


def parse(entry_id: bytes, lost: int, pairs: list[bytes]) -> Entry:
    """An entry as `take` returns it."""
    f = {pairs[i].decode(): pairs[i + 1] for i in range(0, len(pairs), 2)}
    ident = entry_id.decode()
    return Entry(
        id=ident,
        key=f["k"].decode() if "k" in f else ident,
        attempts=int(f.get("n", b"0") or 0) + int(lost),
        method=f["m"].decode(),
        target=f["p"].decode("utf-8", "surrogateescape"),
        meta=json.loads(f["h"]),
        body=f["b"],
        status=f.get("s", b"").decode(),
        error=f.get("e", b"").decode("utf-8", "replace"),
    )


def verdict(status: int) -> str:
    """`ack` for a 2xx, `retry` for what may pass later, `dead` for what never will."""
    if 200 <= status < 300:
        return "ack"
    if status >= 500 or status in RETRYABLE:
        return "retry"
    return "dead"


def backoff(attempts: int, first: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, first * 2^(attempts-1))]."""
    bound = min(cap, first * 2 ** min(attempts - 1, 62))
    return rng.uniform(0, bound)


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a `Retry-After` field asks to wait (delta-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)
