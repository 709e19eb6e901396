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


class UpstreamError(HTTPError):
    """The upstream refused, reset or spoke invalid HTTP."""

    status = 502
    code = "bad_gateway"


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within its timeout."""

    status = 504
    code = "gateway_timeout"
