"""Where the cache asks the upstream: fills, collapsed waits, revalidations, refreshes.

A mixin of `Cache` (policy.py), split off to keep each file to one job: policy.py decides
from the store's answer, this module talks to the upstream and hands results to the writer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import abstractmethod

from gateway.api import HTTPError, PolicyContext, Request, Response, StoreUnavailable, UpstreamError
from policies.cache.entry import Entry
from policies.cache.events import Events
from policies.cache.freshness import current_age, on_error
from policies.cache.request import RANGED, Pending, validating
from policies.cache.store import CacheStore, Lookup
from policies.cache.writer import PASS_MS, Writer

log = logging.getLogger("policies.cache")

HIT, MISS, STALE, BYPASS, EXPIRED = "HIT", "MISS", "STALE", "BYPASS", "EXPIRED"
_MAX_ROUNDS = 4


class Upstream:
    """The cache's upstream side (mixed into `Cache`)."""

    context: PolicyContext
    cache: CacheStore
    events: Events
    writer: Writer
    _offset: float
    _refreshing: set[tuple[str, str]]

    @abstractmethod
    async def _lookup(self, p: Pending, *, lock: bool) -> Lookup: ...

    @abstractmethod
    async def _found(self, p: Pending, found: Lookup, mark: int) -> Response: ...

    @abstractmethod
    def _served(
        self, p: Pending, entry: Entry, age: float, result: str, now: float
    ) -> Response: ...

    @abstractmethod
    def _done(self, request: Request, response: Response, result: str) -> Response: ...
    async def _fill(self, p: Pending, lock_key: str) -> Response:
        """The one request that fills a missing entry; waiters learn the outcome by event."""
        p.request.log["cache"] = MISS
        released = False
        try:
            request_time = time.time()
            response = await p.call_next(p.request)
            reason = await self.writer.keep(p, response, lock_key, request_time, time.time())
            if reason is not None:
                log.debug("not stored: %s", reason)
                pass_ms = PASS_MS if response.status < 500 else 0
                await self.writer.release(p, lock_key, pass_ms=pass_ms)
            released = True
            return self._done(p.request, response, MISS)
        finally:
            if not released:
                # Upstream error, or the client left: followers must not wait for the lock.
                self.context.background.spawn(self.writer.release(p, lock_key), name="cache")

    async def _follow(self, p: Pending) -> Response:
        """Wait for the lock holder's event (no polling), then serve what it stored."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + p.wait_s
        while True:
            waiter = self.events.waiter(p.uri.tag)
            try:
                # Looked up again only now that the waiter is registered: an event between
                # the first lookup and the registration cannot be missed.
                mark = self.events.mark()
                found = await self._lookup(p, lock=True)
                if found.blob is not None or found.state != "W":
                    return await self._found(p, found, mark)
                left = deadline - loop.time()
                if left <= 0:
                    return await self._pass(p)
                wait = min(left, max(found.lock_pttl, 10) / 1000 + 0.01)
                try:
                    kind = await asyncio.wait_for(asyncio.shield(waiter), wait)
                except TimeoutError:
                    kind = ""
            finally:
                self.events.forget(p.uri.tag, waiter)
            if kind == "r":
                return await self._pass(p)

    async def _pass(self, p: Pending) -> Response:
        """Upstream without the lock (conditional, ranged, known unstorable, or given up
        waiting); still stored if it may be."""
        p.request.log["cache"] = MISS
        request_time = time.time()
        response = await p.call_next(p.request)
        await self.writer.keep(p, response, p.uri.lock("-"), request_time, time.time())
        return self._done(p.request, response, MISS)

    async def _revalidate(self, p: Pending, entry: Entry, age: float) -> Response:
        request = p.request
        request.log["cache"] = EXPIRED  # what an upstream error answer will say
        if request.method == "HEAD":
            # Written through: the answer to this request cannot refresh the stored one.
            return await self._through(p, entry, age)
        stored_ms = round(entry.stored_at * 1000)
        state, pttl = await self.cache.refresh_lock(p.uri, p.variant, stored_ms, p.token, p.lock_ms)
        if state != "L":
            p.rounds += 1
            if p.rounds > _MAX_ROUNDS:
                return await self._through(p, entry, age)
            if state == "W":
                waiter = self.events.waiter(p.uri.tag)
                try:
                    await asyncio.wait_for(waiter, min(p.wait_s, max(pttl, 10) / 1000 + 0.01))
                except TimeoutError:
                    pass
                finally:
                    self.events.forget(p.uri.tag, waiter)
            mark = self.events.mark()
            return await self._found(p, await self._lookup(p, lock=True), mark)
        lock_key = p.uri.lock(p.variant)
        released = False
        try:
            request_time = time.time()
            try:
                with validating(request, entry):
                    response = await p.call_next(request)
            except UpstreamError:
                if on_error(age, entry.freshness, p.cc):
                    await self.writer.release(p, lock_key)
                    released = True
                    return self._served(p, entry, age, STALE, time.time() + self._offset)
                raise
            response_time = time.time()
            if response.status == 304:
                response.close()
                fresh = await self.writer.freshen(
                    p, entry, response.headers, lock_key, request_time, response_time
                )
                released = True
                now = fresh.stored_at if fresh.stored_at else time.time() + self._offset
                age = current_age(fresh.initial_age, fresh.stored_at or now, now)
                return self._served(p, fresh, age, EXPIRED, now)
            if response.status >= 500 and on_error(age, entry.freshness, p.cc):
                response.close()
                await self.writer.release(p, lock_key)
                released = True
                return self._served(p, entry, age, STALE, time.time() + self._offset)
            reason = await self.writer.keep(p, response, lock_key, request_time, response_time)
            if reason is not None:
                await self.writer.release(p, lock_key)
            released = True
            return self._done(request, response, EXPIRED)
        finally:
            if not released:
                self.context.background.spawn(self.writer.release(p, lock_key), name="cache")

    async def _through(self, p: Pending, entry: Entry, age: float) -> Response:
        try:
            response = await p.call_next(p.request)
        except UpstreamError:
            if on_error(age, entry.freshness, p.cc):
                return self._served(p, entry, age, STALE, time.time() + self._offset)
            raise
        if response.status >= 500 and on_error(age, entry.freshness, p.cc):
            response.close()
            return self._served(p, entry, age, STALE, time.time() + self._offset)
        return self._done(p.request, response, EXPIRED)

    def _refresh_later(self, p: Pending, entry: Entry) -> None:
        """stale-while-revalidate: one background refresh per process (and, through the
        store lock, per cluster)."""
        key = (p.uri.tag, p.variant)
        if key in self._refreshing:
            return
        self._refreshing.add(key)
        copy = p.request.copy()
        copy.method = "GET"
        for name in RANGED:
            copy.headers.popall(name, None)  # the refresh fetches the whole response
        background = Pending(
            copy,
            p.call_next,
            p.cc,
            p.uri,
            p.session,
            p.lock_ms,
            p.wait_s,
            vary=p.vary,
            vary_known=p.vary_known,
            variant=p.variant,
            started_us=p.started_us,
            near_key=p.near_key,
        )
        task = self.context.background.spawn(self._refresh(background, entry), name="cache")
        task.add_done_callback(lambda _: self._refreshing.discard(key))

    async def _refresh(self, p: Pending, entry: Entry) -> None:
        try:
            stored_ms = round(entry.stored_at * 1000)
            state, _ = await self.cache.refresh_lock(
                p.uri, p.variant, stored_ms, p.token, p.lock_ms
            )
            if state != "L":
                return
            lock_key = p.uri.lock(p.variant)
            request_time = time.time()
            try:
                with validating(p.request, entry):
                    response = await p.call_next(p.request)
            except HTTPError:
                await self.writer.release(p, lock_key)
                return
            response_time = time.time()
            if response.status == 304:
                response.close()
                await self.writer.freshen(
                    p, entry, response.headers, lock_key, request_time, response_time
                )
                return
            reason: str | None = "upstream error"
            if response.status < 500:
                reason = await self.writer.keep(p, response, lock_key, request_time, response_time)
            if reason is not None:
                response.close()
                await self.writer.release(p, lock_key)
        except (StoreUnavailable, UpstreamError) as exc:
            log.info("background cache refresh failed: %s", exc)
