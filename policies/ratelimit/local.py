"""`on_store_error: local`: while the store is unreachable, each process enforces its share.

Same algorithm, same keys, same script: its Python twin runs against an in-process memory
store with every limit divided by the share N (`local_share`, else the processes the store last
saw). Nothing is written back when the store returns (docs/policies/rate_limit.md says why).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from gateway.api import (
    Handler,
    HTTPError,
    MemoryStore,
    PolicyContext,
    Request,
    Response,
)
from policies.ratelimit.config import LimitFields, RateLimitOptions
from policies.ratelimit.heartbeat import Heartbeat
from policies.ratelimit.plan import Plan, make_plan
from policies.ratelimit.scripts import rate_limit_script

LOCAL_BYTES = 16 * 1024 * 1024
"""Bound of one policy's in-process counts (least recently used keys are dropped beyond)."""


def scaled(limit: LimitFields, share: int) -> LimitFields:
    """`limit` divided among `share` processes: a window's `limit // share`, a bucket's
    `rate / share` and `burst // share`; never below one request (a bucket's `cost`)."""
    if share == 1:
        return limit
    if limit.algorithm == "sliding_window":
        return limit.model_copy(update={"limit": max(1, (limit.limit or 1) // share)})
    rate, burst = limit.rate, limit.burst or 1
    update: dict[str, Any] = {"burst": max(limit.cost, burst // share)}
    if rate is not None:
        update["rate"] = dataclasses.replace(rate, period=rate.period * share)
    return limit.model_copy(update=update)


class LocalLimiter:
    """Decides a policy's requests in process while its store is unreachable."""

    def __init__(
        self,
        options: RateLimitOptions,
        names: Sequence[str],
        context: PolicyContext,
        decisions: Any,
        limited: type[HTTPError],
    ) -> None:
        self._limits = options.all_limits()
        self._names = tuple(names)
        self._fixed = options.local_share
        self.heartbeat = None if options.local_share is not None else Heartbeat(context.store)
        self._store = MemoryStore("memory://rate_limit-local", max_bytes=LOCAL_BYTES)
        self._script = rate_limit_script()
        self._plans: dict[int, tuple[Plan, tuple[int, ...]]] = {}
        self._decisions = decisions
        self._name = context.name
        self._children: dict[str, tuple[Any, Any]] = {}
        self._limited = limited

    @property
    def share(self) -> int:
        """N: the processes the limits are divided among now."""
        if self._fixed is not None:
            return self._fixed
        return self.heartbeat.seen if self.heartbeat is not None else 1

    def plan(self, share: int) -> tuple[Plan, tuple[int, ...]]:
        """The plan for `share` processes and its script arguments (made once per share)."""
        made = self._plans.get(share)
        if made is None:
            plan = make_plan([scaled(limit, share) for limit in self._limits], self._names)
            made = self._plans[share] = (plan, (1, *plan.args))
        return made

    async def __call__(self, request: Request, call_next: Handler, keys: list[str]) -> Response:
        """Decide `request` on the local counts; answer as the store-backed path does."""
        plan, args = self.plan(self.share)
        answer = [int(value) for value in await self._store.eval(self._script, keys, args)]
        route = request.route.name
        children = self._children.get(route)
        if children is None:
            children = self._children[route] = (
                self._decisions.labels(route, self._name, "local_allowed"),
                self._decisions.labels(route, self._name, "local_limited"),
            )
        state = plan.state_field(answer, 2)
        if not answer[0]:
            children[1].inc()
            request.log["rate_limit"] = "local_limited"
            retry = answer[1]
            raise self._limited(
                headers={
                    "Retry-After": str(retry),
                    "RateLimit-Policy": plan.policy_field,
                    "RateLimit": state,
                },
                extra={"retry_after": retry},
            )
        children[0].inc()
        request.log["rate_limit"] = "local_allowed"
        try:
            response = await call_next(request)
        except HTTPError as exc:
            exc.headers["RateLimit-Policy"] = plan.policy_field
            exc.headers["RateLimit"] = state
            raise
        response.headers["RateLimit-Policy"] = plan.policy_field
        response.headers["RateLimit"] = state
        return response

    async def close(self) -> None:
        await self._store.close()
