"""Everything the cache writes after the upstream answered: store, freshen, release, drop.

Every write is followed by an event on the cache channel, so that waiters of a collapsed miss
wake up and other processes' near caches forget what changed. A write the store refuses or
cannot take is logged and skipped: the client still gets the upstream's answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from multidict import CIMultiDict

from gateway.api import Response, StoreUnavailable
from policies.cache.config import CacheOptions
from policies.cache.entry import Entry
from policies.cache.events import Events
from policies.cache.freshness import Freshness, assess, initial_age
from policies.cache.near import NearCache, VaryHints
from policies.cache.request import Pending
from policies.cache.store import CacheStore, Index, Uri
from policies.cache.syntax import format_http_date, parse_age, parse_http_date, vary_names
from policies.cache.variants import variant_id

log = logging.getLogger("policies.cache")

PASS_MS = 10_000
"""How long misses of a URI whose answer was not storable skip collapsing."""
_MAX_RETENTION = 365 * 86400.0
_KEEP_VALIDATABLE = (60.0, 86400.0)
"""An entry with validators outlives its freshness by its lifetime, within these bounds:
revalidating it costs the origin a 304 instead of a body."""


def retention(entry: Entry) -> float:
    """Seconds the store keeps `entry`: its freshness left, its stale windows, and a grace
    period for revalidation when it has validators."""
    fr = entry.freshness
    left = max(0.0, fr.lifetime - entry.initial_age)
    windows = 0.0 if fr.no_stale else max(fr.stale_while_revalidate, fr.stale_if_error)
    grace = 0.0
    if entry.etag is not None or entry.header("Last-Modified") is not None:
        low, high = _KEEP_VALIDATABLE
        grace = min(max(fr.lifetime, low), high)
    return min(left + windows + grace, _MAX_RETENTION)


class Writer:
    """The cache's writes, shared by the request path and background refreshes."""

    def __init__(
        self,
        *,
        cache: CacheStore,
        events: Events,
        near: NearCache | None,
        hints: VaryHints,
        options: CacheOptions,
        scope: str,
    ) -> None:
        self.cache = cache
        self.events = events
        self.near = near
        self.hints = hints
        self.options = options
        self.rules = options.rules()
        self.scope = scope

    async def keep(
        self,
        p: Pending,
        response: Response,
        lock_key: str,
        request_time: float,
        response_time: float,
    ) -> str | None:
        """Store the upstream's `response` if a shared cache may; None when stored, else why
        not. The body is read (up to max_body) only when the headers allow storing."""
        request = p.request
        if request.method != "GET":
            return "method"
        # A ranged request's answer is judged by its status: a 206 is never stored, a 200
        # (the upstream ignored the Range, or a revalidation without it) is whole.
        verdict = assess(
            method="GET",
            status=response.status,
            request_cc=dict(p.cc.directives),
            request_authorized="Authorization" in request.headers,
            headers=response.headers,
            rules=self.rules,
            response_time=response_time,
        )
        if verdict.reason is not None or verdict.freshness is None:
            return verdict.reason
        names = vary_names(response.headers.getall("Vary", [])) or ()
        ages = response.headers.getall("Age", [])
        age = parse_age(ages)
        if ages and (len(ages) > 1 or ages[0] != str(age)):
            # A list, or an invalid value: the client of this miss gets what the cache read
            # (the first member, or no Age), not a field it cannot trust (RFC 9111 5.1).
            response.headers.popall("Age")
            if age is not None:
                response.headers["Age"] = str(age)
        body = await response.read(self.options.max_body)
        if body is None:
            return "too big"
        headers = [
            (name, value)
            for name, value in response.headers.items()
            if name.lower() not in verdict.omit and name.lower() != "x-cache"
        ]
        if "Date" not in response.headers:
            # RFC 9110 6.6.1: a response cached without Date gets the time it arrived.
            headers.append(("Date", format_http_date(response_time)))
        entry = Entry(
            status=response.status,
            headers=headers,
            body=body,
            initial_age=initial_age(
                age=age,
                date=parse_http_date(response.headers.get("Date"), response_time),
                request_time=request_time,
                response_time=response_time,
            ),
            freshness=verdict.freshness,
            vary=",".join(names),
        )
        return await self._put(p, entry, variant_id(names, request.headers), lock_key)

    async def freshen(
        self,
        p: Pending,
        entry: Entry,
        update: CIMultiDict[str],
        lock_key: str,
        request_time: float,
        response_time: float,
    ) -> Entry:
        """Apply a 304's headers to `entry` (RFC 9111 4.3.4) and store the result; returns
        the entry to serve (stored, or only updated if the origin no longer allows storing)."""
        merged = entry.merged_headers(update)
        verdict = assess(
            method="GET",
            status=entry.status,
            request_cc=dict(p.cc.directives),
            request_authorized="Authorization" in p.request.headers,
            headers=merged,
            rules=self.rules,
            response_time=response_time,
        )
        # The 304's own Date (or its arrival) dates the refreshed copy, not the old Date.
        date = parse_http_date(update.get("Date"), response_time)
        fresh = Entry(
            status=entry.status,
            headers=[(k, v) for k, v in merged.items() if k.lower() not in verdict.omit],
            body=entry.body,
            initial_age=initial_age(
                age=parse_age(update.getall("Age", [])),
                date=response_time if date is None else date,
                request_time=request_time,
                response_time=response_time,
            ),
            freshness=verdict.freshness or Freshness(lifetime=0.0, no_cache=True),
            vary=entry.vary,
            stored_at=entry.stored_at,
        )
        if verdict.reason is not None:
            try:
                await self.drop([p.uri], p.lock_ms)
            except StoreUnavailable as exc:
                log.warning("cache store failed: %s", exc)
            await self.release(p, lock_key)
            return fresh
        reason = await self._put(p, fresh, p.variant, lock_key)
        if reason is not None:
            await self.release(p, lock_key)
        return fresh

    async def _put(self, p: Pending, entry: Entry, variant: str, lock_key: str) -> str | None:
        keep = retention(entry)
        if keep <= 0:
            return "already stale"
        uri = p.uri
        try:
            stored_ms = await self.cache.put(
                uri,
                vary=entry.vary,
                variant=variant,
                blob=entry.encode(),
                retention_ms=int(keep * 1000) + 1,
                lock_key=lock_key,
                token=p.token,
                max_variants=self.options.max_variants,
                fill_start_us=p.started_us,
            )
        except StoreUnavailable as exc:
            log.warning("cache store failed: %s", exc)
            return "store unavailable"
        if not stored_ms:
            return "invalidated meanwhile"
        entry.stored_at = stored_ms / 1000
        self.hints.put(uri.tag, entry.vary)
        self.events.touch(uri.tag)
        if self.near is not None:
            self.near.drop(uri.tag)
            if p.near_key is not None:
                self.near.put(p.near_key, uri.tag, entry.vary, variant, entry)
        index = Index(self.scope, p.request.route.name)
        await self._quietly(
            self.cache.index_add(index, uri, stored_ms + int(keep * 1000)),
            self.cache.publish("s", self.events.origin, [uri.tag]),
        )
        return None

    async def release(self, p: Pending, lock_key: str, *, pass_ms: int = 0) -> None:
        """Give up the lock (if still ours) and tell waiters to go upstream themselves."""
        await self._quietly(self.cache.release(lock_key, p.uri, p.token, pass_ms))
        await self._quietly(self.cache.publish("r", self.events.origin, [p.uri.tag]))

    async def drop(self, uris: Iterable[Uri], tomb_ms: int) -> int:
        """Remove every variant of `uris`, everywhere (store, near caches); returns how many
        URIs had entries. Raises `StoreUnavailable` (the caller decides what that means)."""
        targets = list(uris)
        if not targets:
            return 0
        found = await asyncio.gather(*(self.cache.invalidate(uri, tomb_ms) for uri in targets))
        tags = [uri.tag for uri in targets]
        for tag in tags:
            self.events.touch(tag)
            if self.near is not None:
                self.near.drop(tag)
        await self.cache.publish("d", self.events.origin, tags)
        return sum(1 for count in found if count)

    @staticmethod
    async def _quietly(*calls: object) -> None:
        results = await asyncio.gather(*calls, return_exceptions=True)  # type: ignore[call-overload]
        for result in results:
            if isinstance(result, StoreUnavailable):
                log.warning("cache store failed: %s", result)
            elif isinstance(result, BaseException):
                raise result
