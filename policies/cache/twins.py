"""The Lua scripts' Python twins, for the memory store (one process, so each call is atomic).

Each twin mirrors its `.lua` file step by step and returns what Redis would (ints, bytes,
lists, None). The entry hash is a dict of the same fields; the purge index is one
`_Index` (member -> deadline) under the index key (the Lua side needs two sorted sets).
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import re
from collections.abc import Sequence
from typing import Any

from gateway.api import Keyspace, Value

_META = re.compile(rb"^(\d+) (\d+)$")


def _b(value: Value) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")


def _now_ms(keyspace: Keyspace) -> int:
    return int(keyspace.now() * 1000)


def _hash(keyspace: Keyspace, key: str) -> dict[bytes, bytes]:
    value = keyspace.get(key)
    return dict(value) if isinstance(value, dict) else {}


def _set_nx(keyspace: Keyspace, key: str, value: bytes, ms: int) -> bool:
    if keyspace.get(key) is not None:
        return False
    keyspace.set(key, value, ms / 1000)
    return True


def _pttl(keyspace: Keyspace, key: str) -> int:
    left = keyspace.ttl(key)
    return -2 if left is None else int(left * 1000)


def _now_us(keyspace: Keyspace) -> int:
    return int(keyspace.now() * 1_000_000)


def lookup(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> list[Any]:
    now = _now_us(keyspace)
    entry = keyspace.get(keys[0])
    vary = entry.get(b"vary") if isinstance(entry, dict) else None
    if isinstance(entry, dict) and vary is not None and vary != _b(args[0]):
        variant: bytes | None = None
        if vary == b"":
            variant = b"-"
        elif len(args) > 5:
            values = {_b(args[i]): _b(args[i + 1]) for i in range(5, len(args) - 1, 2)}
            lines = [
                name + b"=" + values[name] if name in values else name + b"\x00absent"
                for name in vary.split(b",")
            ]
            variant = hashlib.sha1(b"\n".join(lines)).hexdigest().encode()
        if variant is not None:
            blob = entry.get(b"e:" + variant)
            if blob is not None:
                return [now, vary, blob, entry.get(b"m:" + variant), b"H", 0, variant]
        return [now, vary, None, None, b"M", 0, variant]
    if vary is not None and isinstance(entry, dict):
        vid = _b(args[1])
        blob = entry.get(b"e:" + vid)
        if blob is not None:
            return [now, vary, blob, entry.get(b"m:" + vid), b"H", 0, vid]
    if _b(args[2]) != b"1":
        return [now, vary, None, None, b"N", 0, None]
    if keyspace.get(keys[3]) is not None:
        return [now, vary, None, None, b"P", 0, None]
    lock = keys[1] if vary is not None else keys[2]
    if _set_nx(keyspace, lock, _b(args[3]), int(args[4])):
        return [now, vary, None, None, b"L", 0, None]
    return [now, vary, None, None, b"W", _pttl(keyspace, lock), None]


def store(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> int:
    now = _now_ms(keyspace)
    vary, vid, blob = _b(args[0]), _b(args[1]), _b(args[2])
    retention, token, keep, start = int(args[3]), _b(args[4]), int(args[5]), int(args[6])
    if token and keyspace.get(keys[1]) == token:
        keyspace.delete(keys[1])
    tomb = keyspace.get(keys[3])
    if tomb is not None and int(tomb) >= start:
        return 0
    entry = _hash(keyspace, keys[0])
    if entry.get(b"vary", vary) != vary:
        entry = {}
    deadline = now + retention
    variants: list[tuple[bytes, int, int]] = []
    for field in [f for f in entry if f.startswith(b"m:") and f[2:] != vid]:
        other = field[2:]
        match = _META.match(entry[field])
        if match is None or int(match.group(2)) <= now:
            entry.pop(b"e:" + other, None)
            entry.pop(field, None)
        else:
            variants.append((other, int(match.group(1)), int(match.group(2))))
    variants.sort(key=lambda v: v[1])
    while len(variants) >= keep:
        oldest = variants.pop(0)
        entry.pop(b"e:" + oldest[0], None)
        entry.pop(b"m:" + oldest[0], None)
    latest = max([deadline, *(v[2] for v in variants)])
    entry[b"vary"] = vary
    entry[b"e:" + vid] = blob
    entry[b"m:" + vid] = b"%d %d" % (now, deadline)
    keyspace.set(keys[0], entry, max(1, latest - now) / 1000)
    keyspace.delete(keys[2])
    return now


def release(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> int:
    released = 0
    if keyspace.get(keys[0]) == _b(args[0]):
        keyspace.delete(keys[0])
        released = 1
    if int(args[1]) > 0:
        keyspace.set(keys[1], b"1", int(args[1]) / 1000)
    return released


def refresh_lock(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> list[Any]:
    entry = keyspace.get(keys[0])
    meta = entry.get(b"m:" + _b(args[0])) if isinstance(entry, dict) else None
    if meta is None or meta.split(b" ", 1)[0] != _b(args[1]):
        return [b"C", 0]
    if _set_nx(keyspace, keys[1], _b(args[2]), int(args[3])):
        return [b"L", 0]
    return [b"W", _pttl(keyspace, keys[1])]


def invalidate(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> int:
    now = _now_us(keyspace)
    dropped = int(keyspace.delete(keys[0]))
    keyspace.set(keys[1], b"%d" % now, int(args[0]) / 1000)
    return dropped


class _Index(dict[bytes, int]):
    """member -> deadline (ms), changed in place: a copy per call would cost O(members).

    A heap finds expired members in O(log n); a sorted list (rebuilt after additions) serves
    ranges; the keyspace re-accounts the value's size whenever it doubled or halved.
    """

    def __init__(self) -> None:
        super().__init__()
        self.heap: list[tuple[int, bytes]] = []
        self.ordered: list[bytes] | None = None
        self.accounted = 0
        self.latest = 0

    def sorted_members(self) -> list[bytes]:
        if self.ordered is None:
            self.ordered = sorted(self)
        return self.ordered


def _index(keyspace: Keyspace, key: str) -> _Index | None:
    value = keyspace.get(key)
    return value if isinstance(value, _Index) else None


def _keep_index(keyspace: Keyspace, key: str, index: _Index, now: int) -> None:
    if not index:
        keyspace.delete(key)
        return
    ttl = max(1, index.latest - now) / 1000
    size = len(index)
    if keyspace.get(key) is not index or size > 2 * index.accounted or 2 * size < index.accounted:
        index.accounted = size
        keyspace.set(key, index, ttl)
    else:
        keyspace.expire(key, ttl)


def index_add(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> int:
    now = _now_ms(keyspace)
    index = _index(keyspace, keys[0]) or _Index()
    member, deadline = _b(args[0]), int(args[1])
    if index.get(member, -1) < deadline:
        if member not in index:
            index.ordered = None
        index[member] = deadline
        heapq.heappush(index.heap, (deadline, member))
        index.latest = max(index.latest, deadline)
    gone = 0
    while index.heap and index.heap[0][0] <= now and gone < 64:
        expired, old = heapq.heappop(index.heap)
        if index.get(old) == expired:
            del index[old]
            index.ordered = None
            gone += 1
    _keep_index(keyspace, keys[0], index, now)
    return gone


def _bound(value: bytes) -> tuple[bytes, bool]:
    """A ZRANGEBYLEX bound: (value, inclusive); `-`/`+` as the empty and the top value."""
    if value == b"-":
        return b"", True
    if value == b"+":
        return b"\xff" * 8, True
    return value[1:], value[:1] == b"["


def index_range(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> list[bytes]:
    index = _index(keyspace, keys[0])
    if index is None:
        return []
    low, low_in = _bound(_b(args[0]))
    high, high_in = _bound(_b(args[1]))
    members = index.sorted_members()
    at = bisect.bisect_left(members, low) if low_in else bisect.bisect_right(members, low)
    out: list[bytes] = []
    for member in members[at:]:
        if member > high or (member == high and not high_in) or len(out) >= int(args[2]):
            break
        out.append(member)
    return out


def index_remove(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> int:
    index = _index(keyspace, keys[0])
    if index is None:
        return len(args)
    for raw in args:
        member = _b(raw)
        if index.pop(member, None) is not None and index.ordered is not None:
            at = bisect.bisect_left(index.ordered, member)
            del index.ordered[at]
    _keep_index(keyspace, keys[0], index, _now_ms(keyspace))
    return len(args)
