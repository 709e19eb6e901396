"""Locust scenarios against loadtest/gateway.yaml (started for you by `make loadtest`).

Select a scenario by class (`locust -f loadtest/locustfile.py PassthroughUser`) or by tag
(`--tags passthrough`). Each answer is checked: a wrong answer is a Locust failure, so the error
share means "wrong behaviour", never "a 429 we asked for". Request names carry the outcome in
brackets (`rate_limited [429]`, `cached_reads [HIT]`) so the CSV report holds the shares that
loadtest/thresholds.yaml checks.

| class           | tag           | route    | checks                                            |
|-----------------|---------------|----------|---------------------------------------------------|
| PassthroughUser | passthrough   | /pass    | 200, the upstream's body, X-Request-ID            |
| CachedReadsUser | cached_reads  | /cached  | body, X-Cache (HIT/STALE count as hits), Age      |
| RateLimitedUser | rate_limited  | /limited | 200 or 429 with RateLimit-Policy/RateLimit,       |
|                 |               |          | 429: Retry-After and the JSON body                |
| SessionUser     | session_users | /account | valid id: 200 and the forwarded identity, never   |
|                 |               |          | the credential; unknown id: 401, WWW-Authenticate |
| MixedUser       | mixed         | all      | a blend of the above                              |

Policy tags (`cache`, `rate_limit`, `session`) mark tasks that need that policy, so
`--exclude-tags cache` runs the blend without it. Environment (set by loadtest/run.py):
`LOADTEST_RATE` offered requests/s over all users (unset: 10/s per user), `LOADTEST_SESSIONS`
a JSON file of `[{"id", "user_id", "role"}]`, `LOADTEST_INVALID_SHARE` (0.1),
`LOADTEST_HOT_KEYS` (20), `LOADTEST_RL_LIMIT` (100) and `LOADTEST_RL_WINDOW` seconds (1): the
quota configured on /limited.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
from collections.abc import Callable
from functools import cache
from typing import Any

from locust import tag, task
from locust.contrib.fasthttp import ResponseContextManager

from gateway.loadtest.users import PacedUser

FAST_BODY = "Hello, World!"
CACHEABLE_BODY = "cacheable body"
_QUOTA = re.compile(r'^"([^"]*)";(?:.*;)?q=(\d+)(?:;|$)')
_WINDOW = re.compile(r";w=(\d+)(?:;|$)")
_REMAINING = re.compile(r'^"([^"]*)";(?:.*;)?r=(\d+)(?:;|$)')
_RESET = re.compile(r";t=(\d+)(?:;|$)")


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    return float(value) if value else default


@cache
def sessions() -> list[dict[str, str]]:
    """The valid sessions run.py wrote into Redis (read once per process)."""
    path = os.environ.get("LOADTEST_SESSIONS")
    if not path:
        return []
    with open(path, encoding="utf-8") as handle:
        data: list[dict[str, str]] = json.load(handle)
    return data


def header(resp: ResponseContextManager, name: str) -> str:
    """A response header's value, "" when absent."""
    value = resp.headers.get(name) if resp.headers is not None else None
    return value if isinstance(value, str) else ""


Check = Callable[[ResponseContextManager], tuple[str, "str | None"]]


def record(resp: ResponseContextManager, name: str, check: Check) -> None:
    """Judge `resp` with `check` -> (label, error); name the request `name [label]` and mark
    it failed when `error` says the answer was wrong. No answer at all, or one the check cannot
    read, is wrong too (never a silent success, never a crashed user)."""
    error: str | None
    if resp.status_code == 0:
        label, error = "no answer", f"no answer: {getattr(resp, 'error', None)!r}"
    else:
        try:
            label, error = check(resp)
        except Exception as exc:
            label, error = str(resp.status_code), f"unreadable answer: {exc!r}"
    resp.request_meta["name"] = f"{name} [{label}]" if label else name
    if error is None:
        resp.success()  # type: ignore[no-untyped-call]
    else:
        resp.failure(error)  # type: ignore[no-untyped-call]


def check_passthrough(resp: ResponseContextManager, body: str = FAST_BODY) -> str | None:
    """A proxied answer: the upstream's status and body, plus the request id the gateway adds."""
    if resp.status_code != 200:
        return f"status {resp.status_code}"
    if resp.text != body:
        return "body differs from the upstream's"
    if not header(resp, "X-Request-ID"):
        return "no X-Request-ID"
    return None


def check_cached(resp: ResponseContextManager) -> tuple[str, str | None]:
    """(HIT or MISS, error): a hit is X-Cache HIT or STALE and carries Age."""
    state = header(resp, "X-Cache").upper()
    if resp.status_code != 200:
        return state or "none", f"status {resp.status_code}"
    if resp.text != CACHEABLE_BODY:
        return state or "none", "body differs from the upstream's"
    if state in ("HIT", "STALE"):
        if not header(resp, "Age"):
            return "HIT", f"X-Cache {state} without Age"
        return "HIT", None
    if state in ("MISS", "EXPIRED"):
        return "MISS", None
    return "none", f"X-Cache {state or 'missing'}"


def check_rate_limit(resp: ResponseContextManager, limit: int, window: int) -> str | None:
    """The RateLimit fields on every answer; on 429 also Retry-After and the JSON body."""
    policy = header(resp, "RateLimit-Policy")
    state = header(resp, "RateLimit")
    quota, win = _QUOTA.match(policy), _WINDOW.search(policy)
    left, reset = _REMAINING.match(state), _RESET.search(state)
    if not (quota and win):
        return f"bad RateLimit-Policy {policy!r}"
    if not (left and reset):
        return f"bad RateLimit {state!r}"
    if (int(quota[2]), int(win[1])) != (limit, window):
        return f"RateLimit-Policy {policy!r} is not q={limit};w={window}"
    if quota[1] != left[1]:
        return "RateLimit names another policy than RateLimit-Policy"
    if not 0 <= int(left[2]) <= limit or not 0 <= int(reset[1]) <= window:
        return f"RateLimit {state!r} out of range"
    if resp.status_code == 200:
        return None if resp.text == FAST_BODY else "body differs from the upstream's"
    if resp.status_code != 429:
        return f"status {resp.status_code}"
    retry = header(resp, "Retry-After")
    if not retry.isdigit() or int(retry) > window:
        return f"bad Retry-After {retry!r}"
    if int(left[2]) != 0:
        return "429 with remaining quota"
    try:
        body = resp.json()
    except ValueError:
        return "429 body is not JSON"
    if body.get("error") != "rate_limited" or body.get("retry_after") != int(retry):
        return f"429 body {body!r}"
    return None


def check_session(
    resp: ResponseContextManager, session: dict[str, str] | None, secret: str
) -> str | None:
    """A known session: 200 with its identity forwarded and no credential; unknown: 401."""
    if session is None:
        if resp.status_code != 401:
            return f"unknown session answered {resp.status_code}"
        if not header(resp, "WWW-Authenticate"):
            return "401 without WWW-Authenticate"
        try:
            error = resp.json().get("error")
        except ValueError:
            return "401 body is not JSON"
        return None if error == "unauthenticated" else f"401 error {error!r}"
    if resp.status_code != 200:
        return f"valid session answered {resp.status_code}"
    seen: dict[str, Any] = resp.json()
    if seen.get("user_id") != session["user_id"] or seen.get("role") != session["role"]:
        return f"upstream saw identity {seen.get('user_id')!r}/{seen.get('role')!r}"
    for name in ("authorization", "cookie"):
        if secret in (seen.get(name) or ""):
            return f"the session credential reached the upstream in {name}"
    return None


class _Scenario(PacedUser):
    """Paced as `gateway loadtest` paces: all users together offer `LOADTEST_RATE` requests/s."""

    abstract = True

    def on_start(self) -> None:
        options = self.environment.parsed_options
        self.users = max(1, int(getattr(options, "num_users", None) or 1))
        total = _env_float("LOADTEST_RATE", 0.0)
        self.rate = total if total > 0 else 10.0 * self.users
        super().on_start()

    # -- one request per task, shared by the scenario classes and the blend ------------------
    def passthrough(self, name: str = "passthrough") -> None:
        with self.client.get("/pass/fast", catch_response=True) as resp:
            record(resp, name, lambda r: ("", check_passthrough(r)))

    def cached_read(self, name: str = "cached_reads") -> None:
        key = random.randrange(int(_env_float("LOADTEST_HOT_KEYS", 20)))
        with self.client.get(f"/cached/cacheable/k{key}", catch_response=True) as resp:
            record(resp, name, check_cached)

    def limited(self, name: str = "rate_limited") -> None:
        limit = int(_env_float("LOADTEST_RL_LIMIT", 100))
        window = int(_env_float("LOADTEST_RL_WINDOW", 1))
        with self.client.get("/limited/fast", catch_response=True) as resp:
            record(resp, name, lambda r: (str(r.status_code), check_rate_limit(r, limit, window)))

    def session_call(self, path: str, name: str) -> None:
        known = sessions()
        invalid = random.random() < _env_float("LOADTEST_INVALID_SHARE", 0.1)
        if not known and not invalid:
            with self.client.get(path, catch_response=True, name=name) as resp:
                record(resp, name, lambda r: ("", "no sessions: set LOADTEST_SESSIONS"))
            return
        session = None if invalid else random.choice(known)
        # Well-formed ids, so the gateway must ask Redis to learn they do not exist.
        secret = session["id"] if session else secrets.token_urlsafe(24)
        # A client-sent identity header must never reach the upstream.
        headers = {"X-User-Id": "spoofed"}
        if random.random() < 0.5:
            headers["Authorization"] = f"Bearer {secret}"
        else:
            headers["Cookie"] = f"sid={secret}"
        with self.client.get(path, headers=headers, catch_response=True) as resp:
            record(resp, name, lambda r: (str(r.status_code), check_session(r, session, secret)))


class PassthroughUser(_Scenario):
    """GET through a route without policies."""

    @tag("passthrough")
    @task
    def get(self) -> None:
        self.passthrough()


class CachedReadsUser(_Scenario):
    """GET of a few hot keys (warmed by run.py): nearly every answer is a cache hit."""

    @tag("cached_reads", "cache")
    @task
    def get(self) -> None:
        self.cached_read()


class RateLimitedUser(_Scenario):
    """One client above its quota: the configured share of 429s, with correct headers."""

    @tag("rate_limited", "rate_limit")
    @task
    def get(self) -> None:
        self.limited()


class SessionUser(_Scenario):
    """Known sessions by cookie or bearer token, plus a share of unknown ones (401)."""

    @tag("session_users", "session")
    @task
    def get(self) -> None:
        self.session_call("/account/whoami", "session_users")


class MixedUser(_Scenario):
    """A blend: mostly cached catalogue reads, then API calls, account pages, plain reads."""

    @tag("mixed", "cache")
    @task(5)
    def catalogue(self) -> None:
        self.cached_read("mixed cached")

    @tag("mixed", "rate_limit", "session")
    @task(2)
    def api(self) -> None:
        self.session_call("/api/whoami", "mixed api")

    @tag("mixed", "session")
    @task(2)
    def account(self) -> None:
        self.session_call("/account/whoami", "mixed account")

    @tag("mixed")
    @task(1)
    def plain(self) -> None:
        self.passthrough("mixed passthrough")
