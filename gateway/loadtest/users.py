"""Locust users made at run time from the targets of a config: a task per route.

Each user keeps one connection (`FastHttpUser`) and is paced on an absolute schedule so that
all users together offer the run's rate; a task sends its route's method, a path under its
prefix and its host, the rate-limit keys as declared (several values of `header.X` /
`query.X`, the client's own address for `client_ip`), and valid or unknown session ids. Every
answer is recorded (`Ledger`) for the verdict, and marked a Locust failure when no policy of
the route explains it.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from locust import FastHttpUser

from gateway.loadtest.targets import (
    NO_CREDENTIAL,
    UNKNOWN_SESSION,
    Record,
    Target,
    explain,
)


@dataclass
class Setup:
    """What every process of a run sends alike: the run id and the sessions written."""

    run: str = field(default_factory=lambda: secrets.token_hex(4))
    sessions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Key prefix -> [{"id": ..., "fields": {...}}]."""


class Ledger:
    """The answers of this process, drained into reports (workers) or kept (master, local)."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def drain(self) -> list[Record]:
        records, self.records = self.records, []
        return records


class PacedUser(FastHttpUser):
    """Paced on an absolute schedule so that `users` users together offer `rate` requests/s
    (no catch-up burst after a slow answer). Also the base of the project's own rig."""

    abstract = True
    network_timeout = 10.0
    connection_timeout = 5.0
    rate = 1.0
    users = 1

    def on_start(self) -> None:
        self.interval = self.users / self.rate if self.rate > 0 else 1.0
        # A random phase, so users spawned together do not fire together.
        self.next_at = time.monotonic() + random.uniform(0, self.interval)

    def wait_time(self) -> float:
        now = time.monotonic()
        # Behind by more than one interval (a slow answer): no burst to catch up.
        self.next_at = max(self.next_at + self.interval, now - self.interval)
        return max(0.0, self.next_at - now)


def make_user(
    targets: Sequence[Target], setup: Setup, ledger: Ledger, *, rate: float, users: int
) -> type[FastHttpUser]:
    """A `FastHttpUser` class with one task per target, weighted by the target's rate."""
    total = sum(t.rate for t in targets)
    tasks: dict[Callable[[Any], None], int] = {}
    for target in targets:
        if target.rate > 0:
            tasks[_task(target, setup, ledger)] = max(1, round(1000 * target.rate / total))
    attrs = {"tasks": tasks, "rate": rate, "users": users, "abstract": False}
    return type("GatewayUser", (PacedUser,), attrs)


def _task(target: Target, setup: Setup, ledger: Ledger) -> Callable[[Any], None]:
    plan = target.plan
    body: bytes | None = None
    headers = dict(plan.headers)
    if isinstance(plan.body, str):
        body = plan.body.encode()
    elif plan.body is not None:
        import json

        body = json.dumps(plan.body).encode()
        headers.setdefault("Content-Type", "application/json")
    if target.host is not None:
        headers["Host"] = target.host
    session = target.session
    invalid_share = plan.invalid_share

    def task(user: Any) -> None:
        key = random.randrange(plan.keys)
        sent = dict(headers)
        value = f"lt-{setup.run}-{key}"
        for name in target.key_headers:
            sent[name] = value
        path = random.choice(target.paths)
        if target.key_queries:
            query = urlencode(dict.fromkeys(target.key_queries, value))
            path += ("&" if "?" in path else "?") + query
        credential = NO_CREDENTIAL
        if session is not None:
            known = setup.sessions.get(session.prefix, [])
            if not known or random.random() < invalid_share:
                credential, sid = UNKNOWN_SESSION, secrets.token_urlsafe(32)
            else:
                credential = random.randrange(len(known))
                sid = known[credential]["id"]
            if session.bearer:
                sent["Authorization"] = f"Bearer {sid}"
            else:
                sent["Cookie"] = f"{session.cookie}={sid}"
        at = time.time()
        with user.client.request(
            target.method, path, headers=sent, data=body, catch_response=True, name=target.route
        ) as resp:
            status = int(resp.status_code or 0)
            cache = (resp.headers.get("X-Cache") or "").upper() if status else ""
            why = explain(target, status, credential)
            if status == 0:
                why = f"no answer: {resp.error!r}"
            if why is None:
                resp.success()
            else:
                resp.failure(why)
        ledger.records.append((target.route, at, status, cache, credential, key))

    task.__name__ = f"route_{target.route}"
    return task
