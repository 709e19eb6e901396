"""The gateway's few named errors, and how each becomes an HTTP answer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class GatewayError(Exception):
    """Base of everything the gateway raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in a config file: where it is and what is wrong."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(GatewayError):
    """A config that cannot be served; lists every problem found, not just the first."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class StoreUnavailable(GatewayError):
    """The store did not answer in time, or refused; each policy documents its answer."""


class SlotMoving(StoreUnavailable):
    """A Cluster slot stayed half moved (TRYAGAIN) for a call on several keys, some of them not
    yet on the new master; the same call on keys that all exist (often one) may be served."""


class HTTPError(GatewayError):
    """An answer the gateway gives itself: `{"error": code, "request_id": ...}` plus extra fields.

    Policies raise it (or a subclass) to answer; the server turns it into JSON in one place.
    """

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        status: int | None = None,
        code: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})
        super().__init__(f"{self.status} {self.code}")


class BadRequest(HTTPError):
    status = 400
    code = "bad_request"


class NoRoute(HTTPError):
    status = 404
    code = "no_route"


class MethodNotAllowed(HTTPError):
    status = 405
    code = "method_not_allowed"


class RequestTimeout(HTTPError):
    """The client stopped sending its body (`client.body_timeout`)."""

    status = 408
    code = "request_timeout"


class PayloadTooLarge(HTTPError):
    """The body is over `max_request_body`."""

    status = 413
    code = "payload_too_large"


class ClientGone(HTTPError):
    """The client closed the connection mid-request (the answer is never read)."""

    status = 400
    code = "client_closed_request"


class UpstreamError(HTTPError):
    """The upstream refused, reset or spoke invalid HTTP."""

    status = 502
    code = "bad_gateway"


class UpstreamTLSError(UpstreamError):
    """The upstream's certificate did not verify, or its TLS handshake failed: nothing was
    forwarded."""

    status = 502
    code = "upstream_tls"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within its timeout."""

    status = 504
    code = "gateway_timeout"


class UpstreamOverloaded(UpstreamError):
    """Every connection to the upstream is busy and too many requests already wait for one
    (`max_pending`), or none came free in time; `Retry-After: 1`."""

    status = 503
    code = "upstream_overloaded"

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})
