"""One config generation, built: routes with composed chains, policy instances, upstream pools.

A reload builds a new `Runtime` beside the serving one, starts it, swaps it in (a request
keeps the runtime it started with) and stops the old one.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable, Iterator
from typing import Any

from gateway.chain import compose
from gateway.config.certs import CertProblem
from gateway.config.loader import LoadedConfig, PolicySpec
from gateway.errors import ConfigError
from gateway.http.headers import Forwarding
from gateway.http.messages import Handler
from gateway.http.tls import server_context
from gateway.http.websocket import WebSocketProxy
from gateway.policy import Background, Downstream, Policy, PolicyContext
from gateway.proxy import Proxy
from gateway.routing import Route, Router
from gateway.store import Store
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.pools import PoolFigures
from gateway.upstream.pool import Upstream

log = logging.getLogger("gateway.runtime")


def policy_context(
    spec: PolicySpec,
    route: str,
    routes: tuple[str, ...],
    store: Store,
    metrics: Metrics,
    background: Background,
    downstream: Callable[[str], Downstream] | None = None,
) -> PolicyContext:
    """The context of the instance built from `spec`: a named definition's store keys are
    `policy:<name>`, shared by every route and every process (or app) that uses the file;
    an inline declaration's are `route:<route>`. `downstream` is the gateway's chains after
    the instance (an aiohttp app has none)."""
    name = spec.name or spec.kind
    scope = f"policy:{spec.name}" if spec.name else f"route:{route}"
    if downstream is None:
        return PolicyContext(name, scope, store, metrics, background, routes)
    return PolicyContext(name, scope, store, metrics, background, routes, downstream)


class Runtime:
    """Everything a request needs from the config, built once."""

    def __init__(self, loaded: LoadedConfig, store: Store, metrics: Metrics) -> None:
        model = loaded.model
        self.loaded = loaded
        self.store = store
        self.metrics = metrics
        self.background = Background()
        self.forwarding = Forwarding(model.trusted_proxies)
        base = os.path.dirname(loaded.file)
        try:
            # Certificates are read afresh for every config generation (every reload).
            self.server_tls: ssl.SSLContext | None = (
                server_context(model.tls, base) if model.tls is not None else None
            )
            self.upstreams = {
                name: Upstream(name, cfg, base) for name, cfg in model.upstreams.items()
            }
        except CertProblem as exc:
            raise loaded.problem(exc.loc, exc.message) from None
        self.policies: list[Policy] = []
        self._downstream: dict[Policy, dict[str, Downstream]] = {}
        named: dict[str, Policy] = {}
        users: dict[str, list[str]] = {}
        for route_config, chain in zip(model.routes, loaded.chains, strict=True):
            for spec in chain:
                if spec.name is not None:
                    users.setdefault(spec.name, []).append(route_config.name)
        routes = []
        for index, (route_config, chain) in enumerate(
            zip(model.routes, loaded.chains, strict=True)
        ):
            instances = []
            for position, spec in enumerate(chain):
                if spec.name is not None and spec.name in named:
                    instances.append(named[spec.name])
                    continue
                loc = (
                    ("policies", spec.name)
                    if spec.name
                    else ("routes", index, "policies", position)
                )
                routes_of = tuple(users.get(spec.name, ())) if spec.name else (route_config.name,)
                policy = self._build(spec, loc, route_config.name, routes_of)
                if spec.name is not None:
                    named[spec.name] = policy
                instances.append(policy)
                self.policies.append(policy)
            upstream = self.upstreams[route_config.upstream]
            max_body = (
                route_config.max_request_body
                if route_config.max_request_body is not None
                else model.max_request_body
            )
            buffer_body = (
                route_config.buffer_request_body
                if route_config.buffer_request_body is not None
                else model.buffer_request_body
            )
            terminal: Handler = Proxy(
                upstream,
                max_body=max_body,
                body_timeout=model.client.body_timeout,
                buffer_body=buffer_body,
            )
            if route_config.websocket:
                terminal = WebSocketProxy(terminal, upstream)
            route = Route(route_config, upstream, compose(instances, terminal), instances, max_body)
            for position, policy in enumerate(instances):
                rest = compose(instances[position + 1 :], terminal)
                self._downstream[policy][route.name] = Downstream(route, rest)
            routes.append(route)
        self.routes = routes
        self.router = Router(routes)

    def _build(
        self, spec: PolicySpec, loc: tuple[Any, ...], route: str, routes: tuple[str, ...]
    ) -> Policy:
        downstream: dict[str, Downstream] = {}
        context = policy_context(
            spec, route, routes, self.store, self.metrics, self.background, downstream.__getitem__
        )
        name = context.name
        try:
            policy = spec.cls(spec.options, context)
        except ConfigError:
            raise
        except Exception as exc:  # a policy's own constructor bug must name where it was declared
            log.exception("building policy %s failed", name)
            raise self.loaded.problem(loc, f"cannot build {spec.kind}: {exc}") from exc
        self._downstream[policy] = downstream
        return policy

    async def start(self) -> None:
        self.metrics.pools.add(self._pool_figures)
        for policy in self.policies:
            await policy.start()

    async def stop(self) -> None:
        for policy in self.policies:
            try:
                await policy.stop()
            except Exception:  # one policy's cleanup failure must not keep the rest running
                log.exception("stopping policy %s failed", policy.context.name)
        await self.background.close()
        for upstream in self.upstreams.values():
            upstream.close()
        self.metrics.pools.remove(self._pool_figures)

    def _pool_figures(self) -> Iterator[PoolFigures]:
        for upstream in self.upstreams.values():
            yield from upstream.figures()

    def table(self) -> list[dict[str, Any]]:
        """The route table, as `gateway check` prints it and `/-/routes` serves it."""
        out = []
        for route in self.routes:
            match = route.config.match
            out.append(
                {
                    "name": route.name,
                    "match": {
                        "path": match.path,
                        "host": match.host,
                        "methods": list(match.methods) if match.methods else None,
                    },
                    "upstream": route.config.upstream,
                    "targets": list(route.upstream.config.targets),
                    "strip_prefix": route.config.strip_prefix,
                    "websocket": route.config.websocket,
                    "policies": [policy.describe() for policy in route.policies],
                }
            )
        return out
