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

from gateway.errors import HTTPError, UpstreamError
from gateway.headers import request_id, strip_hop_by_hop
from gateway.http import Request, Response
from gateway.logs import AccessLog, timestamp
from gateway.paths import BadPath, normalise, split_target
from gateway.routing import NotAllowed
from gateway.runtime import Runtime

log = logging.getLogger("gateway.app")


class NoRoute(HTTPError):
    status = 404
    code = "no_route"


class MethodNotAllowed(HTTPError):
    status = 405
    code = "method_not_allowed"


class BadRequest(HTTPError):
    status = 400
    code = "bad_request"


class PayloadTooLarge(HTTPError):
    status = 413
    code = "payload_too_large"


class Gateway:
    """Serves requests with the current `Runtime`; `swap()` replaces it atomically."""

    def __init__(self, runtime: Runtime, access_log: AccessLog | None = None) -> None:
        self.runtime = runtime
        self.access_log = access_log if runtime.loaded.model.access_log else None
        self.metrics = runtime.metrics

    def swap(self, runtime: Runtime) -> Runtime:
        """Serve `runtime` from the next request on; returns the one it replaces."""
        old, self.runtime = self.runtime, runtime
        self.access_log = self.access_log if runtime.loaded.model.access_log else None
        return old

    async def handle(self, raw: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        runtime = self.runtime  # this request finishes on the config it started with
        rid = request_id(raw.headers.get("X-Request-ID"))
        request: Request | None = None
        route_name = ""
        path = raw.raw_path
        try:
            path, query = split_target(raw.raw_path)
            path = normalise(path)
            host = raw.headers.get("Host", "").lower()
            match = runtime.router.match(host, path, raw.method)
            if match is None:
                raise NoRoute()
            if isinstance(match, NotAllowed):
                raise MethodNotAllowed(headers={"Allow": match.allow})
            route = match
            route_name = route.name
            if raw.content_length is not None and raw.content_length > route.max_request_body:
                raise PayloadTooLarge()
            headers = CIMultiDict(raw.headers)
            strip_hop_by_hop(headers)
            headers["X-Request-ID"] = rid
            peer = raw.remote or ""
            scheme = raw.scheme
            client_ip = runtime.forwarding.apply(headers, raw.headers, peer, scheme, host)
            headers.popall("Expect", None)  # answered by the proxy when it reads the body
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
        out, sent = await self._send(raw, response, rid)
        elapsed = time.perf_counter() - started
        self.metrics.request(route_name, response.status, elapsed)
        if request is not None and "upstream_ms" in request.log:
            self.metrics.upstream(request.route.config.upstream, request.log["upstream_ms"] / 1000)
        if self.access_log is not None:
            record: dict[str, Any] = {
                "ts": timestamp(),
                "request_id": rid,
                "route": route_name or None,
                "method": raw.method,
                "path": path,
                "status": response.status,
                "bytes": sent,
                "duration_ms": round(elapsed * 1000, 2),
                "upstream_ms": None,
                "client_ip": request.client_ip if request is not None else raw.remote,
            }
            if request is not None:
                record.update(request.log)
            self.access_log.write(record)
        return out

    async def _send(
        self, raw: web.BaseRequest, response: Response, rid: str
    ) -> tuple[web.StreamResponse, int]:
        if response.upgrade is not None:
            return await response.upgrade(raw), 0
        headers = response.headers
        headers["X-Request-ID"] = rid
        stream = response.stream
        if stream is not None:
            whole = stream.buffered()
            if whole is not None:
                response.body, stream = whole, None
        if stream is None:
            return _complete(raw, response, headers), len(response.body)
        out = web.StreamResponse(status=response.status, headers=headers)
        if stream.length is not None:
            out.content_length = stream.length
        sent = 0
        try:
            await out.prepare(raw)
            async for chunk in stream:
                await out.write(chunk)
                sent += len(chunk)
            await out.write_eof()
        except (UpstreamError, ConnectionError) as exc:
            # Mid-body there is no status left to send: close, so the client sees the truncation.
            stream.close()
            if raw.transport is not None:
                raw.transport.close()
            log.info("request %s: response cut short: %s", rid, type(exc).__name__)
        return out, sent


def _complete(raw: web.BaseRequest, response: Response, headers: CIMultiDict[str]) -> web.Response:
    """A response whose whole body is in hand (one write with the head)."""
    if raw.method == "HEAD" or response.status in (204, 304) or response.status < 200:
        # Keep the upstream's Content-Length (a HEAD answer describes the GET body).
        out = web.Response(status=response.status, headers=headers)
        return out
    headers.popall("Content-Length", None)
    return web.Response(status=response.status, headers=headers, body=response.body)


def _error(exc: HTTPError, rid: str) -> Response:
    payload: dict[str, Any] = {"error": exc.code, "request_id": rid}
    payload.update(exc.extra)
    return Response.json(exc.status, payload, exc.headers)
