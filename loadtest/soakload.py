"""The soak's load and its judgement: a fixed-rate mix over loadtest/soak.yaml's routes, spread
over the gateways, every answer classified, then per-second health and the recovery after
each fault.

An answer is *healthy* when the route did everything it does with Redis and the upstream
well (a rate limit decided by the store, a cache lookup that was not bypassed, a known
session's identity forwarded). During a fault the answers documented for it are expected
instead (loadtest/soakjudge.py says which); anything else is a must-be-zero.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

ROUTES = ("passthrough", "limited", "strict", "local", "bucket", "cached", "account", "queued")
LOCAL_ROUTES = ("local", "bucket")  # on_store_error: local
RATE_LIMITED = ("limited", "strict", *LOCAL_ROUTES)
FAST_BODY = b"Hello, World!"
CACHEABLE_BODY = b"cacheable body"
HOT_KEYS = 20
CACHE_WORKED = {"HIT", "MISS", "STALE", "EXPIRED"}  # BYPASS: the store was not used
_QUOTA = re.compile(r";q=(\d+)")


@dataclass
class Outcome:
    """One request: when it was due (seconds from the start), and what came of it."""

    due: float
    route: str
    gateway: int = 0
    """Which gateway it was sent to (an index into Load.bases)."""
    status: int | None = None
    code: str | None = None
    """The `error` of a gateway JSON answer."""
    cache: str | None = None
    healthy: bool = False
    wrong: str | None = None
    """Why a 200 was wrong (body, identity), else None."""
    failure: str | None = None
    """`hung` or `connection: <error>` when no HTTP answer came."""
    seconds: float = 0.0
    queued: str | None = None
    """The id a queue route accepted the request under (202)."""
    quota: int | None = None
    """`q` of the answer's RateLimit-Policy: the limit, or a process's share of it when the
    decision was taken in process (on_store_error: local)."""

    @property
    def finished(self) -> float:
        """When the answer (or the failure) came, seconds from the start."""
        return self.due + self.seconds


@dataclass
class Load:
    """What to send: `rate` requests/s round robin over ROUTES for `duration` seconds, each
    round of ROUTES to the next of `bases` (so every route reaches every gateway)."""

    bases: Sequence[str]
    rate: float
    duration: float
    sessions: Sequence[dict[str, str]]
    hang: dict[str, float] = field(default_factory=dict)
    """Per route, seconds after which a request without an answer is hung (default 10)."""
    quotas: dict[str, int] = field(default_factory=dict)
    """The `q` a store decision of each LOCAL_ROUTES route carries (its limit, or burst)."""
    outcomes: list[Outcome] = field(default_factory=list)

    def request(self, n: int) -> tuple[str, str, dict[str, str], dict[str, str] | None]:
        """(route, path, headers, session) of the n-th request (`queued` ones are POSTs)."""
        route = ROUTES[n % len(ROUTES)]
        if route == "queued":
            return route, "/queued/delivered", {"Content-Type": "application/json"}, None
        if route == "cached":
            return route, f"/cached/cacheable/k{n // len(ROUTES) % HOT_KEYS}", {}, None
        if route == "account":
            session = self.sessions[n // len(ROUTES) % len(self.sessions)]
            return route, "/account/whoami", {"Cookie": f"sid={session['id']}"}, session
        return route, f"/{'pass' if route == 'passthrough' else route}/fast", {}, None


def judge(
    outcome: Outcome,
    headers: Any,
    body: bytes,
    session: dict[str, str] | None,
    quotas: dict[str, int],
) -> None:
    """Fill in `code`, `cache`, `quota`, `healthy` and `wrong` from an answer."""
    status = outcome.status or 0
    quota = _QUOTA.search(headers.get("RateLimit-Policy", ""))
    outcome.quota = int(quota.group(1)) if quota else None
    if status >= 400 and "json" in headers.get("Content-Type", ""):
        try:
            outcome.code = str(json.loads(body).get("error"))
        except (ValueError, AttributeError):
            outcome.code = "unreadable"
    outcome.cache = headers.get("X-Cache")
    if outcome.route == "queued":
        if status == 202:
            try:
                outcome.queued = str(json.loads(body)["queued"])
                outcome.healthy = True
            except (ValueError, KeyError, TypeError):
                outcome.wrong = f"202 body {body[:40]!r}"
        elif status == 200:
            outcome.wrong = "200 instead of 202"
        return
    if outcome.route in LOCAL_ROUTES and status == 429:
        outcome.healthy = outcome.quota == quotas.get(outcome.route)
        return
    if status != 200:
        return
    route = outcome.route
    if route != "account" and body != (CACHEABLE_BODY if route == "cached" else FAST_BODY):
        outcome.wrong = f"body {body[:40]!r}"
    elif route == "account":
        try:
            seen = json.loads(body)
        except ValueError:
            seen = {}
        if session is None or seen.get("user_id") != session["user_id"] or seen.get("cookie"):
            outcome.wrong = "identity not forwarded, or the credential was"
    if outcome.wrong:
        return
    if route in LOCAL_ROUTES:
        outcome.healthy = outcome.quota == quotas.get(route)  # decided by the store
    elif route in RATE_LIMITED:
        outcome.healthy = "RateLimit" in headers  # counted in Redis, not waved through
    elif route == "cached":
        outcome.healthy = outcome.cache in CACHE_WORKED
    else:
        outcome.healthy = True


async def drive(load: Load, started: float) -> None:
    """Send the load at its fixed rate from `started` (a perf_counter time) on; returns when
    every request has an outcome. Each request is bounded by its route's `load.hang` from when
    it was due:
    a stalled gateway cannot hide its queue (as in loadgen.fixed_rate)."""
    timeout = aiohttp.ClientTimeout(total=None)
    # The local routes' requests open a connection each, which the kernel spreads over every
    # worker (SO_REUSEPORT): kept-alive ones stay with a few workers, and the over-admission
    # would measure that spread rather than the limiter.
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024), timeout=timeout) as kept,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1024, force_close=True), timeout=timeout
        ) as fresh,
    ):

        async def one(n: int, due: float) -> None:
            route, path, headers, session = load.request(n)
            gateway = n // len(ROUTES) % len(load.bases)
            outcome = Outcome(due - started, route, gateway)
            load.outcomes.append(outcome)
            try:
                async with asyncio.timeout(load.hang.get(route, 10.0)):
                    method, data = (
                        ("POST", b'{"n": %d}' % n) if route == "queued" else ("GET", None)
                    )
                    client = fresh if route in LOCAL_ROUTES else kept
                    async with client.request(
                        method, load.bases[gateway] + path, headers=headers, data=data
                    ) as response:
                        outcome.status = response.status
                        body = await response.read()
                        judge(outcome, response.headers, body, session, load.quotas)
            except TimeoutError:
                outcome.failure = "hung"
            except (aiohttp.ClientError, OSError) as exc:
                outcome.failure = f"connection: {type(exc).__name__}"
            outcome.seconds = time.perf_counter() - due

        tasks: set[asyncio.Task[None]] = set()
        for n in range(int(load.rate * load.duration)):
            due = started + n / load.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.ensure_future(one(n, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)


@dataclass
class Fault:
    """A fault as it happened (seconds from the start)."""

    name: str
    began: float
    ended: float | None = None
    """When it was over: the process restarted and answering (SIGCONT for the upstream)."""
    kind: str = ""
    """`redis`, `gateway` or `upstream`."""
    gateway: int | None = None
    """The gateway killed (a `gateway` fault)."""
    restarted: float | None = None
    """When the killed process was started again (the end of its time down)."""
    next_at: float | None = None
    """When the next fault began (or the run ended): recovery must come before it."""


def health_by_second(outcomes: Sequence[Outcome], since: float, until: float) -> list[bool]:
    """For each one-second window from `since` up to `until`: were all its requests healthy?
    A window without requests counts as unhealthy (nothing proves it healthy)."""
    windows = max(0, int(until - since))
    seen = [0] * windows
    bad = [0] * windows
    for outcome in outcomes:
        index = int(outcome.due - since) if outcome.due >= since else -1
        if 0 <= index < windows:
            seen[index] += 1
            bad[index] += not outcome.healthy
    return [seen[i] > 0 and bad[i] == 0 for i in range(windows)]


def recovery(outcomes: Sequence[Outcome], fault: Fault) -> tuple[int | None, float | None]:
    """(first fully healthy second after the fault ended, counted from its end; and when the
    last unhealthy request after the end was sent). (None, ...) when no second was healthy
    before the next fault or the end of the run."""
    if fault.ended is None:
        return None, None
    until = fault.next_at if fault.next_at is not None else fault.ended
    healthy = health_by_second(outcomes, fault.ended, until)
    first = next((k for k, ok in enumerate(healthy) if ok), None)
    limit = fault.ended + (first if first is not None else len(healthy))
    late = [o.due for o in outcomes if fault.ended <= o.due < limit and not o.healthy]
    return first, (max(late) - fault.ended if late else None)


def by_route(outcomes: Sequence[Outcome]) -> dict[str, Counter[str]]:
    """Per route: answers by status, plus `hung` and `connection` failures."""
    counts: dict[str, Counter[str]] = {route: Counter() for route in ROUTES}
    for outcome in outcomes:
        key = str(outcome.status) if outcome.status is not None else outcome.failure or "?"
        counts[outcome.route][key.split(":")[0]] += 1
    return counts
