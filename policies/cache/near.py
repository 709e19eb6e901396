"""In-process memory in front of the store: a bounded LRU of decoded entries, and Vary hints.

The near cache never decides freshness: an entry carries the store-clock time it was stored
at, and the policy computes its age from that, exactly as for an entry read from Redis. It
only saves the round trip, and it is dropped within milliseconds of any change elsewhere
(see `events`).
"""

from __future__ import annotations

from collections import OrderedDict

from policies.cache.entry import Entry


class NearCache:
    """URI tag -> variant id -> entry, least recently used URI evicted beyond `max_bytes`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._data: OrderedDict[str, dict[str, Entry]] = OrderedDict()

    def get(self, tag: str, variant: str) -> Entry | None:
        variants = self._data.get(tag)
        if variants is None:
            return None
        entry = variants.get(variant)
        if entry is not None:
            self._data.move_to_end(tag)
        return entry

    def put(self, tag: str, variant: str, entry: Entry) -> None:
        size = entry.size
        if size > self.max_bytes // 8:
            return  # a few big bodies must not flush every hot small one
        variants = self._data.setdefault(tag, {})
        old = variants.get(variant)
        if old is not None:
            self.used -= old.size
        variants[variant] = entry
        self.used += size
        self._data.move_to_end(tag)
        while self.used > self.max_bytes and self._data:
            _, evicted = self._data.popitem(last=False)
            self.used -= sum(e.size for e in evicted.values())

    def drop(self, tag: str | None) -> None:
        """Forget one URI (all its variants), or everything for None."""
        if tag is None:
            self._data.clear()
            self.used = 0
            return
        variants = self._data.pop(tag, None)
        if variants is not None:
            self.used -= sum(e.size for e in variants.values())

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

    def get(self, tag: str) -> str:
        return self._data.get(tag, "")

    def put(self, tag: str, vary: str) -> None:
        if not vary:
            self._data.pop(tag, None)  # "" is the default: keep the table for real hints
            return
        self._data[tag] = vary
        self._data.move_to_end(tag)
        if len(self._data) > self.size:
            self._data.popitem(last=False)
