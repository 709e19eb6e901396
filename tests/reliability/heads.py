"""Raw HTTP for the fuzz tests: request strategies, one exchange on a socket, answer checks."""

from __future__ import annotations

import contextlib
import json
import socket
from dataclasses import dataclass, field

import httptools
from hypothesis import strategies as st

from tests.reliability.upstream_thread import UPSTREAM_MARK

MARKER = "SECRETMARKER"
"""Put into header values: a gateway error must never echo it."""


@dataclass
class Message:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False


class _Parser:
    """httptools callbacks collecting every response on the connection (1xx included)."""

    def __init__(self, head_only: bool) -> None:
        self.messages: list[Message] = []
        self.head_only = head_only
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.messages.append(Message())

    def on_header(self, name: bytes, value: bytes) -> None:
        self.messages[-1].headers.append((name, value))

    def on_headers_complete(self) -> None:
        message = self.messages[-1]
        message.status = self.parser.get_status_code()
        if self.head_only and message.status >= 200:
            message.complete = True  # a HEAD answer has no body, whatever its length says

    def on_body(self, body: bytes) -> None:
        self.messages[-1].body += body

    def on_message_complete(self) -> None:
        self.messages[-1].complete = True

    def final(self) -> Message | None:
        for message in self.messages:
            if message.complete and not 100 <= message.status < 200:
                return message
        return None


def exchange(port: int, raw: bytes, head_only: bool, timeout: float = 5.0) -> Message | None:
    """Send `raw`, read until the first final response is complete (or the peer closes)."""
    parser = _Parser(head_only)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # Refused mid-send: what it answered before closing is still read below.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        while parser.final() is None:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            parser.parser.feed_data(data)  # raises HttpParserError on a malformed answer
    return parser.final()


def exchange_all(port: int, raw: bytes, timeout: float = 5.0) -> list[Message]:
    """Send `raw`, read every response until the peer closes."""
    parser = _Parser(head_only=False)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        while data := sock.recv(65536):
            parser.parser.feed_data(data)
    return parser.messages


# -- strategies: mostly plausible requests with one or two odd parts, so that most get past
# the parser into routing, the policies and the upstream.
def mostly(usual: st.SearchStrategy[str], odd: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """`usual` four times in five, else `odd`."""
    return st.integers(0, 4).flatmap(lambda n: odd if n == 0 else usual)


METHODS = mostly(
    st.sampled_from(["GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
    st.one_of(
        st.sampled_from(
            ["TRACE", "CONNECT", "get", "PURGE", "PROPFIND", "M-SEARCH", "G@T", "", "GET GET"]
        ),
        st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ!#$%&'*+.^_`|~-", min_size=1, max_size=12),
    ),
)
SEGMENTS = mostly(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-._~", min_size=1, max_size=8),
    st.one_of(
        st.sampled_from(
            [
                "%00", "%2f..", "..%2f", "%2e%2e", "%2F", "%5c", "\\", "..", ".", "", "%", "%zz",
                "%4", "%41", "%C3%A9", "é", "%ff", ";x=1", "*", "~user", "a b", "\x01", "\x7f",
                "%0d%0aX-Injected:%201", "%u002e", "x" * 300, "\t",
            ]
        ),
        st.text(min_size=0, max_size=8),
    ),
)  # fmt: skip
PREFIXES = mostly(
    st.sampled_from(["/limited/", "/cached/", "/account/", "/x/"]),
    st.sampled_from(["/", "//", "/./", "/limited/../cached/", "/LIMITED/"]),
)
QUERIES = mostly(
    st.sampled_from(["", "", "?a=1", "?b=2&a=1"]),
    st.sampled_from(["?a=1&a=2", "?%00=%zz", "?x=" + "y" * 200, "?", "#frag", "?a=é"]),
)


@st.composite
def targets(draw: st.DrawFn) -> str:
    path = draw(PREFIXES) + "/".join(draw(st.lists(SEGMENTS, max_size=3))) + draw(QUERIES)
    form = draw(st.sampled_from(["origin"] * 12 + ["absolute", "asterisk", "authority", "bare"]))
    if form == "absolute":
        return "http://example.com" + path
    if form == "asterisk":
        return "*"
    if form == "authority":
        return "example.com:443"
    if form == "bare":
        return path.lstrip("/")
    return path


VERSIONS = mostly(
    st.just("HTTP/1.1"),
    st.sampled_from(["HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.10", "HTTP/1"]),
)
NAMES = mostly(
    st.sampled_from(
        [
            "Content-Length", "Transfer-Encoding", "Cookie", "Authorization", "X-Key",
            "Cache-Control", "If-None-Match", "If-Modified-Since", "Range", "Expect",
            "Connection", "Upgrade", "X-Forwarded-For", "X-Request-ID", "X-User-Id", "Vary",
            "Accept-Encoding", "Pragma", "TE", "Trailer", "Proxy-Authorization", "Keep-Alive",
            "Host", "Accept", "Origin", "X-Forwarded-Host", "Via",
        ]
    ),
    st.one_of(
        st.sampled_from(
            ["content-length", "transfer-encoding", "Content-Length ", "X Y", "X:Y", "é", ""]
        ),
        st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", max_size=12),
    ),
)  # fmt: skip
VALUES = mostly(
    st.sampled_from(
        [
            "chunked", "gzip, chunked", "identity", "5", "0", "sid=" + "a" * 20,
            "sid=" + "a" * 20 + "; sid=" + "b" * 20, 'sid="' + "c" * 20 + '"', "sid=", "sid",
            "theme=dark; sid=" + "d" * 30, "Bearer " + "t" * 20, "Bearer", "Basic dXNlcjpwYXNz",
            "100-continue", "close", "keep-alive", "Upgrade", "websocket", "no-store",
            "no-cache", "only-if-cached", "max-age=0", "max-stale", "bytes=0-1", "bytes=5-1",
            "*", '"v1"', 'W/"x"', "1.2.3.4", "1.2.3.4, 5.6.7.8", "unknown", "::1", "42",
            "text/html", "gzip", "x",
        ]
    ),
    st.one_of(
        st.sampled_from(
            [
                "", " ", "Chunked", "chunked, identity", "chunked\x00", "-1", "+5", "0x10",
                "1e3", " 5", "5, 5", "99999999999999999999", ";;;", "sid=\x00" + "a" * 20,
                "sid=é" + "a" * 20, "Bearer  ", "h2c", MARKER + "a" * 8000, MARKER,
                "\x00" + MARKER, "\x7f", "\tx", "x\t", "é" + MARKER, "\x80\xff",
            ]
        ),
        st.text(max_size=40).map(lambda text: text.replace("\r", "").replace("\n", "")),
    ),
)  # fmt: skip
BODIES = st.one_of(
    st.just(b""),
    st.just(b""),
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n",
            b"zz\r\nhello\r\n0\r\n\r\n",
            b"0\r\n\r\n",
            b"0\r\nX-Trailer: 1\r\n\r\n",
            b"5;ext=1\r\nhello\r\n0\r\n\r\n",
            b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ]
    ),
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(raw request bytes, whether it is a HEAD request)."""
    method = draw(METHODS)
    target = draw(targets())
    version = draw(VERSIONS)
    headers = draw(st.lists(st.tuples(NAMES, VALUES), max_size=5))
    body = draw(BODIES)
    if draw(st.integers(0, 9)) > 0:
        headers.insert(0, ("Host", "x"))
    framed = any(n.lower() in ("content-length", "transfer-encoding") for n, _ in headers)
    if body and not framed and draw(st.integers(0, 3)) > 0:
        headers.append(("Content-Length", str(len(body))))  # mostly a body that fits its length
    lines = [f"{method} {target} {version}"] + [f"{name}: {value}" for name, value in headers]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body
    return raw, method == "HEAD"


def check_answer(message: Message | None, raw: bytes, head_only: bool) -> None:
    assert message is not None, f"no answer to {raw[:300]!r}"
    status = message.status
    assert 100 <= status < 600
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in message.headers
    }
    # 501: a transfer coding other than chunked alone (docs/security.md).
    assert status < 500 or status in (501, 502, 504), (status, bytes(message.body), raw[:300])
    assert b"Traceback" not in message.body
    if status >= 400 and not head_only and UPSTREAM_MARK.lower() not in headers:
        # The gateway's own answers (the upstream's pass through as they are): its shape.
        assert headers.get("content-type", "").startswith("application/json"), (
            status,
            headers,
            raw[:300],
        )
        payload = json.loads(bytes(message.body))
        assert isinstance(payload.get("error"), str), payload
        assert isinstance(payload.get("request_id"), str), payload
        # Nothing the client sent comes back, but the X-Request-ID it chose (kept on purpose).
        echoed = {key: value for key, value in payload.items() if key != "request_id"}
        assert MARKER not in json.dumps(echoed), payload


def normal_request_works(port: int) -> None:
    answer = exchange(port, b"GET /x/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False)
    assert answer is not None
    assert answer.status == 200, answer
