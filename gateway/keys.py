"""Request keys for policies (`client_ip`, `header.X-Api-Key`, `session.user_id`, ...) and the
hashing that turns client input into fixed-size, safe store-key material.

Client input never goes into a store key as it is: it is hashed (bounded length, no key
injection, no hot spots chosen by the client), and the policy adds its own prefix and
`{hash tag}` (see each policy's key function).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from gateway.http.messages import Request

ANONYMOUS = "\x00anonymous"
"""Stands for a key part the request lacks: all such requests share one explicit bucket."""

_MAX_PART = 4096  # longer client values are cut before hashing, bounding the work per request


def digest(*parts: str) -> str:
    """A 32-hex-digit BLAKE2b digest of `parts` (unambiguous: parts are length-prefixed)."""
    hasher = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part.encode("utf-8", "surrogateescape")[:_MAX_PART]
        hasher.update(len(data).to_bytes(4, "big"))
        hasher.update(data)
    return hasher.hexdigest()


Part = Callable[[Request], str | None]


def _header(name: str) -> Part:
    return lambda request: request.headers.get(name)


def _query(name: str) -> Part:
    return lambda request: request.query.get(name)


def _context(namespace: str, field: str) -> Part:
    def read(request: Request) -> str | None:
        values = request.context.get(namespace)
        if not isinstance(values, dict):
            return None
        value = values.get(field)
        return None if value is None else str(value)

    return read


def _tls_subject(request: Request) -> str | None:
    incoming = request.incoming
    return None if incoming is None else incoming.conn.tls_subject


def _part(spec: str) -> Part:
    if spec == "client_ip":
        return lambda request: request.client_ip
    if spec == "route":
        return lambda request: ""
    if spec == "tls.subject":
        # From the TLS handshake only (mTLS): never from a header or an earlier policy.
        return _tls_subject
    kind, sep, name = spec.partition(".")
    if not sep or not name:
        raise PydanticCustomError(
            "key",
            f"invalid key {spec!r} (use client_ip, route, header.NAME, query.NAME, "
            "session.FIELD or tls.subject)",
        )
    if kind == "header":
        return _header(name)
    if kind == "query":
        return _query(name)
    # Any other namespace reads what an earlier policy put into the request context,
    # e.g. `session.user_id` after the session policy.
    return _context(kind, name)


class RequestKey:
    """A compiled key spec: `key(request)` gives the identity a policy counts or caches by."""

    def __init__(self, specs: Sequence[str]) -> None:
        self.specs = tuple(specs)
        self._parts = [_part(spec) for spec in self.specs]

    def __call__(self, request: Request) -> str:
        """The parts joined (missing ones as `ANONYMOUS`); hash it before use in a store key."""
        if len(self._parts) == 1:
            value = self._parts[0](request)
            return ANONYMOUS if value is None else value
        values = []
        for part in self._parts:
            value = part(request)
            values.append(ANONYMOUS if value is None else value)
        return "\x1f".join(values)

    def __repr__(self) -> str:
        return f"RequestKey({list(self.specs)!r})"

    def __str__(self) -> str:
        return self.specs[0] if len(self.specs) == 1 else "[" + ", ".join(self.specs) + "]"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RequestKey) and other.specs == self.specs

    def __hash__(self) -> int:
        return hash(self.specs)


def _request_key(value: Any) -> RequestKey:
    if isinstance(value, RequestKey):
        return value
    if isinstance(value, str):
        return RequestKey([value])
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return RequestKey(value)
    raise PydanticCustomError("key", f"invalid key {value!r} (a key spec or a list of them)")


Key = Annotated[
    RequestKey,
    PlainValidator(_request_key),
    PlainSerializer(lambda key: list(key.specs)),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
            ],
            "description": "client_ip, route, header.NAME, query.NAME, session.FIELD, "
            "tls.subject, or a list",
        }
    ),
]
"""A pydantic field type for policies' `key` options."""
