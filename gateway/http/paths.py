"""Request-target normalisation: one canonical path that routing matches and the upstream receives.

If the gateway matched one spelling of a path and the upstream resolved another, a client
could reach a protected route through an unprotected one (`/public/..%2fadmin`,
`//admin`). So the path is normalised once (RFC 3986 6.2.2: unreserved characters decoded,
dot segments removed, repeated slashes merged), and spellings that upstreams disagree on
(encoded NUL, encoded slashes or backslashes around dot segments) are refused with 400.
"""

from __future__ import annotations

import re

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_BAD_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_SLASHES = re.compile(r"/{2,}")
_SEPARATOR = re.compile(r"/|%2F|%5C|\\")


class BadPath(ValueError):
    """A request-target the gateway refuses to route."""


def split_target(target: str) -> tuple[str, str]:
    """Request-target -> (path, query); absolute-form targets lose their scheme and authority."""
    if not target.startswith("/"):
        scheme, sep, rest = target.partition("://")
        if not sep or not scheme.isalpha():
            raise BadPath("request-target must be a path")
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else "/"
    path, _, query = target.partition("?")
    path = path.partition("#")[0]
    return path, query


def _decode_unreserved(match: re.Match[str]) -> str:
    code = int(match.group(1), 16)
    if code in _UNRESERVED:
        return chr(code)
    if code == 0:
        raise BadPath("encoded NUL in path")
    return "%" + match.group(1).upper()


def normalise(path: str) -> str:
    """The canonical form of `path`, or `BadPath`."""
    if "%" in path:
        if _BAD_PCT.search(path):
            raise BadPath("malformed percent-encoding")
        path = _PCT.sub(_decode_unreserved, path)
    # Some upstreams decode these into separators before resolving dot segments.
    if ("%2F" in path or "%5C" in path or "\\" in path) and any(
        part in (".", "..") for part in _SEPARATOR.split(path)
    ):
        raise BadPath("encoded slash or backslash around a dot segment")
    if _CONTROL.search(path):
        raise BadPath("control character in path")
    if "//" in path:
        path = _SLASHES.sub("/", path)
    if "/." in path:
        path = _remove_dot_segments(path)
    return path


def _remove_dot_segments(path: str) -> str:
    out: list[str] = []
    segments = path.split("/")[1:]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif segment == ".":
            if last:
                out.append("")
        else:
            out.append(segment)
    return "/" + "/".join(out)
