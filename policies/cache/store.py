"""Store access for the cache: the key function and one method per atomic step.

Key layout (every key made here, user input only ever hashed into it):

    gw:cache:v1:{<uri>}            hash: `vary`, `e:<variant>` (entry), `m:<variant>`
                                   ("<stored ms> <deadline ms>") for each Vary variant
    gw:cache:v1:{<uri>}:l:<var>    fill / refresh lock (SET NX PX, token)
    gw:cache:v1:{<uri>}:pass       "last answer was not storable": misses skip collapsing
    gw:cache:v1:{<uri>}:tomb       "invalidated at <ms>": an older fill must not store
    gw:cache:v1:idx:{<route>}      purge index, lexicographic: "<path>\\0<host>\\0<query>\\0<s>"
    gw:cache:v1:idx:{<route>}:exp  the same members scored by deadline (trimming)

`<uri>` = digest(scope, route, host, path, normalised query, session part): every key of one
URI shares that hash tag, so each script call touches one Redis Cluster slot; the two index
keys share the route's tag. A hit is one `lookup` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.api import Script, Store, digest
from policies.cache import twins

PREFIX = "gw:cache:v1:"
CHANNEL = PREFIX + "events"
"""Pub/sub channel: `<kind> <origin> <uri tag>...` (s stored, r released, d dropped)."""

_PACKAGE = "policies.cache"
LOOKUP = Script.load(_PACKAGE, "lookup.lua", twins.lookup)
STORE = Script.load(_PACKAGE, "store.lua", twins.store)
RELEASE = Script.load(_PACKAGE, "release.lua", twins.release)
REFRESH_LOCK = Script.load(_PACKAGE, "refresh_lock.lua", twins.refresh_lock)
INVALIDATE = Script.load(_PACKAGE, "invalidate.lua", twins.invalidate)
INDEX_ADD = Script.load(_PACKAGE, "index_add.lua", twins.index_add)
INDEX_RANGE = Script.load(_PACKAGE, "index_range.lua", twins.index_range)
INDEX_REMOVE = Script.load(_PACKAGE, "index_remove.lua", twins.index_remove)


def normalise_query(query: str) -> str:
    """Parameters sorted by name (a stable sort: repeated names keep their order), empty
    pieces dropped, encoding left as sent: `b=2&a=1` and `a=1&b=2` are one resource."""
    if not query:
        return ""
    pieces = [piece for piece in query.split("&") if piece]
    pieces.sort(key=lambda piece: piece.partition("=")[0])
    return "&".join(pieces)


@dataclass(frozen=True, slots=True)
class Uri:
    """One cached URI: where its variants, lock, pass marker and tombstone live."""

    tag: str
    member: str
    """Its line in the route's purge index."""

    @property
    def entry(self) -> str:
        return f"{PREFIX}{{{self.tag}}}"

    def lock(self, variant: str) -> str:
        return f"{PREFIX}{{{self.tag}}}:l:{variant}"

    @property
    def passed(self) -> str:
        return f"{PREFIX}{{{self.tag}}}:pass"

    @property
    def tomb(self) -> str:
        return f"{PREFIX}{{{self.tag}}}:tomb"


@dataclass(frozen=True, slots=True)
class Index:
    """A route's purge index (two sorted sets sharing one hash tag)."""

    scope: str
    route: str

    @property
    def tag(self) -> str:
        return digest("cache-index", self.scope, self.route)

    @property
    def lex(self) -> str:
        return f"{PREFIX}idx:{{{self.tag}}}"

    @property
    def expiry(self) -> str:
        return f"{PREFIX}idx:{{{self.tag}}}:exp"


def uri_key(scope: str, route: str, host: str, path: str, query: str, session: str = "") -> Uri:
    """THE key function: every cache key derives from this (and `Index`)."""
    member = "\x00".join((path, host, query, session))
    return Uri(digest("cache", scope, route, host, path, query, session), member)


def uri_from_member(scope: str, route: str, member: str) -> Uri:
    """The URI an index line stands for."""
    path, host, query, session = ([*member.split("\x00"), "", "", ""])[:4]
    return uri_key(scope, route, host, path, query, session)


@dataclass(frozen=True, slots=True)
class Lookup:
    """What `lookup` found: the store clock, the URI's Vary, maybe an entry, the lock state."""

    now_us: int
    """Store clock, microseconds."""
    vary: str | None
    blob: bytes | None
    stored_ms: int
    state: str
    lock_pttl: int
    variant: str | None = None
    """The variant the store found or computed (None when it could not tell)."""


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class CacheStore:
    """The cache's calls on a `Store`; each raises `StoreUnavailable` like the store does."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def lookup(
        self,
        uri: Uri,
        vary: str,
        variant: str,
        *,
        lock: bool,
        token: str,
        lock_ms: int,
        headers: Sequence[str] = (),
    ) -> Lookup:
        """Find `variant` of `uri` (whose Vary the caller believes is `vary`); with `headers`
        (`selecting_pairs`) the store finds the variant itself if the belief is wrong."""
        keys = (uri.entry, uri.lock(variant), uri.lock("-"), uri.passed)
        args = (vary, variant, "1" if lock else "0", token, lock_ms, *headers)
        reply = await self.store.eval(LOOKUP, keys, args)
        now, found_vary, blob, meta, state, pttl, found_variant = reply
        stored = int(meta.split(b" ", 1)[0]) if isinstance(meta, bytes) else 0
        return Lookup(
            int(now),
            _text(found_vary),
            blob,
            stored,
            _text(state) or "",
            int(pttl),
            _text(found_variant),
        )

    async def put(
        self,
        uri: Uri,
        *,
        vary: str,
        variant: str,
        blob: bytes,
        retention_ms: int,
        lock_key: str,
        token: str,
        max_variants: int,
        fill_start_us: int,
    ) -> int:
        """Store one variant (and release `lock_key` if `token` holds it); 0 if refused."""
        keys = (uri.entry, lock_key, uri.passed, uri.tomb)
        args = (vary, variant, blob, retention_ms, token, max_variants, fill_start_us)
        return int(await self.store.eval(STORE, keys, args))

    async def release(self, lock_key: str, uri: Uri, token: str, pass_ms: int = 0) -> None:
        await self.store.eval(RELEASE, (lock_key, uri.passed), (token, pass_ms))

    async def refresh_lock(
        self, uri: Uri, variant: str, seen_ms: int, token: str, lock_ms: int
    ) -> tuple[str, int]:
        keys = (uri.entry, uri.lock(variant))
        state, pttl = await self.store.eval(REFRESH_LOCK, keys, (variant, seen_ms, token, lock_ms))
        return _text(state) or "", int(pttl)

    async def invalidate(self, uri: Uri, tomb_ms: int) -> int:
        return int(await self.store.eval(INVALIDATE, (uri.entry, uri.tomb), (tomb_ms,)))

    async def index_add(self, index: Index, uri: Uri, deadline_ms: int) -> None:
        member = _raw(uri.member)
        await self.store.eval(INDEX_ADD, (index.lex, index.expiry), (member, deadline_ms))

    async def index_range(self, index: Index, low: bytes, high: bytes, limit: int) -> list[str]:
        """Index members between ZRANGEBYLEX bounds (`[x`, `(x`, `-`, `+`)."""
        found = await self.store.eval(INDEX_RANGE, (index.lex,), (low, high, limit))
        return [_text(member) or "" for member in found]

    async def index_remove(self, index: Index, members: list[str]) -> None:
        if members:
            raw = [_raw(member) for member in members]
            await self.store.eval(INDEX_REMOVE, (index.lex, index.expiry), raw)

    async def publish(self, kind: str, origin: str, tags: list[str]) -> None:
        await self.store.publish(CHANNEL, " ".join((kind, origin, *tags)).encode())
