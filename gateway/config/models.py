"""The config file's shape: typed, validated models; every field documents its default.

Policy entries stay raw mappings here; `gateway.config.loader` validates each with its policy's own
`Options` model, found through the registry, so third-party policies fit the same way.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
)
from pydantic_core import PydanticCustomError

from gateway.config.units import Duration, Size

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _listen(value: str) -> str:
    _, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise PydanticCustomError("listen", f"expected host:port, got {value!r}")
    return value


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise PydanticCustomError(
            "name", f"invalid name {value!r} (letters, digits, '_', '.', '-'; at most 64)"
        )
    return value


def _network(value: Any) -> IPv4Network | IPv6Network:
    # Bare addresses and networks with host bits set are accepted, as operators write them.
    try:
        return ip_network(str(value), strict=False)
    except ValueError:
        raise PydanticCustomError("network", f"invalid address or network {value!r}") from None


def _workers(value: Any) -> int | str:
    if value == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 256:
        return value
    raise PydanticCustomError("workers", f"expected 1 to 256 or 'auto', got {value!r}")


Listen = Annotated[str, AfterValidator(_listen)]
Workers = Annotated[int | Literal["auto"], BeforeValidator(_workers)]
Network = Annotated[IPv4Network | IPv6Network, BeforeValidator(_network)]
Name = Annotated[str, AfterValidator(_name)]


def split_listen(value: str) -> tuple[str, int]:
    """`0.0.0.0:8080` -> (`0.0.0.0`, 8080); `[::1]:80` -> (`::1`, 80)."""
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class AdminConfig(Model):
    """The admin listener: health, readiness, metrics, reload. Never the public listener."""

    listen: Listen = Field("127.0.0.1:9901", description="Address of the admin listener.")
    token: SecretStr | None = Field(
        None,
        description="When set, admin calls need `Authorization: Bearer <token>`. "
        "Default: none (bind the admin listener to loopback).",
    )

    @field_validator("token", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value in ("", None) else value


class RedisConfig(Model):
    """Where shared state lives."""

    url: str = Field(
        "memory://",
        description="`redis://`, `rediss://`, `redis+sentinel://host:port,…/service[/db]`, "
        "`redis+cluster://host:port,…`, or `memory://` (embedded, one process only).",
    )
    pool_size: int = Field(64, ge=1, le=10_000, description="Connections per process.")
    timeout: Duration = Field(0.25, gt=0, description="Deadline of each store call.")
    memory_max: Size = Field(
        64 * 1024 * 1024, gt=0, description="`memory://` only: LRU bound of the keyspace in bytes."
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        allowed = (
            "redis",
            "rediss",
            "unix",
            "redis+sentinel",
            "rediss+sentinel",
            "redis+cluster",
            "rediss+cluster",
            "memory",
        )
        if scheme not in allowed:
            raise PydanticCustomError(
                "url",
                f"unsupported store URL {value!r} (use redis://, rediss://, "
                "redis+sentinel://, redis+cluster:// or memory://)",
            )
        return value


class Timeouts(Model):
    """Upstream deadlines."""

    connect: Duration = Field(
        2.0,
        gt=0,
        description="To open a TCP (and TLS) connection, or to wait for a free one at "
        "`max_connections`. Default: 2s.",
    )
    read: Duration = Field(
        30.0, gt=0, description="Waiting for the response head, and between body chunks."
    )


def _target(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PydanticCustomError("target", f"invalid target {value!r} (expected http://host:port)")
    if parts.query or parts.fragment:
        raise PydanticCustomError("target", f"a target has no query or fragment: {value!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise PydanticCustomError("target", f"invalid port in target {value!r}") from None
    return value.rstrip("/")


def _tls_version(value: Any) -> str:
    # YAML reads an unquoted 1.2 as a number: take it as the operator meant it.
    text = f"{value:.1f}" if isinstance(value, float) else str(value)
    if text not in ("1.2", "1.3"):
        raise PydanticCustomError(
            "tls_version", f'unsupported TLS version {value!r} (use "1.2" or "1.3")'
        )
    return text


def _sni_host(value: str) -> str:
    host = value.lower().rstrip(".")
    if not re.fullmatch(r"(\*\.)?[a-z0-9-]+(\.[a-z0-9-]+)*", host):
        raise PydanticCustomError(
            "host", f"invalid SNI name {value!r} (an exact name or *.example.com)"
        )
    return host


TLSVersion = Annotated[Literal["1.2", "1.3"], BeforeValidator(_tls_version)]
Path = Annotated[str, Field(min_length=1)]


class SniCertificate(Model):
    """A certificate served to clients that ask for one of `hosts` (TLS SNI)."""

    hosts: list[Annotated[str, AfterValidator(_sni_host)]] = Field(
        min_length=1,
        description="Exact names, or `*.example.com` (one label: `a.example.com`, not "
        "`example.com` nor `a.b.example.com`).",
    )
    cert: Path = Field(description="PEM certificate chain, leaf first.")
    key: Path = Field(description="PEM private key of the leaf (not encrypted).")


class TLSConfig(Model):
    """HTTPS on the public listener. Files are re-read on reload; relative paths are relative
    to the config file's folder."""

    cert: Path = Field(description="PEM certificate chain, leaf first: the default certificate.")
    key: Path = Field(description="PEM private key of the default certificate (not encrypted).")
    sni: list[SniCertificate] = Field(
        default_factory=list,
        description="Per-name certificates; names not listed get the default one.",
    )
    min_version: TLSVersion = Field(
        "1.2", description='Oldest TLS version accepted: "1.2" or "1.3".'
    )
    client_ca: Path | None = Field(
        None,
        description="PEM CA certificate(s): when set, clients must present a certificate it "
        "signed (mTLS); its subject is the key source `tls.subject`.",
    )


class UpstreamTLS(Model):
    """How the gateway speaks TLS to `https://` targets."""

    ca: Path | None = Field(
        None, description="PEM CA certificate(s) to verify targets with; default the system's."
    )
    server_name: str | None = Field(
        None, description="Name sent (SNI) and verified; default the target's host."
    )
    verify: bool = Field(True, description="Verify the target's certificate and name.")
    cert: Path | None = Field(
        None, description="The gateway's client certificate (PEM chain), for upstream mTLS."
    )
    key: Path | None = Field(None, description="Its private key (default: inside `cert`).")


class UpstreamConfig(Model):
    """A pool of equivalent servers."""

    targets: Annotated[list[Annotated[str, AfterValidator(_target)]], Field(min_length=1)] = Field(
        description="Base URLs; several are used round robin (a path is prepended to requests)."
    )
    timeouts: Timeouts = Field(default_factory=Timeouts, description="Connect and read deadlines.")
    keepalive: Duration = Field(
        4.0,
        ge=0,
        description="Idle pooled connections are closed after this; keep it below the upstream "
        "server's own idle timeout (Node 5s, gunicorn 2s, nginx 75s). 0 disables reuse.",
    )
    max_connections: int = Field(
        1024,
        ge=1,
        description="Connections open at once to one target, per worker process (WebSocket "
        "tunnels not counted); a request past it waits for one to come free. Default: 1024.",
    )
    max_pending: int = Field(
        1024,
        ge=0,
        description="Requests that may wait for a connection to one target, per worker; past "
        "it, or when none comes free within `timeouts.connect`, 503 `upstream_overloaded` "
        "with `Retry-After: 1`. Default: 1024.",
    )
    max_idle: int | None = Field(
        None,
        ge=0,
        description="Idle connections kept per target. Default: null, as many as "
        "`max_connections`, so the pool holds what the last `keepalive` seconds needed "
        "(idle ones unused that long are closed).",
    )
    fail_timeout: Duration = Field(
        10.0, ge=0, description="A target that refused a connection is skipped this long."
    )
    pass_host: bool = Field(
        True, description="Send the client's Host upstream (else the target's host)."
    )
    tls: UpstreamTLS = Field(default_factory=UpstreamTLS, description="TLS to `https://` targets.")


def _method(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise PydanticCustomError("method", f"invalid method {value!r}")
    if value.upper() == "CONNECT":
        raise PydanticCustomError("method", "the gateway proxies no CONNECT tunnels")
    return value.upper()


def _path(value: str) -> str:
    if not value.startswith("/"):
        raise PydanticCustomError("path", f"a path must start with '/', got {value!r}")
    if value != "/" and value.endswith("/"):
        value = value.rstrip("/")
    return value


def _host(value: str) -> str:
    host = value.lower()
    if not re.fullmatch(r"(\*\.)?[a-z0-9.-]+(:\d+)?", host):
        raise PydanticCustomError("host", f"invalid host {value!r}")
    return host


class MatchConfig(Model):
    """Which requests a route takes."""

    path: Annotated[str, AfterValidator(_path)] = Field(
        "/", description="Segment-aware prefix: `/api` takes `/api` and `/api/x`, not `/apix`."
    )
    host: Annotated[str, AfterValidator(_host)] | None = Field(
        None, description="Exact host, or `*.example.com`; default any host."
    )
    methods: list[Annotated[str, AfterValidator(_method)]] | None = Field(
        None,
        min_length=1,
        description=(
            "Allowed methods; others get 405 with `Allow` and never fall through to a later "
            "route, unless a later route with the same `path` and `host` lists them. Default all."
        ),
    )


# Checked by the loader against the registry; `Any` here so each problem is reported once.
PolicyEntry = Any


class RouteConfig(Model):
    """Requests matching `match` go through `policies` to `upstream`."""

    name: Name = Field(description="Unique; used in metrics, logs and keys.")
    match: MatchConfig = Field(default_factory=MatchConfig, description="What the route takes.")
    upstream: str = Field(description="Name of an entry of `upstreams`.")
    strip_prefix: Annotated[str, AfterValidator(_path)] | None = Field(
        None, description="Removed from the start of the path before forwarding."
    )
    websocket: bool = Field(False, description="Proxy WebSocket upgrades on this route.")
    max_request_body: Size | None = Field(
        None, description="Overrides the global `max_request_body` for this route."
    )
    buffer_request_body: Size | None = Field(
        None, ge=0, description="Overrides the global `buffer_request_body` for this route."
    )
    policies: list[PolicyEntry] = Field(
        default_factory=list,
        description="The chain, outermost first: names of `policies` entries or `TYPE: {options}`.",
    )


class ClientLimits(Model):
    """What the public listener accepts from clients."""

    max_line_size: int = Field(8190, ge=256, description="Request line limit (longer: 414/400).")
    max_field_size: int = Field(8190, ge=256, description="One header line (longer: 431/400).")
    max_headers: int = Field(100, ge=1, description="Number of request headers.")
    keepalive_timeout: Duration = Field(75.0, ge=0, description="Idle client connections close.")
    header_timeout: Duration = Field(
        10.0, gt=0, description="Longest time from a request's first byte to its complete head."
    )
    body_timeout: Duration = Field(
        30.0, gt=0, description="Longest wait for the next chunk of a request body (slow clients)."
    )
    send_timeout: Duration = Field(
        30.0,
        gt=0,
        description=(
            "Longest time a response write may stay blocked on a client that does not read; "
            "past it the connection closes and the upstream is released. Default 30s."
        ),
    )
    request_timeout: Duration = Field(
        60.0,
        gt=0,
        description=(
            "Longest time from a request's first byte to the last byte of its body; past it "
            "the client gets 408, any upstream request is aborted, and the access line says "
            "`aborted: request_timeout`. Default 60s."
        ),
    )


class GatewayConfig(Model):
    """The whole config file."""

    listen: Listen = Field("0.0.0.0:8080", description="The public listener.")
    tls: TLSConfig | None = Field(None, description="HTTPS on the public listener.")
    redirect_http: Listen | None = Field(
        None,
        description="A plain-HTTP listener that answers every request with a 308 to its "
        "`https://` address (needs `tls`).",
    )
    workers: Workers = Field(
        1, description="Processes sharing the public port; `auto` = CPU count."
    )
    admin: AdminConfig = Field(default_factory=AdminConfig, description="The admin listener.")
    redis: RedisConfig = Field(default_factory=RedisConfig, description="The shared store.")
    trusted_proxies: list[Network] = Field(
        default_factory=list,
        description="Peers whose `X-Forwarded-For` is believed; default none.",
    )
    max_request_body: Size = Field(10 * 1024 * 1024, description="Larger request bodies get 413.")
    buffer_request_body: Size = Field(
        1024 * 1024,
        ge=0,
        description=(
            "A request body up to this size is read whole before the upstream is contacted "
            "(sent with Content-Length), so a slow client holds no upstream connection; a "
            "larger one streams. 0 turns buffering off. Default 1MiB."
        ),
    )
    shutdown_timeout: Duration = Field(
        30.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish."
    )
    access_log: bool = Field(True, description="One JSON line per request on stdout.")
    client: ClientLimits = Field(default_factory=ClientLimits, description="Client-side limits.")
    upstreams: dict[Name, UpstreamConfig] = Field(description="Named upstream pools.")
    policies: dict[Name, PolicyEntry] = Field(
        default_factory=dict, description="Named policy definitions: `name: {TYPE: {options}}`."
    )
    routes: list[RouteConfig] = Field(
        min_length=1,
        description=("The first route in file order whose host and path match owns the request."),
    )


class EmbeddedConfig(GatewayConfig):
    """The same file as `gateway.aiohttp.Policies` reads it: only `redis` and `policies` are
    used there, so `upstreams` and `routes` may be left out (they are checked when present)."""

    upstreams: dict[Name, UpstreamConfig] = Field(
        default_factory=dict, description="Named upstream pools; default none."
    )
    routes: list[RouteConfig] = Field(
        default_factory=list, description="The gateway's routes; default none."
    )
