"""TLS to `https://` targets: the client context of an upstream, and TLS session reuse.

Verification is on by default (the system's CAs, or `tls.ca`), against `tls.server_name` or
the target's host. A new connection to a target offers the session of an earlier one
(resumption: one round trip and no certificate exchange), so the keep-alive pool's
connections after the first cost little more than plain ones.
"""

from __future__ import annotations

import ssl

from gateway.config.certs import CertProblem, load_ca, load_chain, resolve
from gateway.config.models import UpstreamTLS
from gateway.config.source import Loc


def client_context(tls: UpstreamTLS, base: str, loc: Loc) -> ssl.SSLContext:
    """The context for one upstream's targets; raises `CertProblem` naming `loc`'s keys."""
    ctx = ssl.create_default_context()
    if tls.ca is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        load_ca(ctx, resolve(base, tls.ca), (*loc, "ca"))
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert is not None:
        key = resolve(base, tls.key) if tls.key is not None else None
        load_chain(ctx, resolve(base, tls.cert), key, loc)
    elif tls.key is not None:
        raise CertProblem((*loc, "key"), "a key needs its certificate: set cert too")
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class Sessions(ssl.SSLContext):
    """A target's client context that offers the last session it kept to each new connection.

    asyncio and uvloop open TLS with `wrap_bio()` and have no way to pass a session: this
    context passes it on to `base`, which holds every setting.
    """

    session: ssl.SSLSession | None
    base: ssl.SSLContext

    def __new__(cls, base: ssl.SSLContext) -> Sessions:
        self = super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)
        self.base = base
        self.session = None
        return self

    def __init__(self, base: ssl.SSLContext) -> None:
        pass

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return self.base.wrap_bio(
            incoming, outgoing, server_side, server_hostname, session or self.session
        )

    def keep(self, sslobj: ssl.SSLObject | None) -> None:
        """Remember the session of a connection that has answered (with TLS 1.3 the ticket
        comes after the handshake, so a connection's first answer is the time to look)."""
        if sslobj is None:
            return
        session = sslobj.session
        if session is not None and (session.has_ticket or sslobj.version() != "TLSv1.3"):
            self.session = session

    def forget(self) -> None:
        self.session = None
