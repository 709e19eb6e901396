"""One cacheable request on its way through the policy: what it looked up and holds."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from gateway.api import ANONYMOUS, Handler, Request, digest
from policies.cache.entry import Entry
from policies.cache.freshness import RequestDirectives
from policies.cache.near import NearKey
from policies.cache.store import Uri

CONDITIONAL = ("If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since")
"""Client preconditions: the cache answers them itself, they never steer a fill."""
RANGED = ("Range", "If-Range")


@dataclass(slots=True)
class Pending:
    """A GET/HEAD the cache takes part in."""

    request: Request
    call_next: Handler
    cc: RequestDirectives
    uri: Uri
    session: str
    lock_ms: int
    wait_s: float
    """How long a collapsed miss waits for another's fill: the upstream's connect + read."""
    vary: str = ""
    vary_known: bool = False
    """Whether `vary` is what this process saw stored, or only the no-Vary default."""
    variant: str = "-"
    started_us: int = 0
    """Store clock (µs) at the last lookup: a fill started then must not store an answer
    that an invalidation since has made obsolete."""
    rounds: int = 0
    near_key: NearKey | None = None
    """Where the answer is held in the near cache (when it has one)."""
    token: str = field(default_factory=lambda: os.urandom(12).hex())

    @property
    def shaped(self) -> bool:
        """A conditional or ranged request: answered from a stored entry gladly, but its
        own upstream answer (a 304, a 206) cannot fill the cache, so it never leads a fill."""
        headers = self.request.headers
        return any(name in headers for name in CONDITIONAL) or "Range" in headers


@contextmanager
def validating(request: Request, entry: Entry) -> Iterator[None]:
    """The request carries the stored validators instead of the client's preconditions for
    the duration (the client's are answered from the refreshed entry afterwards)."""
    headers = request.headers
    saved = {name: headers.getall(name) for name in (*CONDITIONAL, *RANGED) if name in headers}
    for name in saved:
        headers.popall(name)
    if entry.etag is not None:
        headers["If-None-Match"] = entry.etag
    last_modified = entry.header("Last-Modified")
    if last_modified is not None:
        headers["If-Modified-Since"] = last_modified
    try:
        yield
    finally:
        headers.popall("If-None-Match", None)
        headers.popall("If-Modified-Since", None)
        for name, values in saved.items():
            for value in values:
                headers.add(name, value)


def session_part(request: Request, fields: Sequence[str], credentialed: bool) -> str | None:
    """The session's share of the key: "" when the request is anonymous, a digest of the
    `vary_session` fields, or None when the request must bypass the cache (a session or the
    route's session credentials, but no `vary_session` to keep users apart)."""
    session = request.context.get("session")
    if fields:
        if isinstance(session, Mapping) and session:
            return digest("session", *(_field(session, name) for name in fields))
        return None if credentialed else ""
    if session or credentialed:
        return None
    return ""


def _field(session: Mapping[str, object], name: str) -> str:
    value = session.get(name)
    return ANONYMOUS if value is None else str(value)


Probe = tuple[str | None, bool]
"""A session policy's credentials on a route: (cookie name, bearer token)."""


def credential_probes(policies: Sequence[object]) -> tuple[Probe, ...]:
    """Where the route's session policies read credentials (their `cookie` / `bearer`
    options, SPEC names), so anonymous-looking requests that carry them are recognised."""
    probes: list[Probe] = []
    for policy in policies:
        options = getattr(policy, "options", None)
        cookie = getattr(options, "cookie", None)
        bearer = getattr(options, "bearer", None) is True
        if isinstance(cookie, str) or bearer:
            probes.append((cookie if isinstance(cookie, str) else None, bearer))
    return tuple(probes)


def carries_credentials(request: Request, probes: tuple[Probe, ...]) -> bool:
    """Whether the request presents one of the route's session credentials."""
    headers = request.headers
    for cookie, bearer in probes:
        if bearer and headers.get("Authorization", "")[:7].lower() == "bearer ":
            return True
        if cookie is not None:
            for line in headers.getall("Cookie", []):
                for pair in line.split(";"):
                    if pair.strip().partition("=")[0] == cookie:
                        return True
    return False
