"""The `rate_limit` policy: one store call decides, the answer carries the state.

Concurrent requests of one identity share that call: the first opens a batch and schedules
the call for the next turn of the event loop; requests of the same key arriving meanwhile
join it, and the script decides them in order exactly as if each had its own call. A hot key
then costs one Redis round trip per loop turn instead of one per request.

Everything that does not depend on the request (script arguments, key suffixes, the fixed
parts of the RateLimit fields, metric children) is computed when the policy is built.
"""

from __future__ import annotations

import asyncio
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
    SlotMoving,
    StoreUnavailable,
)
from policies.ratelimit import leaderboard
from policies.ratelimit.config import RateLimitOptions
from policies.ratelimit.keys import PolicyKeys, board, shown
from policies.ratelimit.leaderboard import BUCKET_SECONDS, KEEP_SECONDS
from policies.ratelimit.local import LocalLimiter
from policies.ratelimit.plan import make_plan
from policies.ratelimit.scripts import rate_limit_script
from policies.ratelimit.top import top

log = logging.getLogger("policies.ratelimit")

MAX_BATCH = 256
"""Requests decided by one script call at most: bounds how long Redis runs it."""
_WARN_EVERY = 10.0  # seconds between store-error warnings: an outage must not flood the log
_KNOWN_MAX = 4096  # identities whose keys are remembered (then forgotten all at once)
_KNOWN_IDENTITY = 256  # longer identities are hashed every time, not kept


class RateLimited(HTTPError):
    """429: a limit of the route's rate_limit policy is exhausted for this key."""

    status = 429
    code = "rate_limited"


class RateLimitUnavailable(HTTPError):
    """503: the store could not answer and the policy says `on_store_error: deny`."""

    status = 503
    code = "rate_limit_unavailable"


class _Batch:
    """Concurrent requests of one identity, waiting for one script call."""

    __slots__ = ("keys", "member", "waiters")

    def __init__(self, keys: list[str], member: str) -> None:
        self.keys = keys
        self.member = member
        self.waiters: list[asyncio.Future[list[int]]] = []


class RateLimit(Policy):
    """Limits requests per key (sliding window or token bucket, one or several limits)."""

    Options = RateLimitOptions
    admin_endpoints: ClassVar[Mapping[str, AdminEndpoint]] = {"GET /-/top": top}

    def __init__(self, options: RateLimitOptions, context: PolicyContext) -> None:
        super().__init__(options, context)
        if options.limits is None:
            names = [context.name]
        else:
            names = [limit.name or f"{context.name}.{i}" for i, limit in enumerate(options.limits)]
        self.plan = make_plan(options.all_limits(), names)
        self._store = context.store
        self._script = rate_limit_script()
        # The leaderboard's arguments follow the limits'; the member comes last, per call.
        self._args = [
            (n, *self.plan.args, BUCKET_SECONDS, KEEP_SECONDS) for n in range(MAX_BATCH + 1)
        ]
        self._width = 2 * len(names)
        self._key = options.key
        # The key spec is part of the namespace: changing it on reload starts fresh buckets.
        self.keys = PolicyKeys(
            f"{context.scope}\x1f{','.join(options.key.specs)}", self.plan.suffixes
        )
        # `route` means one bucket per route, even for a definition shared by several routes.
        self._per_route = "route" in options.key.specs
        # Leaderboards (and `route` keys) are per route: unless the instance serves exactly one
        # route, requests are told apart by their route too.
        self._one_route = len(context.routes) == 1
        self._policy_field = self.plan.policy_field
        self._deny = options.on_store_error == "deny"
        self._decisions = context.metrics.counter(
            "gateway_rate_limit_decisions_total",
            "Rate-limit decisions by route, policy and result (allowed, limited, store_error, "
            "local_allowed, local_limited).",
            ["route", "policy", "result"],
        )
        # `memory://` never fails (it is in this process already): nothing to fall back to.
        self._local = (
            LocalLimiter(options, names, context, self._decisions, RateLimited)
            if options.on_store_error == "local" and context.store.shared
            else None
        )
        self._children: dict[str, tuple[Any, Any, Any]] = {}
        for route in context.routes:
            self._children_for(route)
        self._known: dict[str, tuple[list[str], str]] = {}
        self._pending: dict[str, _Batch] = {}
        self._calls: set[asyncio.Task[None]] = set()
        # Cached: get_running_loop() checks getpid(), a system call, every time.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._warned_at = -_WARN_EVERY
        self._beating: asyncio.Task[None] | None = None

    def _children_for(self, route: str) -> tuple[Any, Any, Any]:
        children = self._children.get(route)
        if children is None:
            name = self.context.name
            children = self._children[route] = (
                self._decisions.labels(route, name, "allowed"),
                self._decisions.labels(route, name, "limited"),
                self._decisions.labels(route, name, "store_error"),
            )
        return children

    def keys_for(self, request: Request) -> tuple[str, list[str], str]:
        """Who `request` counts for: a name for its batch, the store keys (one per limit,
        then the route's leaderboard) and the member it is shown as among top consumers."""
        identity = self._key(request)
        known_as = identity if self._one_route else f"{request.route.name}\x1f{identity}"
        known = self._known.get(known_as)
        if known is None:
            route = request.route.name
            tag, keys = self.keys.bucket_keys(
                f"{route}\x1f{identity}" if self._per_route else identity
            )
            keys.append(board(tag, route))
            known = (keys, shown(self._key.specs, identity))
            # Hashing is most of a request's own cost here: remember the recent identities.
            if len(known_as) <= _KNOWN_IDENTITY:
                if len(self._known) >= _KNOWN_MAX:
                    self._known.clear()
                self._known[known_as] = known
        return known_as, known[0], known[1]

    async def __call__(self, request: Request, call_next: Handler) -> Response:
        tag, keys, member = self.keys_for(request)
        batch = self._pending.get(tag)
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if batch is None:
            batch = self._pending[tag] = _Batch(keys, member)
            task = loop.create_task(self._decide(tag, batch))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)
        waiter: asyncio.Future[list[int]] = loop.create_future()
        index = len(batch.waiters)
        batch.waiters.append(waiter)
        if index + 1 == MAX_BATCH:
            del self._pending[tag]  # full: the next request opens another batch
        try:
            answer = await waiter
        except StoreUnavailable as exc:
            return await self._store_error(request, call_next, exc, keys)
        route = request.route.name
        children = self._children.get(route) or self._children_for(route)
        admitted = answer[0]
        if index >= admitted:
            children[1].inc()
            request.log["rate_limit"] = "limited"
            retry = answer[1]
            raise RateLimited(
                headers={
                    "Retry-After": str(retry),
                    "RateLimit-Policy": self._policy_field,
                    "RateLimit": self.plan.state_field(answer, 2 + admitted * self._width),
                },
                extra={"retry_after": retry},
            )
        children[0].inc()
        request.log["rate_limit"] = "allowed"
        state = self.plan.state_field(answer, 2 + index * self._width)
        try:
            response = await call_next(request)
        except HTTPError as exc:
            # The gateway's own answers further down the chain (502, 504, 403...) carry the
            # fields too: the request did count.
            exc.headers["RateLimit-Policy"] = self._policy_field
            exc.headers["RateLimit"] = state
            raise
        headers = response.headers
        headers["RateLimit-Policy"] = self._policy_field
        headers["RateLimit"] = state
        return response

    async def _decide(self, tag: str, batch: _Batch) -> None:
        """One store call for the batch, one loop turn after it opened; wakes its requests."""
        if self._pending.get(tag) is batch:
            del self._pending[tag]
        waiters = batch.waiters
        try:
            try:
                answer = await self._store.eval(
                    self._script, batch.keys, (*self._args[len(waiters)], batch.member)
                )
            except SlotMoving:
                # The leaderboard makes the call multi-key, which Redis refuses while the slot
                # is half moved: decide on the limits alone (the top consumers miss it).
                answer = await self._store.eval(
                    self._script, batch.keys[:-1], self._args[len(waiters)][:-2]
                )
        except StoreUnavailable as exc:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(StoreUnavailable(str(exc)))
            return
        except BaseException as exc:
            # A bug surfaces in each request (the app logs it); cancellation at shutdown
            # reads as an unavailable store, which `on_store_error` answers.
            for waiter in waiters:
                if not waiter.done():
                    if isinstance(exc, asyncio.CancelledError):
                        waiter.set_exception(StoreUnavailable("rate-limit call cancelled"))
                    else:
                        waiter.set_exception(exc)
            raise
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(answer)

    async def _store_error(
        self, request: Request, call_next: Handler, exc: StoreUnavailable, keys: list[str]
    ) -> Response:
        local = self._local
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            action = "denying requests" if self._deny else "allowing requests"
            if local is not None:
                action = f"limiting requests in this process to 1/{local.share} of each limit"
            log.warning("rate_limit %s: %s; %s", self.context.name, exc, action)
        if local is not None:
            # The limits' keys only: the leaderboard of top consumers is the store's alone.
            return await local(request, call_next, keys[:-1])
        route = request.route.name
        (self._children.get(route) or self._children_for(route))[2].inc()
        request.log["rate_limit"] = "store_error"
        if self._deny:
            raise RateLimitUnavailable(headers={"Retry-After": "1"})
        return await call_next(request)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._local is not None and self._local.heartbeat is not None:
            self._beating = self.context.background.spawn(
                self._local.heartbeat.run(), name=f"rate_limit {self.context.name} heartbeat"
            )

    async def stop(self) -> None:
        """Let the store calls under way finish (each is bounded by the store's timeout)."""
        if self._calls:
            await asyncio.gather(*self._calls, return_exceptions=True)
        if self._local is not None:
            if self._beating is not None:
                self._beating.cancel()
                await asyncio.gather(self._beating, return_exceptions=True)
            await self._local.close()

    def describe(self) -> str:
        text = f"rate_limit {self.context.name}: {self.plan.summary} by {self._key}"
        if self.options.on_store_error == "local":
            share = self.options.local_share or "N (the processes on the store)"
            text += f"; store down: limits / {share} per process"
        return text

    @property
    def key_spec(self) -> str:
        """What is counted, as written: `client_ip`, `[client_ip, header.X-Api-Key]`."""
        return str(self._key)

    async def top(self, route: str, window: int, n: int) -> list[dict[str, Any]]:
        """The `n` busiest members of `route` over the last `window` seconds, every gateway
        on the store counted (`GET /-/top`)."""
        return await leaderboard.read(self._store, self.keys.boards(route), window, n)
