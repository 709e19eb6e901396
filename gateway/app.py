"""The public listener's request handler: route, run the chain, answer, log, count.

Errors become JSON answers here and only here: `HTTPError`s raised by the proxy or a policy
carry their status and code; anything else is a 500 whose traceback stays in the log.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from gateway.errors import (
    BadRequest,
    HTTPError,
    MethodNotAllowed,
    NoRoute,
    PayloadTooLarge,
    UpstreamError,
)
from gateway.headers import RequestIds, strip_hop_by_hop
from gateway.http import Request, Response
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

    async def handle(self, raw: web.BaseRequest) -> Any:
        """aiohttp's request handler for the public listener."""
        started = time.perf_counter()
        runtime = self.runtime  # this request finishes on the config it started with
        incoming = raw.headers
        rid = self.request_id(incoming.get("X-Request-ID"))
        request: Request | None = None
        route_name = None
        path = raw.raw_path
        try:
            path, query = split_target(path)
            path = normalise(path)
            host = incoming.get("Host", "").lower()
            match = runtime.router.match(host, path, raw.method)
            if match is None:
                raise NoRoute()
            if isinstance(match, NotAllowed):
                raise MethodNotAllowed(headers={"Allow": match.allow})
            route = match
            route_name = route.name
            length = incoming.get("Content-Length")
            if length is not None and int(length) > route.max_request_body:
                raise PayloadTooLarge()
            headers = CIMultiDict(incoming)
            strip_hop_by_hop(headers)
            headers["X-Request-ID"] = rid
            scheme = raw.scheme
            client_ip = runtime.forwarding.apply(headers, incoming, raw.remote or "", scheme, host)
            if "Expect" in headers:
                del headers["Expect"]  # the proxy answers it, when the chain lets the body in
            request = Request(
                method=raw.method,
                path=route.rewrite(path),
                query_string=query,
                headers=headers,
                client_ip=client_ip,
                host=host,
                scheme=scheme,
                request_id=rid,
                route=route,
                body=raw.content if raw.body_exists else None,
                raw=raw,
            )
            response = await route.handler(request)
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
        out: Any
        if response.upgrade is not None:
            out, sent = await response.upgrade(raw), 0
        else:
            body = response.stream.buffered() if response.stream is not None else None
            if body is not None:
                response.body, response.stream = body, None
            if response.stream is None:
                out, sent = complete(raw, response)
            else:
                out, sent = await stream(raw, response, rid)

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
                raw.method,
                path,
                response.status,
                sent,
                elapsed,
                upstream_seconds,
                request.client_ip if request is not None else raw.remote,
                request.log if request is not None else None,
            )
        return out


def _error(exc: HTTPError, rid: str) -> Response:
    payload: dict[str, Any] = {"error": exc.code, "request_id": rid}
    payload.update(exc.extra)
    return Response.json(exc.status, payload, exc.headers)
