"""Response framing helpers of the upstream reader: llhttp set up for responses, and the
transfer codings other than chunked that it undoes (RFC 9112 6.3, 7)."""

from __future__ import annotations

import zlib

import httptools

_WBITS = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}
"""Transfer codings besides chunked that the reader undoes (RFC 9112 7.2), zlib's framing."""


def response_parser(protocol: object) -> httptools.HttpResponseParser:
    parser = httptools.HttpResponseParser(protocol)
    # RFC 9112 6.3: in a response, Transfer-Encoding overrides Content-Length (llhttp refuses
    # both by default); the connection is not reused after such a message.
    parser.set_dangerous_leniencies(lenient_chunked_length=True)
    return parser


class Decoder:
    """Transfer codings other than chunked, undone in reverse order of application."""

    __slots__ = ("_steps",)

    def __init__(self, codings: list[bytes]) -> None:
        self._steps = [zlib.decompressobj(_WBITS[coding]) for coding in reversed(codings)]

    def feed(self, data: bytes) -> bytes:
        for step in self._steps:
            data = step.decompress(data)
        return data

    def flush(self) -> bytes:
        """The rest; raises `zlib.error` when a coding was cut short."""
        data = b""
        for step in self._steps:
            data = step.decompress(data) + step.flush()
            if not step.eof:
                raise zlib.error("transfer coding cut short")
        return data


def undoable(codings: list[bytes]) -> bool:
    """Whether `Decoder` can undo these codings (chunked excluded: llhttp undoes it)."""
    return all(coding in _WBITS for coding in codings)
