"""Proxy header hygiene: hop-by-hop removal, X-Forwarded-*, Via, request ids, the client's IP."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import TYPE_CHECKING

from multidict import CIMultiDict

if TYPE_CHECKING:
    from gateway.http.incoming import Incoming

# RFC 9110 7.6.1, plus the legacy Proxy-Connection; Proxy-* by prefix below.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
log = logging.getLogger("gateway.headers")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:+/=-]{1,128}$")
VIA = "1.1 gateway"


@lru_cache(maxsize=512)
def _is_hop_by_hop(name: str) -> bool:
    lower = name.lower()
    return lower in HOP_BY_HOP or lower.startswith("proxy-")


_NAMES: dict[bytes, tuple[str, bool]] = {}
"""Header names as received -> (decoded, hop-by-hop): names repeat on every response."""


def end_to_end(raw: list[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    """Headers as received from an upstream, decoded, without hop-by-hop ones (including
    those its Connection header names). Bytes that are not UTF-8 (obs-text) survive as sent."""
    pairs = []
    connection = None
    for name, value in raw:
        entry = _NAMES.get(name)
        if entry is None:
            text = name.decode("latin-1")
            entry = (text, _is_hop_by_hop(text))
            if len(_NAMES) < 2048:
                _NAMES[name] = entry
        if entry[1]:
            if entry[0].lower() == "connection":
                connection = value if connection is None else connection + b"," + value
            continue
        pairs.append((entry[0], value.decode("utf-8", "surrogateescape")))
    headers: CIMultiDict[str] = CIMultiDict(pairs)
    if connection is not None:
        for token in connection.decode("latin-1").split(","):
            headers.popall(token.strip(), None)
    return headers


class Forwarding:
    """Decides who the client is and what the upstream is told about it.

    Only peers inside `trusted` may supply an `X-Forwarded-For` (and `-Proto`, `-Host`);
    from anyone else those headers are replaced, so a client cannot choose its own IP.
    """

    def __init__(self, trusted: Iterable[IPv4Network | IPv6Network]) -> None:
        self._trusted = tuple(trusted)

    @lru_cache(maxsize=4096)  # noqa: B019 - bounded, and lives as long as the config
    def is_trusted(self, address: str) -> bool:
        if not self._trusted:
            return False
        try:
            ip = ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def client_ip(self, peer: str, forwarded_for: str | None) -> str:
        """The first untrusted address walking `X-Forwarded-For` from the right."""
        if forwarded_for is None or not self.is_trusted(peer):
            return peer
        for hop in reversed(forwarded_for.split(",")):
            address = hop.strip()
            if not address:
                continue
            if not self.is_trusted(address):
                return address if _valid_ip(address) else peer
        return peer

    def apply(self, headers: CIMultiDict[str], incoming: Incoming, scheme: str, host: str) -> str:
        """Set X-Forwarded-* and Via on the upstream-bound `headers`; returns the client IP."""
        peer = incoming.peer
        forwarded_for = incoming.forwarded_for
        trusted = forwarded_for is not None and self.is_trusted(peer)
        if trusted:
            headers["X-Forwarded-For"] = f"{forwarded_for}, {peer}"
            client = self.client_ip(peer, forwarded_for)
            headers.setdefault("X-Forwarded-Proto", scheme)
            headers.setdefault("X-Forwarded-Host", host)
        else:
            headers["X-Forwarded-For"] = peer
            headers["X-Forwarded-Proto"] = scheme
            if host:
                headers["X-Forwarded-Host"] = host
            else:
                headers.popall("X-Forwarded-Host", None)
            client = peer
        via = incoming.via
        headers["Via"] = f"{via}, {VIA}" if via else VIA
        return client


def _valid_ip(value: str) -> bool:
    try:
        ip_address(value)
    except ValueError:
        return False
    return True


class RequestIds:
    """Makes request ids: a random per-process prefix and a counter (unique, no syscall)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        # From 2**60 on, hex() gives 16 digits without a format spec to parse per request.
        self._count = 1 << 60

    def __call__(self, incoming: str | None) -> str:
        """Keep a sane client-sent id (so traces join up), else make one."""
        if incoming is not None and _REQUEST_ID.fullmatch(incoming):
            return incoming
        self._count += 1
        return self._prefix + hex(self._count)[2:]


_CRLF = "\r\n"
_COLON = ": "


def message_head(start_line: str, headers: CIMultiDict[str]) -> bytes:
    """A message head: `start_line` (ending in CRLF), the headers, the blank line.

    A header whose name or value holds CR or LF (an upstream's, or a policy's data) would let
    whoever wrote it split the message: it is dropped, never sent. Bytes that are not UTF-8
    (surrogate-escaped on the way in) go out exactly as they came.
    """
    # Joined in C (no Python frame, no format parsing per header): the hot path.
    head = f"{start_line}{_CRLF.join(map(_COLON.join, headers.items()))}\r\n\r\n"
    lines = len(headers) + 2
    if head.count("\n") != lines or head.count("\r") != lines:
        log.warning("dropped a header containing a line break")
        kept = [
            f"{name}: {value}\r\n"
            for name, value in headers.items()
            if not any(c in name or c in value for c in "\r\n")
        ]
        head = start_line + "".join(kept) + "\r\n"
    return head.encode("utf-8", "surrogateescape")
