"""The `cache` policy: an RFC 9111 shared cache in the store, shared by every gateway.

A GET or HEAD is looked up in one store call (or the near cache). Then:
- fresh (or stale within the client's max-stale): answered from the entry, `HIT` (`STALE`);
- stale within stale-while-revalidate: answered at once, `STALE`, and refreshed in the
  background by one gateway cluster-wide (lock in the store, checked against the copy seen);
- stale otherwise, or `no-cache`: revalidated with the stored validators, collapsed like a
  miss; a 304 refreshes the stored headers, `EXPIRED`; an upstream failure inside
  stale-if-error is answered with the stale copy, `STALE`;
- missing: the lookup took the fill lock (`MISS`, one upstream request) or someone else
  holds it: wait for their event (bounded by the upstream's timeouts), then serve what they
  stored (`HIT`), or go upstream if it was not storable.
Other methods pass (`BYPASS`); a successful unsafe one invalidates its URIs. A store failure
makes the policy step aside (`BYPASS`), never an error of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from gateway.api import (
    AdminEndpoint,
    Handler,
    HTTPError,
    Policy,
    PolicyContext,
    Request,
    Response,
    StoreUnavailable,
)
from policies.cache.config import CacheOptions
from policies.cache.entry import CorruptEntry, Entry
from policies.cache.events import events_for
from policies.cache.freshness import (
    NO_DIRECTIVES,
    Use,
    current_age,
    request_directives,
    usable,
    while_revalidating,
)
from policies.cache.invalidation import invalidate_after_write, purge
from policies.cache.near import NearCache, VaryHints
from policies.cache.request import (
    Pending,
    Probe,
    carries_credentials,
    credential_probes,
    session_part,
)
from policies.cache.serve import from_entry
from policies.cache.store import CacheStore, Lookup, normalise_query, uri_key
from policies.cache.upstream import BYPASS, HIT, MISS, STALE, Upstream
from policies.cache.variants import NO_VARIANT, selecting_pairs, variant_id
from policies.cache.writer import Writer

log = logging.getLogger("policies.cache")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "REPORT", "SEARCH"})


class OnlyIfCached(HTTPError):
    """`Cache-Control: only-if-cached` and nothing usable stored (RFC 9111 5.2.1.7)."""

    status = 504
    code = "not_cached"


class Cache(Upstream, Policy):
    """A shared HTTP cache for the route (see docs/policies/cache.md)."""

    Options = CacheOptions
    admin_endpoints: ClassVar[Mapping[str, AdminEndpoint]] = {"POST /-/cache/purge": purge}

    def __init__(self, options: CacheOptions, context: PolicyContext) -> None:
        super().__init__(options, context)
        self.options: CacheOptions = options
        store = context.store
        self.cache = CacheStore(store)
        self.events = events_for(store)
        self.near = (
            NearCache(options.near_cache) if store.shared and options.near_cache > 0 else None
        )
        self.hints = VaryHints()
        self.writer = Writer(
            cache=self.cache,
            events=self.events,
            near=self.near,
            hints=self.hints,
            options=options,
            scope=context.scope,
        )
        self._offset = 0.0  # store clock minus this process's clock, seconds
        self._refreshing: set[tuple[str, str]] = set()
        self._probes: dict[str, tuple[Probe, ...]] = {}
        self._results = context.metrics.counter(
            "gateway_cache_results_total",
            "Cache policy answers by route and result.",
            ["route", "result"],
        )
        self._children: dict[tuple[str, str], Any] = {}

    async def start(self) -> None:
        await self.events.attach(self._forget)

    async def stop(self) -> None:
        self.events.detach(self._forget)

    def _forget(self, tag: str | None) -> None:
        if self.near is not None:
            self.near.drop(tag)

    def describe(self) -> str:
        o = self.options
        return (
            f"{self.context.name} ttl={o.ttl:g}s swr={o.stale_while_revalidate:g}s "
            f"sie={o.stale_if_error:g}s max_body={o.max_body}"
        )

    # -- dispatch ----------------------------------------------------------------------------
    async def __call__(self, request: Request, call_next: Handler) -> Response:
        method = request.method
        try:
            if method == "GET" or method == "HEAD":
                if self.near is not None:
                    hit = self._near_hit(request, self.near)
                    if hit is not None:
                        return hit
                return await self._read(request, call_next)
            request.log["cache"] = BYPASS
            response = await call_next(request)
        except HTTPError as exc:
            # The upstream failed (or only-if-cached found nothing): the error answer says
            # what the cache had decided too.
            result = request.log.get("cache") or MISS
            exc.headers.setdefault("X-Cache", result)
            self._count(request, result)
            raise
        if method not in SAFE_METHODS and 200 <= response.status < 400:
            await invalidate_after_write(self, request, response)
        return self._done(request, response, BYPASS)

    def _near_hit(self, request: Request, near: NearCache) -> Response | None:
        """The hot path: a fresh entry held in this process, for a request without directives
        (anonymous, or keyed by `vary_session`). Anything else takes the full path."""
        if not self.events.subscribed or "Cache-Control" in request.headers:
            return None
        session = ""
        if request.context.get("session") or self._credentialed(request):
            if not self.options.vary_session:
                return None
            part = session_part(request, self.options.vary_session, self._credentialed(request))
            if part is None:
                return None
            session = part
        route = request.route.name
        item = near.get((route, request.host, request.path, request.query_string, session))
        if item is None:
            return None
        variant = variant_id(item.names, request.headers) if item.names else NO_VARIANT
        entry = item.variants.get(variant)
        if entry is None:
            return None
        now = time.time() + self._offset
        age = current_age(entry.initial_age, entry.stored_at, now)
        if usable(age, entry.freshness, NO_DIRECTIVES) is not Use.FRESH:
            return None
        return self._done(request, from_entry(request, entry, age=age, result=HIT, now=now), HIT)

    async def _read(self, request: Request, call_next: Handler) -> Response:
        cc = request_directives(request.headers.getall("Cache-Control", []))
        if cc.no_store:
            return await self._bypass(request, call_next)
        session = session_part(request, self.options.vary_session, self._credentialed(request))
        if session is None:
            return await self._bypass(request, call_next)
        route = request.route
        uri = uri_key(
            self.context.scope,
            route.name,
            request.host,
            request.path,
            normalise_query(request.query_string),
            session,
        )
        timeouts = route.upstream.config.timeouts
        wait = timeouts.connect + timeouts.read
        p = Pending(request, call_next, cc, uri, session, int(wait * 1000) + 1000, wait)
        p.near_key = (route.name, request.host, request.path, request.query_string, session)
        hint = self.hints.get(uri.tag)
        p.vary_known = hint is not None
        p.vary = hint or ""
        p.variant = self._variant(p.vary, request)
        try:
            mark = self.events.mark()
            found = await self._lookup(p, lock=not p.shaped and request.method == "GET")
            return await self._found(p, found, mark)
        except StoreUnavailable as exc:
            # Raised only before the upstream was asked: every write after it is guarded.
            log.debug("cache lookup failed, bypassing: %s", exc)
            return await self._bypass(request, call_next)

    async def _lookup(self, p: Pending, *, lock: bool) -> Lookup:
        # Not knowing the URI's Vary yet, send the headers: the store finds the variant of a
        # hit itself (one round trip); only a miss of such a variant needs a second call.
        headers = () if p.vary_known else selecting_pairs(p.request.headers.items())
        found = await self.cache.lookup(
            p.uri, p.vary, p.variant, lock=lock, token=p.token, lock_ms=p.lock_ms, headers=headers
        )
        if found.state == "H" and found.variant is not None and found.vary is not None:
            p.vary, p.variant = found.vary, found.variant
        elif found.state == "M" and found.vary is not None:
            # The URI varies on other headers than this process believed: ask again.
            p.vary = found.vary
            p.variant = self._variant(found.vary, p.request)
            found = await self.cache.lookup(
                p.uri, p.vary, p.variant, lock=lock, token=p.token, lock_ms=p.lock_ms
            )
        self._offset = found.now_us / 1_000_000 - time.time()
        p.started_us = found.now_us
        if found.vary is not None:
            self.hints.put(p.uri.tag, found.vary)
            p.vary_known = True
        return found

    async def _found(self, p: Pending, found: Lookup, mark: int) -> Response:
        if found.blob is not None:
            try:
                entry = Entry.decode(found.blob, found.stored_ms / 1000)
            except CorruptEntry:
                log.warning("unreadable cache entry; fetching it again")
                return await self._pass(p)
            return await self._use(p, entry, found.now_us / 1_000_000, mark)
        if p.cc.only_if_cached:
            raise OnlyIfCached()
        if found.state == "L":
            return await self._fill(p, p.uri.lock(p.variant if found.vary is not None else "-"))
        if found.state == "W":
            return await self._follow(p)
        if found.state == "P" or found.state == "N" or found.state == "M":
            return await self._pass(p)
        raise StoreUnavailable(f"unexpected lookup state {found.state!r}")

    async def _use(self, p: Pending, entry: Entry, now: float, mark: int) -> Response:
        age = current_age(entry.initial_age, entry.stored_at, now)
        use = usable(age, entry.freshness, p.cc)
        if use is Use.FRESH:
            if (
                self.near is not None
                and p.near_key is not None
                and self.events.unchanged_since(p.uri.tag, mark)
            ):
                self.near.put(p.near_key, p.uri.tag, entry.vary, p.variant, entry)
            return self._served(p, entry, age, HIT, now)
        if use is Use.STALE:
            return self._served(p, entry, age, STALE, now)
        if p.cc.only_if_cached:
            raise OnlyIfCached()
        if while_revalidating(age, entry.freshness, p.cc):
            self._refresh_later(p, entry)
            return self._served(p, entry, age, STALE, now)
        return await self._revalidate(p, entry, age)

    # -- answers -----------------------------------------------------------------------------
    async def _bypass(self, request: Request, call_next: Handler) -> Response:
        request.log["cache"] = BYPASS
        return self._done(request, await call_next(request), BYPASS)

    def _served(self, p: Pending, entry: Entry, age: float, result: str, now: float) -> Response:
        return self._done(
            p.request, from_entry(p.request, entry, age=age, result=result, now=now), result
        )

    def _done(self, request: Request, response: Response, result: str) -> Response:
        response.headers["X-Cache"] = result
        self._count(request, result)
        return response

    def _count(self, request: Request, result: str) -> None:
        request.log["cache"] = result
        key = (request.route.name, result)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._results.labels(*key)
        child.inc()

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _variant(vary: str, request: Request) -> str:
        return variant_id(vary.split(","), request.headers) if vary else NO_VARIANT

    def _credentialed(self, request: Request) -> bool:
        route = request.route
        probes = self._probes.get(route.name)
        if probes is None:
            probes = self._probes[route.name] = credential_probes(route.policies)
        return bool(probes) and carries_credentials(request, probes)
