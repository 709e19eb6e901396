"""What a shared cache may store and reuse: RFC 9111 and RFC 5861 as pure functions.

Everything here works on parsed header values and plain numbers (seconds, POSIX timestamps);
the caller supplies the clock. `assess` decides at store time (storable? how fresh?),
`usable` and the two window checks decide at serve time, `not_modified` answers a client's
conditional request from a stored response.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from policies.cache.syntax import (
    MAX_DELTA,
    Directives,
    delta_seconds,
    entity_tags,
    field_names,
    opaque_tag,
    parse_cache_control,
    parse_http_date,
    vary_names,
)
from policies.cache.targeted import response_directives

HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
"""RFC 9110 15.1: cacheable by default, i.e. under heuristic (or policy) freshness."""

UNDERSTOOD_STATUSES = frozenset(
    {200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 304, 305, 307, 308}
    | set(range(400, 418))
    | {421, 422, 426, 428, 429, 431, 451}
    | set(range(500, 506))
    | {511}
) - {206}
"""Status codes whose caching semantics this cache implements (for `must-understand`).
206 is left out on purpose: partial responses are never stored."""


class Fields(Protocol):
    """Read access to header fields (a CIMultiDict satisfies it)."""

    def getall(self, key: str, default: list[str]) -> list[str]: ...

    def __contains__(self, key: object) -> bool: ...


@dataclass(frozen=True, slots=True)
class Rules:
    """The policy's options that the RFC rules consult."""

    ttl: float = 0.0
    respect_origin: bool = True
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    store_set_cookie: bool = False
    heuristic_fraction: float = 0.1
    heuristic_max: float = 86400.0
    targeted: tuple[str, ...] = ("CDN-Cache-Control",)
    """Targeted cache-control fields obeyed in place of Cache-Control (RFC 9213), in order."""


@dataclass(frozen=True, slots=True)
class Freshness:
    """How long a stored response may be used, decided when it is stored (or refreshed)."""

    lifetime: float
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    no_cache: bool = False
    """Stored, but validated with the origin before every use."""
    no_stale: bool = False
    """Never served stale: must-revalidate, proxy-revalidate, s-maxage or no-cache."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """`assess`'s answer: `reason` is None when the response may be stored."""

    reason: str | None
    freshness: Freshness | None = None
    omit: frozenset[str] = frozenset()
    """Header names (lower case) to leave out of the stored copy (qualified no-cache/private)."""


def assess(
    *,
    method: str,
    status: int,
    request_cc: Directives,
    request_authorized: bool,
    headers: Fields,
    rules: Rules,
    response_time: float,
) -> Verdict:
    """May a shared cache store this response (RFC 9111 3, 3.5), and how fresh is it (4.2)?"""
    if method != "GET":
        return Verdict("method")
    if status < 200 or status in (206, 304):
        return Verdict("status")
    if "no-store" in request_cc:
        return Verdict("request no-store")
    cc, targeted = response_directives(headers, rules.targeted)
    if "must-understand" in cc:
        # RFC 9111 5.2.2.3: with a status it understands, the cache ignores no-store.
        if status not in UNDERSTOOD_STATUSES:
            return Verdict("must-understand")
    elif "no-store" in cc:
        return Verdict("no-store")
    omit: frozenset[str] = frozenset()
    if "private" in cc:
        if cc["private"] is None:
            return Verdict("private")
        omit = field_names(cc["private"])
    if cc.get("no-cache"):
        omit = omit | field_names(cc["no-cache"])
    if request_authorized and not ("public" in cc or "s-maxage" in cc or "must-revalidate" in cc):
        return Verdict("authorization")
    if "Set-Cookie" in headers and not rules.store_set_cookie:
        return Verdict("set-cookie")
    if vary_names(headers.getall("Vary", [])) is None:
        return Verdict("vary *")
    explicit = _explicit_lifetime(cc, headers, response_time, use_expires=not targeted)
    if explicit is None and status not in HEURISTIC_STATUSES and "public" not in cc:
        return Verdict("no explicit freshness")
    if explicit is not None and rules.respect_origin:
        lifetime = explicit
    elif rules.ttl > 0 or explicit is not None:
        lifetime = rules.ttl
    else:
        lifetime = _heuristic(headers, rules, response_time)
    no_cache = "no-cache" in cc and cc["no-cache"] is None
    no_stale = no_cache or "must-revalidate" in cc or "proxy-revalidate" in cc or "s-maxage" in cc
    freshness = Freshness(
        lifetime=lifetime,
        stale_while_revalidate=_window(cc, "stale-while-revalidate", rules),
        stale_if_error=_window(cc, "stale-if-error", rules),
        no_cache=no_cache,
        no_stale=no_stale,
    )
    validated = "ETag" in headers or "Last-Modified" in headers
    stale_use = not no_stale and (freshness.stale_while_revalidate or freshness.stale_if_error)
    if (lifetime <= 0 or no_cache) and not validated and not stale_use:
        return Verdict("nothing to reuse")
    return Verdict(None, freshness, omit)


def _explicit_lifetime(
    cc: Directives, headers: Fields, response_time: float, *, use_expires: bool
) -> float | None:
    for name in ("s-maxage", "max-age"):
        if name in cc:
            value = delta_seconds(cc[name])
            if value is not None:
                return float(value)
    if not use_expires:
        return None  # a targeted field rules: Expires is ignored with Cache-Control
    expires = headers.getall("Expires", [])
    if not expires:
        return None
    # An invalid Expires (e.g. "0") means "already expired" (RFC 9111 5.3).
    expires_at = parse_http_date(expires[0], response_time)
    if expires_at is None:
        return 0.0
    date = _date(headers, response_time)
    return float(max(0.0, min(expires_at - date, MAX_DELTA)))


def _heuristic(headers: Fields, rules: Rules, response_time: float) -> float:
    last_modified = parse_http_date(_first(headers, "Last-Modified"), response_time)
    if last_modified is None or rules.heuristic_fraction <= 0:
        return 0.0
    since = _date(headers, response_time) - last_modified
    return max(0.0, min(since * rules.heuristic_fraction, rules.heuristic_max))


def _window(cc: Directives, name: str, rules: Rules) -> float:
    if rules.respect_origin and name in cc:
        value = delta_seconds(cc[name])
        if value is not None:
            return float(value)
    return (
        rules.stale_while_revalidate if name == "stale-while-revalidate" else rules.stale_if_error
    )


def _first(headers: Fields, name: str) -> str | None:
    values = headers.getall(name, [])
    return values[0] if values else None


def _date(headers: Fields, response_time: float) -> float:
    # No valid Date: the time the response arrived stands in (RFC 9110 6.6.1).
    date = parse_http_date(_first(headers, "Date"), response_time)
    return response_time if date is None else date


def initial_age(
    *, age: int | None, date: float | None, request_time: float, response_time: float
) -> float:
    """RFC 9111 4.2.3 `corrected_initial_age` (the age the response had when it arrived)."""
    apparent = max(0.0, response_time - date) if date is not None else 0.0
    corrected = (age or 0) + max(0.0, response_time - request_time)
    return max(apparent, corrected)


def current_age(initial: float, stored_at: float, now: float) -> float:
    """RFC 9111 4.2.3 `current_age`: the initial age plus the time spent in this cache."""
    return initial + max(0.0, now - stored_at)


def age_header(age: float) -> str:
    """The `Age` value to send: whole seconds, capped like any delta-seconds."""
    return str(min(int(age), MAX_DELTA))


@dataclass(frozen=True, slots=True)
class RequestDirectives:
    """The request's Cache-Control (RFC 9111 5.2.1, RFC 5861 4); unknown ones are ignored."""

    no_cache: bool = False
    no_store: bool = False
    max_age: int | None = None
    max_stale: float | None = None
    """Seconds of staleness the client accepts; infinity for a bare `max-stale`."""
    min_fresh: int | None = None
    only_if_cached: bool = False
    stale_if_error: int | None = None
    directives: tuple[tuple[str, str | None], ...] = ()


NO_DIRECTIVES = RequestDirectives()


def request_directives(lines: list[str]) -> RequestDirectives:
    """Parse a request's `Cache-Control` lines (`Pragma` is obsolete and ignored)."""
    if not lines:
        return NO_DIRECTIVES
    cc = parse_cache_control(lines)
    max_stale: float | None = None
    if "max-stale" in cc:
        value = cc["max-stale"]
        seconds = delta_seconds(value)
        if value is None:
            max_stale = float("inf")
        elif seconds is not None:
            max_stale = float(seconds)
    return RequestDirectives(
        no_cache="no-cache" in cc,
        no_store="no-store" in cc,
        max_age=delta_seconds(cc.get("max-age")),
        max_stale=max_stale,
        min_fresh=delta_seconds(cc.get("min-fresh")),
        only_if_cached="only-if-cached" in cc,
        stale_if_error=delta_seconds(cc.get("stale-if-error")),
        directives=tuple(cc.items()),
    )


class Use(Enum):
    """What a stored response is good for, for one request."""

    FRESH = "fresh"
    """Serve it."""
    STALE = "stale"
    """Stale, but the request's max-stale accepts it: serve it."""
    VALIDATE = "validate"
    """Ask the origin first (stale, no-cache, or the request wants something fresher)."""


def usable(age: float, freshness: Freshness, request: RequestDirectives) -> Use:
    """RFC 9111 4 (and 5.2.1 for the request's directives): may this response be served as is?"""
    if freshness.no_cache or request.no_cache:
        return Use.VALIDATE
    if request.max_age is not None and age > request.max_age:
        return Use.VALIDATE
    left = freshness.lifetime - age
    if request.min_fresh is not None and left < request.min_fresh:
        return Use.VALIDATE
    if left > 0:
        return Use.FRESH
    if request.max_stale is not None and not freshness.no_stale and -left <= request.max_stale:
        return Use.STALE
    return Use.VALIDATE


def while_revalidating(age: float, freshness: Freshness, request: RequestDirectives) -> bool:
    """RFC 5861 3: stale, but inside stale-while-revalidate (and nothing forbids stale)."""
    if freshness.no_stale or request.no_cache or request.max_age is not None:
        return False
    if request.min_fresh is not None:
        return False
    return age < freshness.lifetime + freshness.stale_while_revalidate


def on_error(age: float, freshness: Freshness, request: RequestDirectives) -> bool:
    """RFC 5861 4: may the stale copy answer when the origin failed (error, timeout, 5xx)?"""
    if freshness.no_stale:
        return False
    window = freshness.stale_if_error
    if request.stale_if_error is not None:
        window = max(window, float(request.stale_if_error))
    return age < freshness.lifetime + window


def not_modified(
    *,
    method: str,
    if_none_match: str | None,
    if_modified_since: str | None,
    etag: str | None,
    last_modified: float | None,
    now: float,
) -> bool:
    """RFC 9110 13.2.2: would the stored response make this conditional GET/HEAD a 304?

    `last_modified` falls back to the stored response's Date or arrival (RFC 9111 4.3.2).
    If-None-Match, when present, decides alone (weak comparison).
    """
    if method not in ("GET", "HEAD"):
        return False
    if if_none_match is not None:
        tags = entity_tags(if_none_match)
        if tags is None:
            return True
        if etag is None:
            return False
        stored = opaque_tag(etag)
        return any(opaque_tag(tag) == stored for tag in tags)
    if if_modified_since is None or last_modified is None:
        return False
    since = parse_http_date(if_modified_since, now)
    if since is None or since > now:
        return False
    return last_modified <= since
