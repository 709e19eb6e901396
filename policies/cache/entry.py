"""The stored entry: one response's metadata and body in one value, fetched in one call.

Layout (version 1): `b"GWC1"`, a 4-byte big-endian length, that many bytes of JSON metadata,
then the body. The store keeps, beside it, the store-clock time it was stored at (`stored_at`),
so every gateway computes the same age whatever its own clock says.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

from multidict import CIMultiDict

from gateway.api import Response
from policies.cache.freshness import Freshness, age_header
from policies.cache.syntax import parse_http_date

MAGIC = b"GWC1"
_LENGTH = struct.Struct(">I")
_HEAD = len(MAGIC) + _LENGTH.size

# RFC 9110 15.4.5: what a 304 carries (plus Last-Modified, useful to caches downstream).
_NOT_MODIFIED_FIELDS = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified"}
)
# Never taken from a 304 into the stored response (RFC 9111 3.2): the stored body's length
# stands, and Age describes one message, not the resource.
_NOT_UPDATED = frozenset({"content-length", "age", "x-cache"})


class CorruptEntry(ValueError):
    """A stored value this version cannot read (another format, or damaged)."""


@dataclass(slots=True)
class Entry:
    """A stored response, as the policy serves it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    initial_age: float
    """RFC 9111 corrected_initial_age, computed when it was stored."""
    freshness: Freshness
    vary: str
    """The Vary field names it was stored under, sorted, lower case, comma-joined."""
    stored_at: float = 0.0
    """Store clock (seconds) at the time it was stored; not part of the encoded value."""
    # Derived from the headers (never passed in, so a copy cannot carry stale ones).
    _etag: str | None = field(default=None, init=False, repr=False)
    _validator_time: float | None = field(default=None, init=False, repr=False)
    _template: CIMultiDict[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._etag = self.header("ETag")
        lm = parse_http_date(self.header("Last-Modified"))
        self._validator_time = lm if lm is not None else parse_http_date(self.header("Date"))

    def header(self, name: str) -> str | None:
        """The first value of a stored header."""
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None

    @property
    def etag(self) -> str | None:
        return self._etag

    def modified_at(self) -> float:
        """Last-Modified, else Date, else the time it was stored (for If-Modified-Since)."""
        return self._validator_time if self._validator_time is not None else self.stored_at

    @property
    def size(self) -> int:
        """Rough bytes held in memory (near-cache accounting)."""
        return len(self.body) + 64 + sum(len(k) + len(v) + 16 for k, v in self.headers)

    def encode(self) -> bytes:
        fr = self.freshness
        meta = {
            "s": self.status,
            "h": self.headers,
            "a": self.initial_age,
            "l": fr.lifetime,
            "w": fr.stale_while_revalidate,
            "e": fr.stale_if_error,
            "c": fr.no_cache,
            "n": fr.no_stale,
            "v": self.vary,
        }
        data = json.dumps(meta, separators=(",", ":")).encode()
        return MAGIC + _LENGTH.pack(len(data)) + data + self.body

    @classmethod
    def decode(cls, blob: bytes, stored_at: float) -> Entry:
        """Read an encoded entry; raises `CorruptEntry` for anything else."""
        if blob[: len(MAGIC)] != MAGIC or len(blob) < _HEAD:
            raise CorruptEntry("not a cache entry")
        (length,) = _LENGTH.unpack_from(blob, len(MAGIC))
        try:
            meta = json.loads(blob[_HEAD : _HEAD + length])
            return cls(
                status=int(meta["s"]),
                headers=[(str(k), str(v)) for k, v in meta["h"]],
                body=blob[_HEAD + length :],
                initial_age=float(meta["a"]),
                freshness=Freshness(
                    lifetime=float(meta["l"]),
                    stale_while_revalidate=float(meta["w"]),
                    stale_if_error=float(meta["e"]),
                    no_cache=bool(meta["c"]),
                    no_stale=bool(meta["n"]),
                ),
                vary=str(meta["v"]),
                stored_at=stored_at,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptEntry(str(exc)) from exc

    def response(self, *, age: float, result: str, head: bool) -> Response:
        """The stored response as sent: stored headers, a generated Age, X-Cache."""
        # Copying a ready CIMultiDict is several times cheaper than building one (hot path).
        if self._template is None:
            self._template = CIMultiDict(self.headers)
        headers = self._template.copy()
        headers["Age"] = age_header(age)
        headers["X-Cache"] = result
        if head:
            if "Content-Length" not in headers and self.status not in (204, 304):
                headers["Content-Length"] = str(len(self.body))
            return Response(self.status, headers)
        return Response(self.status, headers, self.body)

    def not_modified(self, *, age: float, result: str) -> Response:
        """A 304 for a client whose validators match this entry (RFC 9110 15.4.5)."""
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in self.headers:
            if name.lower() in _NOT_MODIFIED_FIELDS:
                headers.add(name, value)
        headers["Age"] = age_header(age)
        headers["X-Cache"] = result
        return Response(304, headers)

    def merged_headers(self, update: CIMultiDict[str]) -> CIMultiDict[str]:
        """The stored headers updated by a 304's (RFC 9111 3.2): every field the 304 carries
        replaces the stored one, except Content-Length (the stored body's) and Age."""
        replaced = {name.lower() for name in update} - _NOT_UPDATED
        merged: CIMultiDict[str] = CIMultiDict(
            (name, value) for name, value in self.headers if name.lower() not in replaced
        )
        merged.popall("Age", None)
        for name, value in update.items():
            if name.lower() in replaced:
                merged.add(name, value)
        return merged
