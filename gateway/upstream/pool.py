"""Upstream targets: a keep-alive pool per target, round robin, refusing targets skipped a while."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Sequence
from urllib.parse import urlsplit

from gateway.config.models import UpstreamConfig
from gateway.errors import UpstreamTLSError
from gateway.upstream.connection import UpstreamConnection
from gateway.upstream.tls import Sessions, client_context

log = logging.getLogger("gateway.upstream")


class Target:
    """One upstream server and its idle connections (most recently used first out)."""

    def __init__(self, url: str, config: UpstreamConfig, tls: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        self.url = url
        self.host = parts.hostname or "127.0.0.1"
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.host_header = parts.netloc.rsplit("@", 1)[-1]
        self.base_path = parts.path.rstrip("/")
        self.keepalive = config.keepalive
        self.max_idle = config.max_idle if config.keepalive > 0 else 0
        self.fail_timeout = config.fail_timeout
        self.down_until = 0.0
        self._closed = False
        self._idle: deque[UpstreamConnection] = deque()
        if self.tls and tls is None:
            tls = client_context(config.tls, "", ())
        self._ssl = Sessions(tls) if self.tls and tls is not None else None
        self.server_name = config.tls.server_name or self.host

    def pooled(self) -> UpstreamConnection | None:
        """An idle connection that is still fresh enough to trust, if any."""
        idle = self._idle
        cutoff = time.monotonic() - self.keepalive
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.idle_since > cutoff:
                return conn
            conn.close()
        return None

    async def connect(self, timeout: float) -> UpstreamConnection:
        """A new connection; raises TimeoutError or OSError (and marks the target down)."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self._release),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.server_name if self._ssl else None,
                )
        except ssl.SSLError as exc:
            # Before OSError (its base): a certificate that does not verify, or a handshake
            # the target refused. Nothing was sent.
            if self.down_until <= time.monotonic():  # once per fail_timeout, not per request
                log.warning("TLS to %s failed: %s", self.url, _reason(exc))
            self.down_until = time.monotonic() + self.fail_timeout
            if self._ssl is not None:
                self._ssl.forget()
            raise UpstreamTLSError() from exc
        except (OSError, TimeoutError):
            self.down_until = time.monotonic() + self.fail_timeout
            raise
        self.down_until = 0.0
        return conn

    def _release(self, conn: UpstreamConnection) -> None:
        if self._ssl is not None and conn.used == 1 and conn.transport is not None:
            # Once per connection: its session is offered to the next new connection.
            self._ssl.keep(conn.transport.get_extra_info("ssl_object"))
        if conn.closed or self._closed or len(self._idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    @property
    def idle(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        """Close idle connections; busy ones close when their exchange ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()


class Upstream:
    """A named pool of equivalent targets, taken in turn."""

    def __init__(self, name: str, config: UpstreamConfig, base: str = "") -> None:
        """`base`: the folder that relative TLS paths are relative to (the config file's).
        Raises `CertProblem` for a TLS file that cannot be used."""
        self.name = name
        self.config = config
        tls = None
        if any(url.startswith("https:") for url in config.targets):
            tls = client_context(config.tls, base, ("upstreams", name, "tls"))
        self.targets = [Target(url, config, tls) for url in config.targets]
        self._next = 0

    def candidates(self) -> Sequence[Target]:
        """Targets to try for the next request: round robin over the healthy ones, then the
        ones marked down (soonest to recover first), so a request is only refused when all are."""
        targets = self.targets
        if len(targets) == 1:
            return targets
        now = time.monotonic()
        up = [t for t in targets if t.down_until <= now]
        down = sorted((t for t in targets if t.down_until > now), key=lambda t: t.down_until)
        if up:
            start = self._next % len(up)
            up = up[start:] + up[:start]
        self._next += 1
        return up + down

    def close(self) -> None:
        for target in self.targets:
            target.close()


def _reason(exc: ssl.SSLError) -> str:
    verify = getattr(exc, "verify_message", None)
    return str(verify or exc.reason or exc)
