"""The public listener's request handler: route, run the chain, answer, log, count.

Errors become JSON answers here and only here: `HTTPError`s raised by the proxy or a policy
carry their status and code; anything else is a 500 whose traceback stays in the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gateway.errors import (
    BadRequest,
    HTTPError,
    MethodNotAllowed,
    NoRoute,
    PayloadTooLarge,
    UpstreamError,
)
from gateway.headers import RequestIds
from gateway.http import Request, Response
from gateway.incoming import Incoming
from gateway.logs import AccessLog
from gateway.paths import BadPath, normalise, split_target
from gateway.respond import complete, stream
from gateway.routing import NotAllowed
from gateway.runtime import Runtime

log = logging.getLogger("gateway.app")


class Gateway:
    """Serves requests with the current `Runtime`; `swap()` replaces it atomically."""

    def __init__(self, runtime: Runtime, access_log: AccessLog | None = None) -> None:
        self.runtime = runtime
        self.access_log = access_log if runtime.loaded.model.access_log else None
        self.metrics = runtime.metrics
        self.request_id = RequestIds()

    def swap(self, runtime: Runtime) -> Runtime:
        """Serve `runtime` from the next request on; returns the one it replaces."""
        old, self.runtime = self.runtime, runtime
        self.access_log = self.access_log if runtime.loaded.model.access_log else None
        return old

    async def handle(self, incoming: Incoming) -> None:
        """The public listener's handler: answers `incoming` on its connection."""
        started = time.perf_counter()
        runtime = self.runtime  # this request finishes on the config it started with
        rid = self.request_id(incoming.request_id)
        request: Request | None = None
        route_name = None
        path = incoming.target
        try:
            path, query = split_target(path)
            path = normalise(path)
            host = incoming.host
            match = runtime.router.match(host, path, incoming.method)
            if match is None:
                raise NoRoute()
            if isinstance(match, NotAllowed):
                raise MethodNotAllowed(headers={"Allow": match.allow})
            route = match
            route_name = route.name
            body = incoming.body
            if (
                body is not None
                and body.length is not None
                and body.length > route.max_request_body
            ):
                raise PayloadTooLarge()
            headers = incoming.headers
            headers["X-Request-ID"] = rid
            client_ip = runtime.forwarding.apply(headers, incoming, "http", host)
            request = Request(
                method=incoming.method,
                path=route.rewrite(path),
                query_string=query,
                headers=headers,
                client_ip=client_ip,
                host=host,
                scheme="http",
                request_id=rid,
                route=route,
                body=body,
                incoming=incoming,
            )
            response = await route.handler(request)
        except asyncio.CancelledError:
            self._cut_off(incoming, rid, route_name, path, started, request)
            raise
        except BadPath as exc:
            response = _error(BadRequest(extra={"reason": str(exc)}), rid)
        except HTTPError as exc:
            if isinstance(exc, UpstreamError) and request is not None:
                self.metrics.upstream_errors.labels(request.route.config.upstream, exc.code).inc()
            response = _error(exc, rid)
        except Exception:
            log.exception("request %s failed", rid)
            response = _error(HTTPError(), rid)

        response.headers["X-Request-ID"] = rid
        try:
            if response.upgrade is not None:
                await response.upgrade(incoming)
                sent = 0
            else:
                whole = response.stream.buffered() if response.stream is not None else None
                if whole is not None:
                    response.body, response.stream = whole, None
                if response.stream is None:
                    sent = complete(incoming, response)
                else:
                    sent = await stream(incoming, response, rid)
        except asyncio.CancelledError:
            self._cut_off(incoming, rid, route_name, path, started, request)
            raise

        elapsed = time.perf_counter() - started
        self.metrics.request(route_name or "", response.status, elapsed)
        upstream_seconds = None
        if request is not None:
            upstream_seconds = request.upstream_seconds
            if upstream_seconds is not None:
                self.metrics.upstream(request.route.config.upstream, upstream_seconds)
        if self.access_log is not None:
            self.access_log.request(
                rid,
                route_name,
                incoming.method,
                path,
                response.status,
                sent,
                elapsed,
                upstream_seconds,
                request.client_ip if request is not None else incoming.peer,
                request.log if request is not None else None,
            )

    def _cut_off(
        self,
        incoming: Incoming,
        rid: str,
        route_name: str | None,
        path: str,
        started: float,
        request: Request | None,
    ) -> None:
        """The listener cancelled this request at `shutdown_timeout`: its access line says
        status 0 (no complete answer) and bytes 0."""
        if self.access_log is not None:
            self.access_log.request(
                rid,
                route_name,
                incoming.method,
                path,
                0,
                0,
                time.perf_counter() - started,
                request.upstream_seconds if request is not None else None,
                request.client_ip if request is not None else incoming.peer,
                request.log if request is not None else None,
            )


def _error(exc: HTTPError, rid: str) -> Response:
    payload: dict[str, Any] = {"error": exc.code, "request_id": rid}
    payload.update(exc.extra)
    return Response.json(exc.status, payload, exc.headers)
