"""The `rate_limit` policy: one store call per request decides, the answer carries the state.

Everything that does not depend on the request (script arguments, key suffixes, the fixed
parts of the RateLimit fields, metric children) is computed when the policy is built.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from gateway.errors import HTTPError, StoreUnavailable
from gateway.http import Handler, Request, Response
from gateway.policy import Policy, PolicyContext
from policies.ratelimit.config import RateLimitOptions
from policies.ratelimit.keys import bucket_keys
from policies.ratelimit.plan import make_plan
from policies.ratelimit.scripts import rate_limit_script

log = logging.getLogger("policies.ratelimit")

_WARN_EVERY = 10.0  # seconds between store-error warnings: an outage must not flood the log


class RateLimited(HTTPError):
    """429: a limit of the route's rate_limit policy is exhausted for this key."""

    status = 429
    code = "rate_limited"


class RateLimitUnavailable(HTTPError):
    """503: the store could not answer and the policy says `on_store_error: deny`."""

    status = 503
    code = "rate_limit_unavailable"


class RateLimit(Policy):
    """Limits requests per key (sliding window or token bucket, one or several limits)."""

    Options = RateLimitOptions

    def __init__(self, options: RateLimitOptions, context: PolicyContext) -> None:
        super().__init__(options, context)
        limits = options.all_limits()
        if options.limits is None:
            names = [context.name]
        else:
            names = [
                limit.name or f"{context.name}.{index}"
                for index, limit in enumerate(options.limits)
            ]
        self.plan = make_plan(limits, names)
        self._store = context.store
        self._script = rate_limit_script()
        self._args = self.plan.args
        self._suffixes = self.plan.suffixes
        self._key = options.key
        # The key spec is part of the namespace: changing it on reload starts fresh buckets.
        self._namespace = f"{context.scope}\x1f{','.join(options.key.specs)}"
        # `route` means one bucket per route, even for a definition shared by several routes.
        self._per_route = "route" in options.key.specs
        self._policy_field = self.plan.policy_field
        self._deny = options.on_store_error == "deny"
        self._decisions = context.metrics.counter(
            "gateway_rate_limit_decisions_total",
            "Rate-limit decisions by route, policy and result (allowed, limited, store_error).",
            ["route", "policy", "result"],
        )
        self._children: dict[str, tuple[Any, Any, Any]] = {}
        for route in context.routes:
            self._children_for(route)
        self._warned_at = -_WARN_EVERY

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

    def keys_for(self, request: Request) -> list[str]:
        """The store keys that count `request` (one per limit)."""
        if self._per_route:
            return bucket_keys(
                self._suffixes, self._namespace, request.route.name, self._key(request)
            )
        return bucket_keys(self._suffixes, self._namespace, self._key(request))

    async def __call__(self, request: Request, call_next: Handler) -> Response:
        keys = self.keys_for(request)
        try:
            answer = await self._store.eval(self._script, keys, self._args)
        except StoreUnavailable as exc:
            return await self._store_error(request, call_next, exc)
        route = request.route.name
        children = self._children.get(route) or self._children_for(route)
        state = self.plan.state_field(answer)
        if not answer[0]:
            children[1].inc()
            request.log["rate_limit"] = "limited"
            retry = answer[1]
            raise RateLimited(
                headers={
                    "Retry-After": str(retry),
                    "RateLimit-Policy": self._policy_field,
                    "RateLimit": state,
                },
                extra={"retry_after": retry},
            )
        children[0].inc()
        request.log["rate_limit"] = "allowed"
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

    async def _store_error(
        self, request: Request, call_next: Handler, exc: StoreUnavailable
    ) -> Response:
        route = request.route.name
        (self._children.get(route) or self._children_for(route))[2].inc()
        request.log["rate_limit"] = "store_error"
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            action = "denying" if self._deny else "allowing"
            log.warning("rate_limit %s: %s; %s requests", self.context.name, exc, action)
        if self._deny:
            raise RateLimitUnavailable(headers={"Retry-After": "1"})
        return await call_next(request)

    def describe(self) -> str:
        return f"rate_limit {self.context.name}: {self.plan.summary} by {self._key}"
