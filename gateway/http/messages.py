"""The request and response that flow through a route's policy chain.

They are the gateway's own small types, not aiohttp's: a policy can answer without the
upstream (a cache hit, a 429), read or replace what the upstream answered, and the server
writes the result to the client once, streaming when the body is a stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.config.models import UpstreamConfig
from gateway.http.incoming import Incoming, RequestBody


class UpstreamInfo(Protocol):
    """What a policy may read of a route's upstream."""

    @property
    def config(self) -> UpstreamConfig: ...


class RouteInfo(Protocol):
    """What a policy may read of the route that took a request (`gateway.routing.Route`).

    A protocol, so that the messages sit below the routing that builds chains of policies
    which take these messages."""

    @property
    def name(self) -> str: ...

    @property
    def policies(self) -> Sequence[object]:
        """The route's policies, outermost first."""

    @property
    def max_request_body(self) -> int: ...

    @property
    def upstream(self) -> UpstreamInfo: ...


class Body(Protocol):
    """A response body that arrives over time (from the upstream), read once."""

    length: int | None
    """Content-Length when the sender declared one."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def buffered(self) -> bytes | None:
        """The whole body if it has already arrived, else None (small bodies skip streaming)."""

    def close(self) -> None:
        """Stop reading; releases the upstream connection (closing it if bytes were left unread)."""


class Request:
    """One client request on its way through the chain to the upstream.

    `headers` are the headers the upstream will receive (hop-by-hop ones already removed);
    policies may change them. `context` holds what earlier policies found out for later ones,
    by namespace: the session policy stores the session's fields under `context["session"]`.
    `log` collects fields for the access log line (`log["cache"] = "HIT"`).
    """

    __slots__ = (
        "_query",
        "body",
        "client_ip",
        "context",
        "headers",
        "host",
        "incoming",
        "log",
        "method",
        "path",
        "query_string",
        "request_id",
        "route",
        "scheme",
        "upstream_seconds",
    )

    def __init__(
        self,
        *,
        method: str,
        path: str,
        query_string: str,
        headers: CIMultiDict[str],
        client_ip: str,
        host: str,
        scheme: str,
        request_id: str,
        route: RouteInfo,
        body: RequestBody | bytes | None,
        incoming: Incoming | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.client_ip = client_ip
        self.host = host
        self.scheme = scheme
        self.request_id = request_id
        self.route = route
        self.body = body
        self.incoming = incoming
        """The request as the client sent it (None for requests the gateway makes itself)."""
        self.context: dict[str, Any] = {}
        self.log: dict[str, Any] = {}
        self.upstream_seconds: float | None = None
        """Time to the upstream's response head, set by the proxy (access log, metrics)."""
        self._query: CIMultiDictProxy[str] | None = None

    @property
    def target(self) -> str:
        """Path and query as sent upstream."""
        return f"{self.path}?{self.query_string}" if self.query_string else self.path

    @property
    def query(self) -> CIMultiDictProxy[str]:
        """Parsed query parameters (parsed on first use)."""
        if self._query is None:
            from urllib.parse import parse_qsl

            pairs = parse_qsl(self.query_string, keep_blank_values=True)
            self._query = CIMultiDictProxy(CIMultiDict(pairs))
        return self._query

    def copy(self) -> Request:
        """A body-less copy with its own headers, for work beyond the request (revalidation)."""
        clone = Request(
            method=self.method,
            path=self.path,
            query_string=self.query_string,
            headers=CIMultiDict(self.headers),
            client_ip=self.client_ip,
            host=self.host,
            scheme=self.scheme,
            request_id=self.request_id,
            route=self.route,
            body=None,
        )
        clone.context = dict(self.context)
        return clone


class Response:
    """An answer on its way back to the client: `body` bytes, or a `stream` from the upstream.

    `upgrade`, when set, takes the client connection over instead (a WebSocket tunnel).
    """

    __slots__ = ("body", "headers", "status", "stream", "upgrade")

    def __init__(
        self,
        status: int,
        headers: CIMultiDict[str] | None = None,
        body: bytes = b"",
        stream: Body | None = None,
        upgrade: Callable[[Incoming], Awaitable[None]] | None = None,
    ) -> None:
        self.status = status
        self.headers: CIMultiDict[str] = headers if headers is not None else CIMultiDict()
        self.body = body
        self.stream = stream
        self.upgrade = upgrade

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        out: CIMultiDict[str] = CIMultiDict(headers or {})
        out["Content-Type"] = "application/json"
        return cls(status, out, json.dumps(payload, separators=(",", ":")).encode())

    async def read(self, limit: int | None = None) -> bytes | None:
        """Read a streamed body into `body`; None (stream left as is) once it passes `limit`.

        When the limit is passed the bytes read so far are put back in front of the stream,
        so the caller can still send the whole body on.
        """
        if self.stream is None:
            return self.body
        whole = self.stream.buffered()
        if whole is not None and (limit is None or len(whole) <= limit):
            self.body, self.stream = whole, None
            return whole
        if limit is not None and self.stream.length is not None and self.stream.length > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        iterator = aiter(self.stream)
        async for chunk in iterator:
            chunks.append(chunk)
            size += len(chunk)
            if limit is not None and size > limit:
                self.stream = _Prepended(chunks, iterator, self.stream)
                return None
        self.body, self.stream = b"".join(chunks), None
        return self.body

    def close(self) -> None:
        """Abandon a streamed body (e.g. a policy answers from elsewhere after all)."""
        if self.stream is not None:
            self.stream.close()
            self.stream = None


class _Prepended:
    """A stream whose first chunks were already read by a policy."""

    def __init__(self, head: list[bytes], rest: AsyncIterator[bytes], source: Body) -> None:
        self.length = source.length
        self._head = head
        self._rest = rest
        self._source = source

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._head:
            yield chunk
        self._head = []
        async for chunk in self._rest:
            yield chunk

    def buffered(self) -> bytes | None:
        return None

    def close(self) -> None:
        self._source.close()


Handler = Callable[[Request], Awaitable[Response]]
"""`async (request) -> Response`: the rest of the chain, as a policy sees it."""
