"""Delivery of one route's queue by one gateway process: take, deliver, settle.

The store cannot block inside a script (XREADGROUP BLOCK is refused there), so a consumer
polls: one `take` call whenever it has free delivery slots and was woken (this process just
accepted an entry, or a delivery ended) or `poll` passed. Entries accepted by other
processes wait at most `poll` for this one, unless their own process takes them first.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict

from gateway.api import (
    Background,
    Downstream,
    HTTPError,
    Request,
    Store,
    StoreUnavailable,
    Value,
)
from policies.queue.config import QueueOptions
from policies.queue.entry import Entry, backoff, parse, retry_after, verdict
from policies.queue.scripts import GROUP, RouteKeys, scripts

log = logging.getLogger("policies.queue")

_WARN_EVERY = 10.0
_STOP_GRACE = 5.0
"""Seconds a stopping process lets deliveries in flight finish before it hands them back."""
_SETTLE_TRIES = 5
BACKLOG_EVERY = 5.0
_ERROR_TEXT = 200


@dataclass
class Counters:
    """This process's metric children for one route."""

    delivered: Any
    retried: Any
    dead: Any
    backlog: Any
    """The gauge child: the store-wide backlog, refreshed every `BACKLOG_EVERY` seconds."""


class Consumer:
    """Takes entries of one route from the store and delivers them through its chain."""

    def __init__(
        self,
        route: str,
        store: Store,
        options: QueueOptions,
        downstream: Downstream,
        consumer: str,
        counters: Counters,
    ) -> None:
        self.route = route
        self.keys = RouteKeys.of(route)
        self.store = store
        self.options = options
        self.downstream = downstream
        self.consumer = consumer
        self.counters = counters
        self._scripts = scripts()
        self._wake = asyncio.Event()
        self._stopping = False
        self._inflight: dict[asyncio.Task[None], Entry] = {}
        self._runner: asyncio.Task[None] | None = None
        self._cursor = "0-0"
        self._rng = random.Random()
        self._warned_at = -_WARN_EVERY
        self._deadline = options.visibility_timeout * 0.8

    def wake(self) -> None:
        """Look for work now (an entry was just accepted or replayed)."""
        self._wake.set()

    def start(self, background: Background) -> None:
        """Start taking and delivering (the loop is a background task of the runtime)."""
        self._runner = background.spawn(self.run(), name=f"queue:{self.route}")

    async def run(self) -> None:
        """Take and deliver until `stop()`."""
        pause = self.options.poll
        looked = -BACKLOG_EVERY
        while not self._stopping:
            if time.monotonic() - looked >= BACKLOG_EVERY:
                looked = time.monotonic()
                await self._look()
            free = self.options.concurrency - len(self._inflight)
            self._wake.clear()
            if free > 0:
                try:
                    taken = await self._take(free)
                    pause = self.options.poll
                except StoreUnavailable as exc:
                    self._warn("taking work", exc)
                    taken = 0
                    pause = min(pause * 2, max(self.options.poll, 5.0))
                if taken == free:
                    continue  # there may be more: take again as soon as a slot frees
            try:
                async with asyncio.timeout(pause):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _take(self, count: int) -> int:
        keys = self.keys
        cursor, raw = await self.store.eval(
            self._scripts.take,
            [keys.stream, keys.due, keys.parked],
            [
                GROUP,
                self.consumer,
                count,
                int(self.options.visibility_timeout * 1000),
                self._cursor,
            ],
        )
        self._cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        for entry_id, lost, pairs in raw:
            entry = parse(entry_id, int(lost), pairs)
            task = asyncio.get_running_loop().create_task(self._deliver(entry))
            self._inflight[task] = entry
            task.add_done_callback(self._done)
        return len(raw)

    async def _look(self) -> None:
        keys = self.keys
        try:
            answer = await self.store.eval(
                self._scripts.stats, [keys.stream, keys.due, keys.dead, keys.counts], [GROUP, 0]
            )
        except StoreUnavailable:
            return  # the next take says so
        self.counters.backlog.set(int(answer[1]) + int(answer[3]))

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery failed on %s", self.route, exc_info=task.exception())
        self._wake.set()

    async def _deliver(self, entry: Entry) -> None:
        options = self.options
        if entry.attempts >= options.max_attempts:  # its last attempt died with its gateway
            await self._settle(
                entry,
                "dead",
                entry.attempts,
                entry.status or "lost",
                entry.error or "delivery lost with its gateway",
                counter="failed",
            )
            self.counters.dead.inc()
            return
        status, error, wait = await self._attempt(entry)
        attempts = entry.attempts + 1
        outcome = verdict(status)
        if outcome == "ack":
            await self._settle(entry, "ack", attempts, str(status), "", counter="delivered")
            self.counters.delivered.inc()
        elif outcome == "retry" and attempts < options.max_attempts:
            delay = backoff(attempts, options.retry.first, options.retry.max, self._rng)
            if wait is not None:
                delay = max(delay, wait)
            await self._settle(
                entry, "park", attempts, str(status), error, delay=delay, counter="failed"
            )
            self.counters.retried.inc()
        else:
            await self._settle(entry, "dead", attempts, str(status), error, counter="failed")
            self.counters.dead.inc()

    async def _attempt(self, entry: Entry) -> tuple[int, str, float | None]:
        """One delivery: (status, error text, seconds `Retry-After` asks for)."""
        meta = entry.meta
        headers: CIMultiDict[str] = CIMultiDict(meta["headers"])
        headers["Idempotency-Key"] = entry.key
        path, _, query = entry.target.partition("?")
        request = Request(
            method=entry.method,
            path=path,
            query_string=query,
            headers=headers,
            client_ip=meta["client_ip"],
            host=meta["host"],
            scheme=meta["scheme"],
            request_id=meta["request_id"],
            route=self.downstream.route,
            body=entry.body,
        )
        try:
            async with asyncio.timeout(self._deadline):
                response = await self.downstream.handler(request)
                try:
                    text = await response.read(_ERROR_TEXT * 4)
                finally:
                    response.close()
        except HTTPError as exc:  # the proxy's 502/504, or a later policy's answer
            return exc.status, exc.code, None
        except TimeoutError:
            return 504, "no answer within the visibility timeout", None
        except Exception:  # a later policy's bug: retried like a 500, and shown in the log
            log.exception("delivery of %s on route %s failed", entry.key, self.route)
            return 500, "internal_error", None
        wait = retry_after(response.headers.get("Retry-After"), time.time())
        snippet = (text or b"")[:_ERROR_TEXT].decode("utf-8", "replace")
        return response.status, snippet, wait

    async def _settle(
        self,
        entry: Entry,
        outcome: str,
        attempts: int,
        status: str,
        error: str,
        *,
        delay: float = 0.0,
        counter: str = "",
    ) -> None:
        keys = self.keys
        args: list[Value] = [
            GROUP,
            entry.id,
            outcome,
            entry.key,
            attempts,
            status,
            error,
            int(delay * 1000),
            int(self.options.retention * 1000),
            counter,
        ]
        pause = 0.1
        for _ in range(_SETTLE_TRIES):
            try:
                await self.store.eval(
                    self._scripts.settle,
                    [keys.stream, keys.due, keys.parked, keys.dead, keys.counts],
                    args,
                )
                return
            except StoreUnavailable as exc:
                self._warn("settling a delivery", exc)
                await asyncio.sleep(pause)
                pause *= 2
        # Still pending in the store: another consumer takes it after the visibility timeout.

    async def stop(self) -> None:
        """Take nothing more; let deliveries in flight finish a little, hand back the rest."""
        self._stopping = True
        self._wake.set()
        if self._runner is not None:
            # A `take` under way finishes (its entries are handed back below, not stranded).
            await asyncio.wait([self._runner], timeout=_STOP_GRACE)
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=min(_STOP_GRACE, self._deadline))
        unfinished = dict(self._inflight)
        for task in unfinished:
            task.cancel()
        if unfinished:
            await asyncio.gather(*unfinished, return_exceptions=True)
        for entry in unfinished.values():
            # Back to the store as due now, attempts unchanged: the next consumer delivers it.
            await self._settle(entry, "park", entry.attempts, entry.status, entry.error)
        try:
            await self.store.eval(self._scripts.leave, [self.keys.stream], [GROUP, self.consumer])
        except StoreUnavailable as exc:
            self._warn("leaving the group", exc)

    def _warn(self, what: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning("queue of route %s: store unavailable while %s: %s", self.route, what, exc)
