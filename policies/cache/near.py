"""In-process memory in front of the store: a bounded LRU of decoded entries, and Vary hints.

The near cache never decides freshness: an entry carries the store-clock time it was stored
at, and the policy computes its age from that, exactly as for an entry read from Redis. It
only saves the round trip (and the key hashing: it is keyed by the request's own route, host,
path and query), and it is dropped within milliseconds of any change elsewhere (`events`).
"""

from __future__ import annotations

from collections import OrderedDict

from policies.cache.entry import Entry

NearKey = tuple[str, str, str, str, str]
"""(route, host, path, query string as sent, session part): what the request names."""


class NearItem:
    """One URI's variants held in memory."""

    __slots__ = ("names", "size", "tag", "variants", "vary")

    def __init__(self, tag: str, vary: str) -> None:
        self.tag = tag
        self.vary = vary
        self.names = tuple(vary.split(",")) if vary else ()
        self.variants: dict[str, Entry] = {}
        self.size = 0


class NearCache:
    """Near key -> variants, least recently used evicted beyond `max_bytes`; droppable by the
    URI's store tag (what events name)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._data: OrderedDict[NearKey, NearItem] = OrderedDict()
        self._keys: dict[str, set[NearKey]] = {}

    def get(self, key: NearKey) -> NearItem | None:
        item = self._data.get(key)
        if item is not None:
            self._data.move_to_end(key)
        return item

    def put(self, key: NearKey, tag: str, vary: str, variant: str, entry: Entry) -> None:
        size = entry.size
        if size > self.max_bytes // 8:
            return  # a few big bodies must not flush every hot small one
        item = self._data.get(key)
        if item is None or item.tag != tag or item.vary != vary:
            self._remove(key)
            item = self._data[key] = NearItem(tag, vary)
            self._keys.setdefault(tag, set()).add(key)
        old = item.variants.get(variant)
        if old is not None:
            item.size -= old.size
            self.used -= old.size
        item.variants[variant] = entry
        item.size += size
        self.used += size
        self._data.move_to_end(key)
        while self.used > self.max_bytes and self._data:
            self._remove(next(iter(self._data)))

    def drop(self, tag: str | None) -> None:
        """Forget one URI (every variant, under every key naming it), or all for None."""
        if tag is None:
            self._data.clear()
            self._keys.clear()
            self.used = 0
            return
        for key in self._keys.pop(tag, ()):
            item = self._data.pop(key, None)
            if item is not None:
                self.used -= item.size

    def _remove(self, key: NearKey) -> None:
        item = self._data.pop(key, None)
        if item is None:
            return
        self.used -= item.size
        keys = self._keys.get(item.tag)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys[item.tag]

    def __len__(self) -> int:
        return len(self._data)


class VaryHints:
    """The Vary names last seen per URI, so a lookup can name its variant in one round trip.

    A wrong or missing hint costs one more round trip (the store answers with the real
    names); it never makes a lookup wrong.
    """

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self._data: OrderedDict[str, str] = OrderedDict()

    def get(self, tag: str) -> str | None:
        """The names ("" for none), or None when this process has not seen the URI."""
        return self._data.get(tag)

    def put(self, tag: str, vary: str) -> None:
        self._data[tag] = vary
        self._data.move_to_end(tag)
        if len(self._data) > self.size:
            self._data.popitem(last=False)
