"""The gateway's policies inside an aiohttp application (SPEC, "Embedding in aiohttp").

    policies = Policies.from_config("gateway.yaml")
    app.cleanup_ctx.append(policies.cleanup_ctx)
    @policies.chain("orders", "per-client", {"cache": {"ttl": "30s"}})
    async def orders(request): ...

The same `Policy` objects as `gateway run` builds, from the same file: a chain ends in the
aiohttp handler where the gateway has its proxy. The adapter here turns the `web.Request` into
the chain's `Request`, and the handler's `web.StreamResponse` into the chain's `Response` and
back. A named definition keeps the gateway's store keys (`policy:<name>`), so an app and a
gateway on one store share its buckets. Nothing is opened before the app starts.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from gateway.app import error_response
from gateway.chain import compose
from gateway.config.loader import (
    LoadedConfig,
    PolicySpec,
    check_chain,
    check_config,
    load_config,
)
from gateway.config.models import EmbeddedConfig, Timeouts, UpstreamConfig
from gateway.config.source import Loc, Positions
from gateway.errors import BadRequest, ConfigError, ConfigProblem, HTTPError
from gateway.http.headers import Forwarding, RequestIds
from gateway.http.messages import Handler, Request, Response
from gateway.http.paths import BadPath, normalise, split_target
from gateway.policy import Background, Policy
from gateway.registry import Registry
from gateway.runtime import policy_context
from gateway.store import Store
from gateway.store.factory import open_store
from gateway.telemetry.metrics import Metrics

log = logging.getLogger("gateway.aiohttp")

AiohttpHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Declaration = str | Mapping[str, Any]
"""A named definition of the file, or a one-key mapping `{TYPE: {options}}` as in the YAML."""

_EXCHANGE = "aiohttp"
"""`Request.context` namespace: the aiohttp side of the request, read by the chain's end."""
_NOT_STORED = "no-store"
"""Added to the chain's view of an answer the adapter cannot replay (streamed, a file)."""


@dataclass(frozen=True)
class _HandlerInfo:
    """The chain's upstream as policies see it: the app's handler. The cache bounds its
    collapsed waits by these timeouts (the defaults of an upstream)."""

    config: UpstreamConfig


@dataclass(frozen=True, eq=False)
class _Route:
    """What policies read of the route that took a request (`RouteInfo`)."""

    name: str
    policies: Sequence[Policy]
    max_request_body: int
    upstream: _HandlerInfo


@dataclass(frozen=True)
class _Running:
    """What `cleanup_ctx` built for one application: the store and each route's chain."""

    store: Store
    background: Background
    policies: list[Policy]
    chains: dict[str, tuple[_Route, Handler]]


class Policies:
    """The policies of one config file for an aiohttp application: `chain()` decorates a
    handler, `middleware()` applies chains by route name, `cleanup_ctx` opens the store."""

    def __init__(
        self,
        redis_url: str = "memory://",
        policies: Mapping[str, Any] | None = None,
        *,
        redis: Mapping[str, Any] | None = None,
        trusted_proxies: Sequence[str] = (),
        registry: Registry | None = None,
    ) -> None:
        """The same as a file with these `redis` and `policies` (`redis` holds its other keys:
        `timeout`, `pool_size`); problems name the line of this call."""
        file, line = _caller()
        data = {
            "redis": {**(redis or {}), "url": redis_url},
            "policies": dict(policies or {}),
            "trusted_proxies": list(trusted_proxies),
        }
        registry = registry if registry is not None else Registry.discover()
        positions = Positions({(): line} if line else {})
        self._setup(check_config(data, file, "", positions, registry, EmbeddedConfig), registry)

    @classmethod
    def from_config(
        cls,
        path: str,
        *,
        env: Mapping[str, str] | None = None,
        registry: Registry | None = None,
    ) -> Policies:
        """Read `path` as `gateway run` does (`routes` and `upstreams` may be left out);
        `ConfigError` names the file, line and key of every problem."""
        registry = registry if registry is not None else Registry.discover()
        loaded = load_config(path, env=env, registry=registry, shape=EmbeddedConfig)
        self = cls.__new__(cls)
        self._setup(loaded, registry)
        return self

    def _setup(self, loaded: LoadedConfig, registry: Registry) -> None:
        self.loaded = loaded
        self.registry = registry
        self.metrics = Metrics()
        """The policies' Prometheus metrics (`metrics.exposition()` is the text format)."""
        self.store_key: web.AppKey[Store] = web.AppKey("gateway.store", Store)
        """`app[policies.store_key]`: the open store, e.g. for writing sessions."""
        self._key: web.AppKey[_Running] = web.AppKey("gateway.policies", _Running)
        self._forwarding = Forwarding(loaded.model.trusted_proxies)
        self._ids = RequestIds()
        self._handler = _HandlerInfo(
            UpstreamConfig.model_construct(targets=[], timeouts=Timeouts())
        )
        self._chains: dict[str, list[PolicySpec]] = {}

    # -- declaring ----------------------------------------------------------------------
    def chain(
        self, route: str, *declarations: Declaration
    ) -> Callable[[AiohttpHandler], AiohttpHandler]:
        """Decorate a handler: requests to it run through `declarations`, outermost first.
        `route` names the chain in metrics and in inline policies' store keys."""
        file, line = _caller()
        self._declare(route, declarations, (f"chain({route!r})",), file, line)

        def decorate(handler: AiohttpHandler) -> AiohttpHandler:
            @functools.wraps(handler)
            async def through_policies(request: web.Request) -> web.StreamResponse:
                return await self._serve(route, request, handler)

            return through_policies

        return decorate

    def middleware(
        self, routes: Mapping[str, Sequence[Declaration]]
    ) -> Callable[[web.Request, AiohttpHandler], Awaitable[web.StreamResponse]]:
        """A middleware running `routes[name]` for requests whose aiohttp route is named
        `name` (`router.add_get(..., name=name)`); other requests pass untouched."""
        file, line = _caller()
        for name, entries in routes.items():
            listed = [entries] if isinstance(entries, str | Mapping) else list(entries)
            self._declare(name, listed, ("middleware", "routes", name), file, line)
        names = frozenset(routes)

        @web.middleware
        async def policies(request: web.Request, handler: AiohttpHandler) -> web.StreamResponse:
            name = request.match_info.route.name
            if name is None or name not in names:
                return await handler(request)
            return await self._serve(name, request, handler)

        return policies

    def _declare(
        self, route: str, entries: Sequence[Any], loc: Loc, file: str, line: int | None
    ) -> None:
        if route in self._chains:
            message = f"route {route!r} already has a chain (one chain() or middleware entry)"
            raise ConfigError([ConfigProblem(file, line, "", message)])
        named = self.loaded.named
        self._chains[route] = check_chain(entries, named, route, loc, file, line, self.registry)

    # -- the app's lifetime -------------------------------------------------------------
    async def cleanup_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """For `app.cleanup_ctx`: opens the one store and builds the chains on startup,
        stops the policies and closes the store on cleanup."""
        running = await self._start()
        app[self._key] = running
        app[self.store_key] = running.store
        try:
            yield
        finally:
            await self._stop(running)

    async def _start(self) -> _Running:
        model = self.loaded.model
        metrics = self.metrics
        store = open_store(model.redis, metrics.store_call, metrics.store_breaker_changed)
        background = Background()
        users: dict[str, list[str]] = {}
        for route, specs in self._chains.items():
            for name in dict.fromkeys(spec.name for spec in specs if spec.name is not None):
                users.setdefault(name, []).append(route)
        named: dict[str, Policy] = {}
        built: list[Policy] = []
        chains: dict[str, tuple[_Route, Handler]] = {}
        for route, specs in self._chains.items():
            instances = []
            for spec in specs:
                policy = named.get(spec.name) if spec.name is not None else None
                if policy is None:
                    routes = tuple(users[spec.name]) if spec.name else (route,)
                    context = policy_context(spec, route, routes, store, metrics, background)
                    policy = spec.cls(spec.options, context)
                    built.append(policy)
                    if spec.name is not None:
                        named[spec.name] = policy
                instances.append(policy)
            info = _Route(route, tuple(instances), model.max_request_body, self._handler)
            chains[route] = (info, compose(instances, _call_handler))
        running = _Running(store, background, built, chains)
        started = 0
        try:
            for policy in built:
                await policy.start()
                started += 1
        except BaseException:
            await self._stop(replace(running, policies=built[:started]))
            raise
        metrics.start()
        return running

    async def _stop(self, running: _Running) -> None:
        for policy in running.policies:
            try:
                await policy.stop()
            except Exception:  # one policy's cleanup failure must not keep the rest open
                log.exception("stopping policy %s failed", policy.context.name)
        await running.background.close()
        await running.store.close()
        self.metrics.stop()

    # -- one request --------------------------------------------------------------------
    async def _serve(
        self, route: str, web_request: web.Request, handler: AiohttpHandler
    ) -> web.StreamResponse:
        started = time.perf_counter()
        running = web_request.config_dict.get(self._key)
        if running is None:
            raise RuntimeError("append policies.cleanup_ctx to app.cleanup_ctx before starting")
        found = running.chains.get(route)
        if found is None:
            raise RuntimeError(f"chain {route!r} was declared after the app started")
        info, chain = found
        rid = self._ids(web_request.headers.get("X-Request-ID"))
        exchange = _Exchange(web_request, handler)
        try:
            path, query = split_target(web_request.raw_path)
            headers = CIMultiDict(web_request.headers)
            headers["X-Request-ID"] = rid
            forwarded = ",".join(headers.getall("X-Forwarded-For", ())) or None
            request = Request(
                method=web_request.method,
                path=normalise(path),
                query_string=query,
                headers=headers,
                client_ip=self._forwarding.client_ip(web_request.remote or "", forwarded),
                host=web_request.host.lower(),
                scheme=web_request.scheme,
                request_id=rid,
                route=info,
                body=None,
            )
            request.context[_EXCHANGE] = exchange
            response = await chain(request)
        except BadPath as exc:
            response = error_response(BadRequest(extra={"reason": str(exc)}), rid)
        except HTTPError as exc:
            response = error_response(exc, rid)
        answer = await exchange.answer(response, rid)
        self.metrics.request(route, answer.status, time.perf_counter() - started)
        return answer


async def _call_handler(request: Request) -> Response:
    """The end of every chain: the aiohttp handler, where the gateway has its proxy."""
    exchange: _Exchange = request.context[_EXCHANGE]
    return await exchange.call(request)


class _Exchange:
    """The aiohttp side of one request: the `web.Request`, its handler, and what the handler
    answered (`original`) as the chain saw it (`view`)."""

    __slots__ = ("before", "handler", "opaque", "original", "view", "web")

    def __init__(self, web_request: web.Request, handler: AiohttpHandler) -> None:
        self.web = web_request
        self.handler = handler
        self.original: web.StreamResponse | None = None
        self.view: Response | None = None
        self.before: CIMultiDict[str] = CIMultiDict()
        self.opaque = False

    async def call(self, request: Request) -> Response:
        """Run the handler on the request as the policies left it (headers set and
        stripped), with `request["session"]` holding the session's fields."""
        try:
            seen = self.web.clone(headers=request.headers)
        except RuntimeError:  # an earlier middleware read the body: headers can't be replaced
            log.error("policies.middleware must run before middlewares that read the body")
            raise HTTPError() from None
        session = request.context.get("session")
        if session is not None:
            # The contract's string key; aiohttp would warn once that it prefers RequestKeys.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", web.NotAppKeyWarning)
                seen["session"] = session
        try:
            answer = await self.handler(seen)
        except web.HTTPException as exc:  # the handler's 404 or redirect is an answer too
            answer = exc
        self.original = answer
        self.before = CIMultiDict(answer.headers)
        self.view, self.opaque = _view(answer)
        return self.view

    async def answer(self, final: Response, rid: str) -> web.StreamResponse:
        """The `web.StreamResponse` for the chain's `final` answer."""
        original = self.original
        if original is not None and (original.prepared or (final is self.view and self.opaque)):
            # The handler's own object: already sent (streamed), or one the adapter cannot
            # rebuild (a file, a payload, compression); it gets the headers policies added.
            if not original.prepared:
                _merge(original.headers, final.headers, self.before)
                original.headers["X-Request-ID"] = rid
            return original
        headers = CIMultiDict(final.headers)
        headers["X-Request-ID"] = rid
        headers.popall("Transfer-Encoding", None)
        if self.web.method != "HEAD":
            headers.popall("Content-Length", None)  # aiohttp counts the body it sends
        body = await final.read()
        return web.Response(status=final.status, headers=headers, body=body)


def _view(answer: web.StreamResponse) -> tuple[Response, bool]:
    """The chain's `Response` for a handler's answer, and whether it is opaque. A plain
    `web.Response` is taken whole; anything else is seen body-less and never stored."""
    headers: CIMultiDict[str] = CIMultiDict(answer.headers)
    if answer.prepared:
        headers.add("Cache-Control", _NOT_STORED)
        return Response(answer.status, headers), True
    for cookie in answer.cookies.values():
        headers.add("Set-Cookie", cookie.output(header="")[1:])
    body = answer.body if isinstance(answer, web.Response) else None
    if (
        isinstance(answer, web.Response)
        and (body is None or isinstance(body, bytes | bytearray))
        and not answer.compression
        and not answer.chunked
    ):
        return Response(answer.status, headers, bytes(body or b"")), False
    headers.add("Cache-Control", _NOT_STORED)
    return Response(answer.status, headers), True


def _merge(target: Any, final: CIMultiDict[str], before: CIMultiDict[str]) -> None:
    """Put on `target` the headers policies added or changed in `final` (not `before`)."""
    for name in {key.lower(): key for key in final}.values():
        if name.lower() in ("cache-control", "set-cookie"):
            continue
        values = final.getall(name)
        if values != before.getall(name, []):
            target.popall(name, None)
            for value in values:
                target.add(name, value)


def _caller() -> tuple[str, int | None]:
    """File and line of the application code that called in here (named in errors)."""
    frame = inspect.currentframe()
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    return (frame.f_code.co_filename, frame.f_lineno) if frame is not None else ("<code>", None)
