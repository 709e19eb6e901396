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
from gateway.http.headers import RequestIds
from gateway.http.incoming import Incoming
from gateway.http.messages import Request, Response
from gateway.http.paths import BadPath, normalise, split_target
from gateway.http.respond import complete, stream
from gateway.http.tls import ServerTLS
from gateway.routing import NotAllowed, Route
from gateway.runtime import Runtime
from gateway.telemetry.logs import AccessLog

log = logging.getLogger("gateway.app")


class Gateway:
    """Serves requests with the current `Runtime`; `swap()` replaces it atomically."""

    def __init__(self, runtime: Runtime, access_log: AccessLog | None = None) -> None:
        self.runtime = runtime
        self.access_log = access_log if runtime.loaded.model.access_log else None
        self.metrics = runtime.metrics
        self.request_id = RequestIds()
        self.tls = ServerTLS(runtime.server_tls) if runtime.server_tls is not None else None
        """The public listener's TLS context: the runtime's certificates, swapped with it."""

    def swap(self, runtime: Runtime) -> Runtime:
        """Serve `runtime` from the next request (and TLS connection) on; returns the one it
        replaces."""
        old, self.runtime = self.runtime, runtime
        if self.tls is not None and runtime.server_tls is not None:
            self.tls.use(runtime.server_tls)
        self.access_log = self.access_log if runtime.loaded.model.access_log else None
        return old

    async def handle(self, incoming: Incoming) -> None:
        """The public listener's handler: answers `incoming` on its connection."""
        started = time.perf_counter()
        runtime = self.runtime  # this request finishes on the config it started with
        rid = self.request_id(incoming.request_id)
        request: Request | None = None
        route: Route | None = None
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
            scheme = incoming.conn.scheme
            client_ip = runtime.forwarding.apply(headers, incoming, scheme, host)
            request = Request(
                method=incoming.method,
                path=route.rewrite(path),
                query_string=query,
                headers=headers,
                client_ip=client_ip,
                host=host,
                scheme=scheme,
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
            response = error_response(BadRequest(extra={"reason": str(exc)}), rid)
        except HTTPError as exc:
            if isinstance(exc, UpstreamError) and route is not None:
                self.metrics.upstream_errors.labels(route.config.upstream, exc.code).inc()
            response = error_response(exc, rid)
        except Exception:
            log.exception("request %s failed", rid)
            response = error_response(HTTPError(), rid)

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
        if request is not None and route is not None:
            upstream_seconds = request.upstream_seconds
            if upstream_seconds is not None:
                self.metrics.upstream(route.config.upstream, upstream_seconds)
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
                self._log_fields(request, incoming),
            )

    @staticmethod
    def _log_fields(request: Request | None, incoming: Incoming) -> dict[str, Any] | None:
        fields = request.log if request is not None else None
        aborted = incoming.conn.aborted
        if aborted is not None:
            fields = {**(fields or {}), "aborted": aborted}
        return fields

    def _cut_off(
        self,
        incoming: Incoming,
        rid: str,
        route_name: str | None,
        path: str,
        started: float,
        request: Request | None,
    ) -> None:
        """The listener cancelled this request (`shutdown_timeout`): its access line says
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
                self._log_fields(request, incoming),
            )


def error_response(exc: HTTPError, rid: str) -> Response:
    """The gateway's JSON answer for `exc` (also what `gateway.aiohttp` answers)."""
    payload: dict[str, Any] = {"error": exc.code, "request_id": rid}
    payload.update(exc.extra)
    return Response.json(exc.status, payload, exc.headers)
