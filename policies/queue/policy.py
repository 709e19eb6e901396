"""The `queue` policy: accept a request into the route's stream, answer 202, deliver later.

A request is answered `202 {"queued": "<id>"}` only once the store acknowledged the write;
every gateway process delivers the route's entries through the rest of the route's chain
(`delivery.py`). The chain after this policy runs at delivery time, not when accepting.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Mapping
from typing import ClassVar

from gateway.api import (
    AdminEndpoint,
    Handler,
    HTTPError,
    Policy,
    PolicyContext,
    Request,
    Response,
    StoreUnavailable,
)
from policies.queue.admin import replay, status
from policies.queue.config import QueueOptions
from policies.queue.delivery import Consumer, Counters
from policies.queue.entry import fields
from policies.queue.scripts import RouteKeys, scripts

BODY_TIMEOUT = 30.0
"""Seconds the client may pause while sending the body of a request being queued."""


class QueueUnavailable(HTTPError):
    """503: the store did not take the entry; nothing was accepted."""

    status = 503
    code = "queue_unavailable"


class TooLarge(HTTPError):
    status = 413
    code = "payload_too_large"


class Queue(Policy):
    """Store-and-forward: at-least-once delivery of accepted requests to the route's upstream."""

    Options = QueueOptions
    options: QueueOptions
    admin_endpoints: ClassVar[Mapping[str, AdminEndpoint]] = {
        "GET /-/queue": status,
        "POST /-/queue/replay": replay,
    }

    def __init__(self, options: QueueOptions, context: PolicyContext) -> None:
        super().__init__(options, context)
        self._scripts = scripts()
        self._keys = {route: RouteKeys.of(route) for route in context.routes}
        self._retention_ms = int(options.retention * 1000)
        metrics = context.metrics
        accepted = metrics.counter(
            "gateway_queue_accepted_total", "Requests accepted into a queue.", ["route"]
        )
        delivered = metrics.counter(
            "gateway_queue_delivered_total", "Queued requests delivered (2xx).", ["route"]
        )
        retried = metrics.counter(
            "gateway_queue_retried_total", "Failed deliveries scheduled again.", ["route"]
        )
        dead = metrics.counter(
            "gateway_queue_dead_total", "Queued requests moved to the dead letters.", ["route"]
        )
        self.backlog = metrics.gauge(
            "gateway_queue_backlog",
            "Entries accepted and not yet delivered or dead, store-wide (last look).",
            ["route"],
            mode="livemax",
        )
        self._accepted = {route: accepted.labels(route) for route in context.routes}
        self._counters = {
            route: Counters(
                delivered.labels(route),
                retried.labels(route),
                dead.labels(route),
                self.backlog.labels(route),
            )
            for route in context.routes
        }
        self.consumers: dict[str, Consumer] = {}

    def keys(self, route: str) -> RouteKeys | None:
        return self._keys.get(route)

    async def __call__(self, request: Request, call_next: Handler) -> Response:
        route = request.route.name
        body = await self._body(request)
        keys = self._keys[route]
        try:
            queued = await self.context.store.eval(
                self._scripts.enqueue,
                [keys.stream],
                [self._retention_ms, *fields(request, body)],
            )
        except StoreUnavailable:
            raise QueueUnavailable() from None
        self._accepted[route].inc()
        consumer = self.consumers.get(route)
        if consumer is not None:
            consumer.wake()
        request.log["queue"] = "accepted"
        return Response.json(202, {"queued": queued.decode()})

    async def _body(self, request: Request) -> bytes:
        limit = min(self.options.max_body, request.route.max_request_body)
        body = request.body
        if body is None:
            return b""
        if isinstance(body, bytes):
            if len(body) > limit:
                raise TooLarge()
            return body
        if body.length is not None and body.length > limit:
            raise TooLarge()
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                async with asyncio.timeout(BODY_TIMEOUT):
                    chunk = await body.read()
            except TimeoutError:
                raise HTTPError(408, "request_timeout") from None
            except ConnectionError:
                raise HTTPError(400, "client_closed_request") from None
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise TooLarge()
            chunks.append(chunk)

    async def start(self) -> None:
        name = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        for route in self.context.routes:
            consumer = Consumer(
                route,
                self.context.store,
                self.options,
                self.context.downstream(route),
                name,
                self._counters[route],
            )
            self.consumers[route] = consumer
            consumer.start(self.context.background)

    async def stop(self) -> None:
        await asyncio.gather(*(consumer.stop() for consumer in self.consumers.values()))

    def describe(self) -> str:
        o = self.options
        return (
            f"{self.context.name} (max_attempts {o.max_attempts}, "
            f"visibility {o.visibility_timeout:g}s)"
        )
