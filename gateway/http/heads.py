"""Reading request heads off a client connection: httptools callbacks into `Incoming`s.

A head is digested while it is parsed: hop-by-hop headers never reach the end-to-end ones,
the few the gateway reads itself are kept aside, and the limits of `client` (line, field and
header count) are enforced as the pieces arrive. What llhttp refuses on its own: ambiguous
framing (Content-Length with Transfer-Encoding, two lengths, a Transfer-Encoding that does
not end in chunked), obs-fold, NUL and other bytes a header may not hold. Refused here: a
Transfer-Encoding not ending in chunked (400, RFC 9112 6.3), and a transfer coding besides
chunked (501: the body is re-chunked for the upstream, and a coding left out would change what
its bytes mean). The upstream always gets the gateway's own spelling of Content-Length, and an
HTTP/1.0 chunked request closes the connection after its answer (RFC 9112 6.1).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import httptools
from multidict import CIMultiDict

from gateway.config.models import ClientLimits
from gateway.http.incoming import ClientSide, Incoming, RequestBody

# RFC 9110 7.2: uri-host [":" port], a reg-name or an IP literal; nothing a router or an
# upstream could read as a path, a user or a second host.
_VALID_HOST = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)(?::[0-9]*)?"
).fullmatch

# What each request header means to the listener, by lower-cased name.
# Kinds from _HOST on are forwarded; those before it are hop-by-hop, read or not.
_KEPT, _SINGLE, _DROPPED, _CONNECTION, _TE, _UPGRADE, _EXPECT = range(7)
_HOST, _LENGTH, _RID, _XFF, _VIA = range(7, 12)
_KINDS = {
    # Fields a request may carry once (as aiohttp's parser has it): two values would leave the
    # gateway and the upstream free to pick different ones. Host is refused twice below too.
    b"content-type": _SINGLE,
    b"content-location": _SINGLE,
    b"content-range": _SINGLE,
    b"etag": _SINGLE,
    b"max-forwards": _SINGLE,
    b"server": _SINGLE,
    b"user-agent": _SINGLE,
    b"keep-alive": _DROPPED,
    b"te": _DROPPED,
    b"trailer": _DROPPED,
    b"connection": _CONNECTION,
    b"transfer-encoding": _TE,
    b"upgrade": _UPGRADE,
    b"host": _HOST,
    b"content-length": _LENGTH,
    b"expect": _EXPECT,
    b"x-request-id": _RID,
    b"x-forwarded-for": _XFF,
    b"via": _VIA,
}
_NAMES: dict[bytes, tuple[str, int]] = {}
"""Header names as sent -> (decoded, kind): names repeat on every request."""
_MAX_NAMES = 2048
_METHODS: dict[bytes, str] = {}
_CONNECTION_KEEPS = frozenset({"close", "keep-alive", "upgrade"})


def _name(raw: bytes) -> tuple[str, int]:
    entry = _NAMES.get(raw)
    if entry is None:
        lower = raw.lower()
        kind = _KINDS.get(lower, _DROPPED if lower.startswith(b"proxy-") else _KEPT)
        entry = (raw.decode("latin-1"), kind)
        if len(_NAMES) < _MAX_NAMES:
            _NAMES[raw] = entry
    return entry


def _only_chunked(codings: str) -> bool:
    """Whether a Transfer-Encoding list (all its lines, joined) is `chunked` alone."""
    if codings == "chunked":
        return True
    return [c for c in (t.strip().lower() for t in codings.split(",")) if c] == ["chunked"]


class Refused(Exception):
    """Raised from a parser callback: the head breaks a limit or a rule; answered with
    `status` and the error code `code`, and the connection closes."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code


class HeadReader:
    """The httptools callbacks of one connection: each complete head becomes an `Incoming`
    handed to `accept`; its body chunks follow into the `Incoming`'s `RequestBody`."""

    def __init__(
        self, conn: ClientSide, limits: ClientLimits, accept: Callable[[Incoming], None]
    ) -> None:
        self._conn = conn
        self._accept = accept
        self._max_line = limits.max_line_size
        self._max_field = limits.max_field_size
        self._max_headers = limits.max_headers
        self._loop = conn.loop
        self._parser = httptools.HttpRequestParser(self)
        self.feed = self._parser.feed_data
        """Parse bytes: `Refused` (inside `HttpParserCallbackError`), `HttpParserError`, or
        `HttpParserUpgrade` with the offset where the new protocol's bytes begin."""
        self.in_head = False
        """Between a head's first byte and its end (what the head timeout times)."""
        self.head_started = 0.0
        self.head_bytes = 0
        self.last: Incoming | None = None
        """The last head read (its body may still be arriving)."""
        self._url = b""
        self._pairs: list[tuple[str, str]] = []
        self._count = 0
        self._specials: dict[int, str] = {}
        self._framing = False
        self._once: set[bytes] | None = None

    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_started = self._loop.time()
        self.head_bytes = 0
        self._url = b""
        self._pairs = []
        self._count = 0
        self._specials = {}
        self._framing = False  # a header that shapes the message (length, upgrade, ...)
        self._once = None  # single-valued fields seen

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._max_line:
            raise Refused(414, "uri_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count += 1
        if self._count > self._max_headers or len(name) + len(value) > self._max_field:
            raise Refused(431, "request_header_fields_too_large")
        text, kind = _name(name)
        if kind == _KEPT:
            self._pairs.append((text, value.decode("utf-8", "surrogateescape")))
            return
        if kind == _SINGLE:
            once = self._once
            if once is None:
                once = self._once = set()
            elif name.lower() in once:
                raise Refused(400, "bad_request")
            once.add(name.lower())
            self._pairs.append((text, value.decode("utf-8", "surrogateescape")))
            return
        if kind == _DROPPED:
            return
        decoded = value.decode("utf-8", "surrogateescape")
        if kind < _HOST or kind == _LENGTH:
            self._framing = True
        if kind >= _HOST:  # end-to-end headers the gateway also reads
            self._pairs.append((text, decoded))
            if kind in self._specials:
                if kind in (_XFF, _VIA):  # several lines are one list
                    self._specials[kind] += ", " + decoded
                elif kind == _HOST:  # RFC 9112 3.2: two Host lines are a 400
                    raise Refused(400, "bad_request")
                return  # X-Request-ID: the first one counts
        elif kind in self._specials:  # Connection, Upgrade, Transfer-Encoding: all of them
            decoded = self._specials[kind] + ", " + decoded
        self._specials[kind] = decoded

    def on_headers_complete(self) -> None:
        self.in_head = False
        parser = self._parser
        method_bytes = parser.get_method()
        method = _METHODS.get(method_bytes)
        if method is None:
            method = _METHODS.setdefault(method_bytes, method_bytes.decode("ascii"))
        headers: CIMultiDict[str] = CIMultiDict(self._pairs)
        specials = self._specials
        version = parser.get_http_version()
        host = specials.get(_HOST)
        if host is None:
            if version != "1.0":  # RFC 9112 3.2: an HTTP/1.1 request must name its host
                raise Refused(400, "bad_request")
        elif not _VALID_HOST(host):
            raise Refused(400, "bad_request")
        keep_alive = parser.should_keep_alive()
        expect, upgrade, body = False, None, None
        if self._framing or method == "CONNECT":
            # Rare: a body, Expect, Connection tokens or an upgrade.
            expect, upgrade, body = self._framing_of(method, headers, specials)
            if version == "1.0" and _TE in specials:
                # RFC 9112 6.1: framing an HTTP/1.0 peer may not understand is faulty;
                # the connection closes after the answer, whatever Connection says.
                keep_alive = False
        incoming = Incoming(
            self._conn,
            method,
            self._url.decode("utf-8", "surrogateescape"),
            version,
            headers,
            keep_alive,
            host.lower() if host is not None else "",
            specials.get(_RID),
            specials.get(_XFF),
            specials.get(_VIA),
            expect,
            upgrade,
            body,
            self.head_started,
        )
        self.last = incoming
        self._accept(incoming)

    def _framing_of(
        self, method: str, headers: CIMultiDict[str], specials: dict[int, str]
    ) -> tuple[bool, str | None, RequestBody | None]:
        """(expect 100-continue, upgrade, body) of a head, and the headers `Connection` names
        removed."""
        connection = specials.get(_CONNECTION)
        if connection is not None:
            for token in connection.split(","):
                token = token.strip().lower()
                if token and token not in _CONNECTION_KEEPS:
                    headers.popall(token, None)
        expect = specials.get(_EXPECT, "").lower() == "100-continue"
        body = None
        if _TE in specials:
            if not _only_chunked(specials[_TE]):
                # RFC 9112 6.3: without chunked last the body's end is unknowable, a 400;
                # chunked last over another coding is a coding not implemented (6.1).
                last = specials[_TE].rpartition(",")[2].strip().lower()
                if last != "chunked":
                    raise Refused(400, "bad_request")
                raise Refused(501, "not_implemented")
            body = RequestBody(self._conn, None, expect)
        elif _LENGTH in specials:
            spelled = specials[_LENGTH]
            length = int(spelled)
            canonical = str(length)
            if canonical != spelled:
                # Sent on as spelled (`010`), an upstream that reads a leading zero as octal
                # would frame the body differently from the gateway.
                headers["Content-Length"] = canonical
            if length:
                body = RequestBody(self._conn, length, expect)
        upgrade = None
        if self._parser.should_upgrade():
            upgrade = "connect" if method == "CONNECT" else specials.get(_UPGRADE, "").lower()
            if body is not None:
                # Its body would be tunnel bytes to llhttp: never guess which it is.
                raise Refused(400, "bad_request")
        return expect, upgrade, body

    def on_body(self, chunk: bytes) -> None:
        incoming = self.last
        if incoming is not None and incoming.body is not None:
            incoming.body.feed(chunk)

    def on_message_complete(self) -> None:
        incoming = self.last
        if incoming is not None and incoming.body is not None:
            incoming.body.finish()
