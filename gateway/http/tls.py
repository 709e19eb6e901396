"""HTTPS on the public listener: the server's `ssl.SSLContext`, certificates per name (SNI),
mTLS, certificates swapped on reload, and the plain listener that redirects to HTTPS.

- `server_context()` builds one complete context from the `tls` section: the default chain,
  one context per SNI certificate (chosen in the handshake by `sni_callback`, exact names
  before `*.example.com`), `min_version`, `client_ca` (clients must present a certificate it
  signed, checked in the handshake) and ALPN `http/1.1`. Every file problem is a
  `CertProblem` naming the config key, so a bad certificate never gets as far as serving.
- `ServerTLS` is what the listener hands to `create_server`. asyncio and uvloop make each
  connection's TLS object with `context.wrap_bio()`; `ServerTLS` passes that call on to the
  context in use, so a reload (`use()`) gives new connections the new certificates while open
  connections keep the ones they were made with. Nothing of this runs per request.
- `peer_subject()` is the verified client certificate's subject (RFC 4514), read once per
  connection: the key source `tls.subject`. It never comes from a header.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from multidict import CIMultiDict

from gateway.config.certs import CertProblem, load_ca, load_chain, resolve
from gateway.config.models import TLSConfig
from gateway.http.incoming import Incoming
from gateway.http.messages import Response
from gateway.http.respond import complete

log = logging.getLogger("gateway.tls")

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
ALPN = ["http/1.1"]

__all__ = ["CertProblem", "ServerTLS", "peer_subject", "redirect_handler", "server_context"]


def _context(tls: TLSConfig, base: str) -> ssl.SSLContext:
    """A server context with everything but the certificate: versions, client CA, ALPN."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = VERSIONS[tls.min_version]
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(ALPN)
    if tls.client_ca is not None:
        load_ca(ctx, resolve(base, tls.client_ca), ("tls", "client_ca"))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def server_context(tls: TLSConfig, base: str) -> ssl.SSLContext:
    """The complete context of the `tls` section (paths relative to `base`); raises
    `CertProblem` for a file that is missing, unreadable, or a key that does not fit."""
    default = _context(tls, base)
    load_chain(default, resolve(base, tls.cert), resolve(base, tls.key), ("tls",))
    exact: dict[str, ssl.SSLContext] = {}
    wildcard: dict[str, ssl.SSLContext] = {}
    for index, entry in enumerate(tls.sni):
        ctx = _context(tls, base)
        load_chain(ctx, resolve(base, entry.cert), resolve(base, entry.key), ("tls", "sni", index))
        for host in entry.hosts:
            if host.startswith("*."):
                wildcard.setdefault(host[2:], ctx)
            else:
                exact.setdefault(host, ctx)
    if exact or wildcard:
        # Only the context the connection starts with has its callback called.
        default.sni_callback = _chooser(exact, wildcard)
    return default


def _chooser(
    exact: dict[str, ssl.SSLContext], wildcard: dict[str, ssl.SSLContext]
) -> Callable[[ssl.SSLObject, str | None, ssl.SSLContext], None]:
    def choose(conn: ssl.SSLObject, name: str | None, first: ssl.SSLContext) -> None:
        # An exception here would be printed as "unraisable" for any client: none may escape.
        try:
            if not name:
                return
            name = name.lower().rstrip(".")
            ctx = exact.get(name)
            if ctx is None:
                _label, dot, parent = name.partition(".")
                ctx = wildcard.get(parent) if dot else None
            if ctx is not None:
                conn.context = ctx
        except Exception:  # pragma: no cover - defensive
            log.exception("choosing a certificate failed")

    return choose


class ServerTLS(ssl.SSLContext):
    """The listener's context: each new connection gets the context in use (see `use`)."""

    current: ssl.SSLContext

    def __new__(cls, current: ssl.SSLContext) -> ServerTLS:
        self = super().__new__(cls, ssl.PROTOCOL_TLS_SERVER)
        self.current = current
        return self

    def __init__(self, current: ssl.SSLContext) -> None:
        pass

    def use(self, current: ssl.SSLContext) -> None:
        """New connections get `current`; open ones keep theirs."""
        self.current = current

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return self.current.wrap_bio(incoming, outgoing, server_side, server_hostname, session)


# RFC 4514 short names; others are written as OpenSSL names them.
_SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


def peer_subject(peercert: Any) -> str | None:
    """The verified client certificate's subject as RFC 4514 text (`CN=alice,O=Example`,
    most specific first), or None without one."""
    if not peercert or "subject" not in peercert:
        return None
    parts = []
    for rdn in reversed(peercert["subject"]):
        parts.append("+".join(f"{_SHORT.get(name, name)}={_escape(value)}" for name, value in rdn))
    return ",".join(parts)


def _escape(value: str) -> str:
    out = "".join("\\" + c if c in ',+"\\<>;=' else c for c in value)
    if out[:1] in ("#", " "):
        out = "\\" + out
    if out.endswith(" "):
        out = out[:-1] + "\\ "
    return out


def redirect_handler(https_port: int) -> Callable[[Incoming], Any]:
    """The `redirect_http` listener's handler: 308 to the same place over HTTPS."""
    port = "" if https_port == 443 else f":{https_port}"

    async def redirect(incoming: Incoming) -> None:
        target = incoming.target
        if not target.startswith("/"):  # absolute form: keep path and query only
            parts = urlsplit(target)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = _hostname(incoming.host)
        if host is None:
            response = Response.json(400, {"error": "bad_request", "reason": "no valid Host"})
        else:
            location = f"https://{host}{port}{target}"
            response = Response(308, CIMultiDict(Location=location))
        complete(incoming, response)  # closes after it when a request body is left unread

    return redirect


def _hostname(host: str) -> str | None:
    """The Host header without its port; None when it is not a plain host name or address."""
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else None
    name = host.rpartition(":")[0] if ":" in host else host
    if not name or not all(c.isalnum() or c in "-._" for c in name):
        return None
    return name


def problems(tls: TLSConfig, base: str) -> list[CertProblem]:
    """Every problem of the `tls` section's files (not only the first), for `gateway check`."""
    found: list[CertProblem] = []
    try:
        ctx = _context(tls, base)
    except CertProblem as exc:
        found.append(exc)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    chains: list[tuple[str, str, tuple[str | int, ...]]] = [(tls.cert, tls.key, ("tls",))]
    chains += [(e.cert, e.key, ("tls", "sni", i)) for i, e in enumerate(tls.sni)]
    for cert, key, loc in chains:
        try:
            load_chain(ctx, resolve(base, cert), resolve(base, key), loc)
        except CertProblem as exc:
            found.append(exc)
    return found
