"""Dropping stored responses: after a successful unsafe request (RFC 9111 4.4), and on an
admin purge (`POST /-/cache/purge`).

Purges read the route's index (a lexicographically sorted set of the URIs it stored), so a
path or a prefix costs a range read, never a SCAN of the keyspace.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

from gateway.api import (
    AdminCall,
    BadPath,
    PolicyContext,
    Request,
    Response,
    StoreUnavailable,
    normalise,
)
from policies.cache.config import CacheOptions
from policies.cache.store import CacheStore, Index, Uri, normalise_query, uri_from_member, uri_key
from policies.cache.writer import Writer

log = logging.getLogger("policies.cache")

PURGE_TOMB_MS = 120_000
"""How long a purge keeps fills that were already in flight from storing their answer."""
_PAGE = 256
_PURGE_FIELDS = frozenset({"route", "path", "prefix", "host"})


class Cache(Protocol):
    """What invalidation needs of a cache policy (`policies.cache.policy.Cache`): the policy
    calls down into this module, never the other way."""

    @property
    def context(self) -> PolicyContext: ...

    @property
    def options(self) -> CacheOptions: ...

    @property
    def cache(self) -> CacheStore: ...

    @property
    def writer(self) -> Writer: ...


def same_host_target(request: Request, reference: str) -> tuple[str, str] | None:
    """(path, normalised query) of a Location / Content-Location on the request's host."""
    base = f"{request.path}?{request.query_string}" if request.query_string else request.path
    try:
        parts = urlsplit(urljoin(base, reference.strip()))
        if parts.scheme not in ("", "http", "https"):
            return None
        if parts.netloc and parts.netloc.lower() != request.host:
            return None
        return normalise(parts.path or "/"), normalise_query(parts.query)
    except (ValueError, BadPath):
        return None


async def invalidate_after_write(cache: Cache, request: Request, response: Response) -> None:
    """A 2xx/3xx answer to an unsafe method: drop its URI and the same-host URIs its
    Location and Content-Location name, every variant (and, with vary_session, every
    user's copy)."""
    targets = [(request.path, normalise_query(request.query_string))]
    for name in ("Location", "Content-Location"):
        for value in response.headers.getall(name, []):
            target = same_host_target(request, value)
            if target is not None and target not in targets:
                targets.append(target)
    route = request.route.name
    scope = cache.context.scope
    timeouts = request.route.upstream.config.timeouts
    tomb_ms = int((timeouts.connect + timeouts.read) * 1000) + 1000
    try:
        uris: list[Uri] = []
        for path, query in targets:
            uris.append(uri_key(scope, route, request.host, path, query))
            if cache.options.vary_session:
                low = _encode(path) + b"\x00" + _encode(request.host) + b"\x00"
                low += _encode(query) + b"\x00"
                members = await cache.cache.index_range(
                    Index(scope, route), b"[" + low, b"[" + low + b"\xff", 10_000
                )
                uris.extend(uri_from_member(scope, route, member) for member in members)
        await cache.writer.drop(uris, tomb_ms)
    except StoreUnavailable as exc:
        log.warning("cache invalidation after %s %s failed: %s", request.method, route, exc)


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


async def purge(call: AdminCall) -> tuple[int, Any]:
    """`POST /-/cache/purge` `{"route": ..., "path": ..., "prefix": ..., "host": ...}`.

    `path` removes that path (every query, host and variant), `prefix` every path starting
    with it, `route` alone all the route stored; `host` narrows to one host. Paths are as
    the upstream receives them (after `strip_prefix`). Answers `{"purged": <URIs>}`.
    """
    body = call.body
    problem = _check(body)
    if problem is not None:
        return 400, {"error": "invalid_purge", "detail": problem}
    route, path, prefix, host = (body.get(name) for name in ("route", "path", "prefix", "host"))
    targets: dict[tuple[str, str], Cache] = {}
    for instance in call.instances:
        for name in instance.context.routes:
            if route is None or name == route:
                targets[(instance.context.scope, name)] = instance  # type: ignore[assignment]
    if route is not None and not targets:
        return 404, {"error": "unknown_route", "route": route}
    if path is not None:
        low, high = b"[" + _encode(path) + b"\x00", b"[" + _encode(path) + b"\x00\xff"
    elif prefix is not None:
        low, high = b"[" + _encode(prefix), b"[" + _encode(prefix) + b"\xff"
    else:
        low, high = b"-", b"+"
    purged = 0
    try:
        for (scope, name), instance in targets.items():
            purged += await _purge_index(instance, Index(scope, name), low, high, host)
    except StoreUnavailable as exc:
        return 503, {"error": "store_unavailable", "detail": str(exc)}
    return 200, {"purged": purged}


def _check(body: Any) -> str | None:
    if not isinstance(body, dict) or not body:
        return "expected a JSON object with route, path or prefix"
    unknown = set(body) - _PURGE_FIELDS
    if unknown:
        return f"unknown fields: {', '.join(sorted(unknown))}"
    for name in _PURGE_FIELDS:
        if name in body and not isinstance(body[name], str):
            return f"{name} must be a string"
    if not any(name in body for name in ("route", "path", "prefix")):
        return "give route, path or prefix"
    if "path" in body and "prefix" in body:
        return "give path or prefix, not both"
    for name in ("path", "prefix"):
        if name in body and not body[name].startswith("/"):
            return f"{name} must start with '/'"
    return None


async def _purge_index(
    cache: Cache, index: Index, low: bytes, high: bytes, host: str | None
) -> int:
    purged = 0
    while True:
        members = await cache.cache.index_range(index, low, high, _PAGE)
        if not members:
            return purged
        chosen = [m for m in members if host is None or m.split("\x00")[1] == host.lower()]
        uris = [uri_from_member(index.scope, index.route, member) for member in chosen]
        purged += await cache.writer.drop(uris, PURGE_TOMB_MS)
        await cache.cache.index_remove(index, chosen)
        if len(members) < _PAGE:
            return purged
        low = b"(" + _encode(members[-1])
