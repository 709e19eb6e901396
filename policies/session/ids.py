"""Finding the session id in a request, taking it out, and checking its format.

Pure functions over headers (no I/O), so every rule here is tested without a store.
"""

from __future__ import annotations

import re
import secrets

from multidict import CIMultiDict

_ID = re.compile(r"[A-Za-z0-9_-]{16,256}")
_BEARER = "bearer "


def valid_id(session_id: str) -> bool:
    """Whether `session_id` is 16-256 URL-safe characters (`[A-Za-z0-9_-]`).

    Anything else is refused before the store is asked: the id goes into the store key as it
    is (it must match what the app wrote), so this check is what keeps it a plain key suffix.
    """
    return _ID.fullmatch(session_id) is not None


def new_id() -> str:
    """A fresh session id: 256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def take_bearer(headers: CIMultiDict[str], keep: bool) -> str | None:
    """The token of `Authorization: Bearer <token>`, or None when there is no bearer credential.

    The header is removed unless `keep`; another scheme (Basic, ...) is not ours and stays.
    An empty token counts as no credential.
    """
    value = headers.get("Authorization")
    if value is None or value[:7].lower() != _BEARER:
        return None
    if not keep:
        headers.popall("Authorization", None)
    token = value[7:].strip(" ")
    return token or None


def take_cookie(headers: CIMultiDict[str], name: str, keep: bool) -> str | None:
    """The value of cookie `name` (the first one when sent twice), or None.

    Unless `keep`, every `name` cookie is removed and the Cookie header rebuilt with the
    others, byte for byte; several Cookie headers are joined into one (RFC 9113 8.2.3).
    An empty value (a cookie cleared at logout) counts as no credential.
    """
    values = headers.getall("Cookie", None)
    if values is None:
        return None
    # Fast path: most requests on a route either carry no such cookie or just one header.
    if not any(name in value for value in values):
        return None
    found: str | None = None
    seen = False
    kept: list[str] = []
    for value in values:
        for piece in value.split(";"):
            pair = piece.strip()
            key, sep, cookie = pair.partition("=")
            if sep and key.rstrip() == name:
                if not seen:
                    seen = True
                    cookie = cookie.strip()
                    if len(cookie) >= 2 and cookie[0] == cookie[-1] == '"':
                        cookie = cookie[1:-1]  # RFC 6265 allows a quoted cookie-value
                    found = cookie or None
            elif pair:
                kept.append(pair)
    if seen and not keep:
        headers.popall("Cookie", None)
        if kept:
            headers["Cookie"] = "; ".join(kept)
    return found


def challenge(realm: str, cookie: str | None, bearer: bool, invalid_token: bool) -> str:
    """The `WWW-Authenticate` value of a 401: one challenge per configured credential.

    Bearer follows RFC 6750 (`error="invalid_token"` when a token was sent but refused);
    the cookie challenge follows the `Cookie` scheme of draft-broyer-http-cookie-auth,
    naming the cookie to send.
    """
    parts = []
    if bearer:
        error = ', error="invalid_token"' if invalid_token else ""
        parts.append(f'Bearer realm="{realm}"{error}')
    if cookie is not None:
        parts.append(f'Cookie realm="{realm}", cookie-name="{cookie}"')
    return ", ".join(parts)
