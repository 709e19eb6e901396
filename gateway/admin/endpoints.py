"""The admin listener: health, readiness, metrics, stats, routes, reload, the dashboard, and
policies' admin calls.

It serves a `Control`, so the same app fronts one process (tests, each worker's private
control socket) or the supervisor of many workers. It is never mounted on the public listener.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.admin.dashboard import dashboard
from gateway.admin.stats import render as render_stats
from gateway.errors import ConfigError
from gateway.registry import Registry

_OPEN = frozenset({"/-/health", "/-/dashboard"})
"""Paths served without the token: liveness, and the dashboard's page, which holds no data
(its scripts send the token with every call they make; see gateway/admin/dashboard.py)."""


class Control(Protocol):
    """What the admin endpoints ask of a gateway (one process, or a supervisor of several)."""

    async def ready(self) -> tuple[bool, str]: ...

    async def routes(self) -> list[dict[str, Any]]: ...

    async def metrics(self) -> bytes: ...

    async def reload(self) -> list[str]:
        """Apply the config file again; returns warnings, raises `ConfigError` (old one stays)."""

    async def stats(self) -> dict[str, Any]:
        """The summed `telemetry.stats` snapshot of every worker."""

    async def policy_call(
        self, policy: str, endpoint: str, body: Any, query: Mapping[str, str] | None = None
    ) -> tuple[int, Any]: ...


def _json(status: int, payload: Any) -> web.Response:
    return web.json_response(payload, status=status, dumps=lambda o: json.dumps(o, default=str))


def admin_app(
    control: Control,
    registry: Registry,
    *,
    token: str | None = None,
    extra_routes: Mapping[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]
    | None = None,
) -> web.Application:
    """The admin HTTP app. With `token`, every endpoint but `/-/health` and the dashboard's page
    needs the bearer token."""
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def auth(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if expected is not None and request.path not in _OPEN:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return _json(401, {"error": "unauthorized"})
        return await handler(request)

    async def health(_: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def ready(_: web.Request) -> web.Response:
        ok, reason = await control.ready()
        if ok:
            return _json(200, {"status": "ready"})
        return _json(503, {"status": "unavailable", "reason": reason})

    async def metrics(_: web.Request) -> web.Response:
        body = await control.metrics()
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def routes(_: web.Request) -> web.Response:
        return _json(200, {"routes": await control.routes()})

    async def stats(_: web.Request) -> web.Response:
        return _json(200, render_stats(await control.stats()))

    async def reload(_: web.Request) -> web.Response:
        try:
            warnings = await control.reload()
        except ConfigError as exc:
            return _json(
                400, {"error": "invalid_config", "problems": [str(p) for p in exc.problems]}
            )
        return _json(200, {"status": "reloaded", "warnings": warnings})

    app = web.Application(middlewares=[auth])
    app.router.add_get("/-/health", health)
    app.router.add_get("/-/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/routes", routes)
    app.router.add_get("/-/stats", stats)
    app.router.add_get("/-/dashboard", dashboard)
    app.router.add_post("/-/reload", reload)
    for policy_type in registry:
        for key in registry[policy_type].admin_endpoints:
            method, _, path = key.partition(" ")
            app.router.add_route(method, path, _policy_endpoint(control, policy_type, key))
    for key, handler in (extra_routes or {}).items():
        method, _, path = key.partition(" ")
        app.router.add_route(method, path, handler)
    return app


def _policy_endpoint(
    control: Control, policy_type: str, key: str
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        body: Any = None
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                return _json(400, {"error": "invalid_json"})
        status, payload = await control.policy_call(policy_type, key, body, dict(request.query))
        return _json(status, payload)

    return handle
