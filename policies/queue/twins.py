"""The queue's scripts in Python, for `memory://` (one process: each runs without an await,
so atomically). Streams are modelled only as far as the scripts use them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.api import Keyspace, Value

Id = tuple[int, int]
_PARKED = ("m", "p", "h", "b", "n", "s", "e")


def _b(value: Value) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def _text(value: Value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id(text: Value) -> Id:
    ms, _, seq = _text(text).partition("-")
    return int(ms), int(seq or 0)


def _name(entry_id: Id) -> bytes:
    return f"{entry_id[0]}-{entry_id[1]}".encode()


class Stream:
    """A stream with consumer groups: entries in id order, per group a pending list."""

    def __init__(self) -> None:
        self.entries: dict[Id, list[bytes]] = {}
        self.last: Id = (0, 0)
        self.groups: dict[str, Group] = {}

    def add(self, now_ms: int, fields: list[bytes]) -> bytes:
        ms = max(now_ms, self.last[0])
        entry_id = (ms, self.last[1] + 1 if ms == self.last[0] else 0)
        self.entries[entry_id] = fields
        self.last = entry_id
        return _name(entry_id)

    def trim_before(self, min_ms: int) -> None:
        for entry_id in [i for i in self.entries if i[0] < min_ms]:
            del self.entries[entry_id]

    def delete(self, entry_id: Id) -> None:
        self.entries.pop(entry_id, None)


class Group:
    """`pending`: id -> [consumer, last delivery ms, deliveries], in id order."""

    def __init__(self) -> None:
        self.delivered: Id = (0, 0)
        self.pending: dict[Id, list[Any]] = {}
        self.consumers: dict[str, int] = {}
        """consumer -> last seen ms."""


def _now_ms(keyspace: Keyspace) -> int:
    return int(keyspace.now() * 1000)


def _stream(keyspace: Keyspace, key: str) -> Stream:
    stream = keyspace.get(key)
    if not isinstance(stream, Stream):
        stream = Stream()
        keyspace.set(key, stream)
    return stream


def _fields(pairs: list[bytes]) -> dict[str, bytes]:
    return {pairs[i].decode(): pairs[i + 1] for i in range(0, len(pairs), 2)}


def enqueue(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> bytes:
    now = _now_ms(keyspace)
    stream = _stream(keyspace, keys[0])
    stream.trim_before(now - int(args[0]))
    return stream.add(now, [_b(v) for v in args[1:]])


def take(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> list[Any]:
    stream, due_key, parked_key = keys
    group_name, consumer, count = _text(args[0]), _text(args[1]), int(args[2])
    visibility, cursor = int(args[3]), _id(args[4])
    now = _now_ms(keyspace)
    log = _stream(keyspace, stream)
    group = log.groups.setdefault(group_name, Group())
    group.consumers[consumer] = now
    due: dict[str, int] = keyspace.get(due_key) or {}
    parked: dict[str, bytes] = keyspace.get(parked_key) or {}
    ready = sorted((score, key) for key, score in due.items() if score <= now)[:count]
    for _, key in ready:
        if f"{key}:m" in parked:
            values = [parked.pop(f"{key}:{name}") for name in _PARKED]
            m, p, h, b, n, s, e = values
            log.add(
                now,
                [b"m", m, b"p", p, b"h", h, b"b", b, b"k", key.encode(), b"n", n, b"s", s, b"e", e],
            )
        due.pop(key, None)
    out: list[Any] = []
    next_cursor = (0, 0)
    for entry_id in sorted(i for i in group.pending if i >= cursor):
        if len(out) == count:
            next_cursor = entry_id
            break
        holder = group.pending[entry_id]
        if now - holder[1] < visibility:
            continue
        if entry_id not in log.entries:
            del group.pending[entry_id]
            continue
        holder[:] = [consumer, now, holder[2] + 1]
        out.append([_name(entry_id), holder[2] - 1, log.entries[entry_id]])
    for entry_id in [i for i in log.entries if i > group.delivered][: count - len(out)]:
        group.pending[entry_id] = [consumer, now, 1]
        group.delivered = entry_id
        out.append([_name(entry_id), 0, log.entries[entry_id]])
    keyspace.set(due_key, due)
    keyspace.set(parked_key, parked)
    return [_name(next_cursor), out]


def settle(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> int:
    stream, due_key, parked_key, dead_key, counts_key = keys
    group_name, entry_id, verdict = _text(args[0]), _id(args[1]), _text(args[2])
    key, attempts, status, error = _text(args[3]), _b(args[4]), _b(args[5]), _b(args[6])
    log = _stream(keyspace, stream)
    group = log.groups.get(group_name)
    if group is None or entry_id not in group.pending:
        return 0
    fields = log.entries.get(entry_id)
    now = _now_ms(keyspace)
    if verdict != "ack" and fields is not None:
        f = _fields(fields)
        if verdict == "park":
            parked: dict[str, bytes] = keyspace.get(parked_key) or {}
            values = (f["m"], f["p"], f["h"], f["b"], attempts, status, error)
            parked.update({f"{key}:{name}": v for name, v in zip(_PARKED, values, strict=True)})
            keyspace.set(parked_key, parked)
            due: dict[str, int] = keyspace.get(due_key) or {}
            due[key] = now + int(args[7])
            keyspace.set(due_key, due)
        else:
            dead = _stream(keyspace, dead_key)
            dead.trim_before(now - int(args[8]))
            dead.add(now, _dead_letter(f, key.encode(), attempts, status, error))
    del group.pending[entry_id]
    log.delete(entry_id)
    counter = _text(args[9])
    if counter:
        counts: dict[str, int] = keyspace.get(counts_key) or {}
        counts[counter] = counts.get(counter, 0) + 1
        keyspace.set(counts_key, counts)
    return 1


def _dead_letter(
    f: dict[str, bytes], key: bytes, attempts: bytes, status: bytes, error: bytes
) -> list[bytes]:
    """An entry's request fields with its key, attempts, last status and error (the layout
    of a dead letter, and of an entry replayed from one)."""
    request = [b"m", f["m"], b"p", f["p"], b"h", f["h"], b"b", f["b"]]
    return [*request, b"k", key, b"n", attempts, b"s", status, b"e", error]


def replay(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> list[Any]:
    stream, dead_key = keys
    wanted, start, size = (
        _text(args[0]),
        _id(args[1] if _text(args[1]) != "-" else "0-0"),
        int(args[2]),
    )
    dead = _stream(keyspace, dead_key)
    log = _stream(keyspace, stream)
    page = [i for i in dead.entries if i >= start][: size + 1]
    now = _now_ms(keyspace)
    moved = 0
    for entry_id in page[:size]:
        f = _fields(dead.entries[entry_id])
        if not wanted or f["k"].decode() == wanted:
            log.add(now, _dead_letter(f, f["k"], b"0", f["s"], f["e"]))
            dead.delete(entry_id)
            moved += 1
    return [moved, _name(page[size]) if len(page) > size else b""]


def stats(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> list[Any]:
    stream, due_key, dead_key, counts_key = keys
    now = _now_ms(keyspace)
    log = _stream(keyspace, stream)
    group = log.groups.get(_text(args[0]))
    pending = len(group.pending) if group is not None else 0
    oldest = b""
    if log.entries:
        first = next(iter(log.entries))
        oldest = _fields(log.entries[first]).get("k", _name(first))
    due: dict[str, int] = keyspace.get(due_key) or {}
    for key in due:
        if not oldest or _id(key) < _id(oldest):
            oldest = key.encode()
    dead = _stream(keyspace, dead_key)
    recent = []
    for entry_id in list(reversed(dead.entries))[: int(args[1])]:
        f = _fields(dead.entries[entry_id])
        recent.append([_name(entry_id), f["k"], f["n"], f["s"], f["e"], f["m"], f["p"]])
    counts: dict[str, int] = keyspace.get(counts_key) or {}
    tally = [counts.get("delivered", 0), counts.get("failed", 0)]
    return [now, len(log.entries), pending, len(due), len(dead.entries), oldest, tally, recent]


def leave(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> int:
    log = keyspace.get(keys[0])
    if not isinstance(log, Stream) or _text(args[0]) not in log.groups:
        return 0
    group = log.groups[_text(args[0])]
    holding = {holder[0] for holder in group.pending.values()}
    now = _now_ms(keyspace)
    gone = [
        name
        for name, seen in group.consumers.items()
        if name not in holding and (name == _text(args[1]) or now - seen > 3_600_000)
    ]
    for name in gone:
        del group.consumers[name]
    return len(gone)
