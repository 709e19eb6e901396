"""The policy contract: what a built-in or third-party policy implements.

A policy class is registered under the entry-point group `gateway.policies`; the entry point's
name is the key used in YAML (`rate_limit: {...}`). Its `Options` model validates that mapping.
When a config is loaded, each declaration becomes one instance (a named definition one instance
shared by every route that references it), and each route's chain is composed once.
A request then only runs `await policy(request, call_next)`.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from gateway.http.messages import Handler, Request, Response, RouteInfo

if TYPE_CHECKING:
    from gateway.store import Store
    from gateway.telemetry.metrics import Metrics

log = logging.getLogger("gateway.policy")


class Options(BaseModel):
    """A policy's options: unknown keys are errors, values immutable, defaults validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def requires_before(self) -> Mapping[str, str]:
        """Policy types (YAML keys) that must run earlier in any chain holding these options,
        each with the reason: `{"session": "vary_session reads the session it sets"}`.
        The loader refuses a chain without them, naming both policies. Default: none."""
        return {}


class Background:
    """Tasks a policy starts beyond a request (a cache refresh), cancelled with the runtime."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name or None)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass(frozen=True)
class Downstream:
    """The rest of one route's chain after a policy: the policies behind it, then the proxy.

    For requests a policy makes itself, outside a client's request (a background delivery):
    they get the same later policies, header hygiene and upstream pool as `call_next`."""

    route: RouteInfo
    handler: Handler


def _not_composed(route: str) -> Downstream:
    raise LookupError(f"no chain of route {route!r} is composed with this policy")


@dataclass(frozen=True)
class PolicyContext:
    """What a policy gets when it is built, besides its options."""

    name: str
    """The named definition's name, or the policy type for an inline declaration."""
    scope: str
    """Namespace for the policy's store keys: `policy:<name>` for a named definition (shared by
    every route that references it), `route:<route>` for an inline one."""
    store: Store
    metrics: Metrics
    background: Background
    routes: tuple[str, ...] = field(default=())
    """Names of the routes whose chains include this instance."""
    downstream: Callable[[str], Downstream] = field(default=_not_composed)
    """`downstream(route)`: that route's chain after this policy (see `Downstream`), for each
    of `routes`; available from `start()` on (the chains are composed after the policies)."""


@dataclass(frozen=True)
class AdminCall:
    """An admin request a policy class handles, e.g. `POST /-/cache/purge`."""

    body: Any
    """The parsed JSON body (or None)."""
    store: Store
    instances: Sequence[Policy]
    """The live instances of this policy class in the serving config."""
    query: Mapping[str, str] = field(default_factory=dict)
    """The query parameters (`GET /-/top?route=api` gives `{"route": "api"}`)."""
    routes: Sequence[str] = ()
    """The names of every route of the serving config, in file order."""


AdminEndpoint = Callable[[AdminCall], Awaitable[tuple[int, Any]]]
"""`async (call) -> (status, json_payload)`."""


class Policy(ABC):
    """One step of a route's chain: may answer itself, or call the rest of the chain.

    Subclasses set `Options` (a pydantic model) and implement `__call__`. Raise
    `gateway.errors.HTTPError` to answer with the gateway's JSON error format.
    """

    Options: ClassVar[type[BaseModel]] = Options
    admin_endpoints: ClassVar[Mapping[str, AdminEndpoint]] = {}
    """Admin routes this policy type adds, as `{"POST /-/cache/purge": handler}`."""

    def __init__(self, options: Any, context: PolicyContext) -> None:
        self.options = options
        self.context = context

    @abstractmethod
    async def __call__(self, request: Request, call_next: Handler) -> Response:
        """Handle `request`, usually by awaiting `call_next(request)`."""

    async def start(self) -> None:
        """Called once before the config this instance belongs to starts serving."""

    async def stop(self) -> None:
        """Called once after that config stopped serving (after a reload or at shutdown)."""

    def describe(self) -> str:
        """One line for `gateway check` and `/-/routes`."""
        return self.context.name
