"""The one script a store call runs: `rate_limit.lua` for Redis, `check_local` for `memory://`.

It decides `n` requests of one identity in order (concurrent requests of one key share a
call). Arguments: `n`, then four numbers per limit (`kind, a, b, c`): `SLIDING` (limit,
window µs, 0), `APPROXIMATE` (limit, window µs, 0), `BUCKET` (µs per token, burst, cost).
With one key more than limits, that key is the route's leaderboard and three arguments follow
(bucket seconds, seconds kept, member): the call counts the top consumers too (leaderboard.py).
The answer is a flat list of integers:
`[admitted k, retry_after s, <remaining_1, reset_1 s, ...> per admitted request,
<remaining_1, reset_1 s, ...> once for the rejected rest when k < n]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from gateway.api import Keyspace, Script, Value
from policies.ratelimit import algorithms as alg
from policies.ratelimit.leaderboard import tally_local

SLIDING = 1
APPROXIMATE = 2
BUCKET = 3
STRIDE = 4


@cache
def rate_limit_script() -> Script:
    """The check-and-consume script, read from package data once per process."""
    return Script.load(__package__, "rate_limit.lua", local=check_local)


class _Limit:
    """One limit's parameters and its state during a call (the Lua script's `s` table)."""

    __slots__ = ("a", "b", "c", "key", "kind", "state")

    def __init__(self, key: str, kind: int, a: int, b: int, c: int, state: Any) -> None:
        self.key, self.kind, self.a, self.b, self.c, self.state = key, kind, a, b, c, state

    def wait(self, now: int) -> float:
        if self.kind == SLIDING:
            return alg.log_wait(self.state, now, self.a, self.b)
        if self.kind == APPROXIMATE:
            return alg.counters_wait(self.state, self.a, self.b)
        return alg.bucket_wait(self.state, self.a, self.b, self.c)

    def add(self, now: int) -> None:
        if self.kind == SLIDING:
            alg.log_add(self.state, now)
        elif self.kind == APPROXIMATE:
            self.state = alg.counters_add(self.state)
        else:
            self.state += self.c * self.a

    def status(self, now: int) -> alg.Status:
        if self.kind == SLIDING:
            return alg.log_status(self.state, now, self.a, self.b)
        if self.kind == APPROXIMATE:
            return alg.counters_status(self.state, self.a, self.b)
        return alg.bucket_status(self.state, self.a, self.b)

    def save(self, keyspace: Keyspace, now: int) -> None:
        if self.kind == SLIDING:
            keyspace.set(self.key, self.state, self.b / alg.MICROS)
        elif self.kind == APPROXIMATE:
            state = self.state
            saved = (state.number, state.current, state.previous)
            keyspace.set(self.key, saved, alg.counters_ttl(state, now, self.b) / alg.MICROS)
        else:
            keyspace.set(self.key, now + self.state, self.state / alg.MICROS)


def _load(keyspace: Keyspace, key: str, kind: int, a: int, b: int, c: int, now: int) -> _Limit:
    if kind == SLIDING:
        # Mutated in place: the twin runs without awaiting, so nothing sees it half done.
        stamps: list[int] = keyspace.get(key) or []
        alg.log_trim(stamps, now, b)
        if not stamps:
            keyspace.delete(key)  # Redis drops an emptied sorted set too
        return _Limit(key, kind, a, b, c, stamps)
    if kind == APPROXIMATE:
        return _Limit(key, kind, a, b, c, alg.counters_at(keyspace.get(key), now, b))
    return _Limit(key, kind, a, b, c, alg.bucket_debt(keyspace.get(key), now))


def check_local(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> list[int]:
    """The memory store's twin of `rate_limit.lua` (atomic: one process, no await inside)."""
    now = int(keyspace.now() * alg.MICROS)
    board = len(args) - 1 < STRIDE * len(keys)
    limits = []
    for i, key in enumerate(keys[:-1] if board else keys):
        kind, a, b, c = (int(v) for v in args[1 + i * STRIDE : 1 + (i + 1) * STRIDE])
        limits.append(_load(keyspace, key, kind, a, b, c, now))
    out = [0, 0]
    requests, admitted, wait = int(args[0]), 0, 0.0
    while admitted < requests:
        for limit in limits:
            wait = max(wait, limit.wait(now))
        if wait > 0:
            break
        for limit in limits:
            limit.add(now)
        admitted += 1
        _statuses(limits, now, out)
    out[0] = admitted
    if admitted < requests:
        out[1] = max(1, alg.seconds_up(wait))
        _statuses(limits, now, out)
    if admitted:
        for limit in limits:
            limit.save(keyspace, now)
    if board:
        tally_local(keyspace, keys[-1], args[-3:], requests, admitted, now)
    return out


def _statuses(limits: list[_Limit], now: int, out: list[int]) -> None:
    for limit in limits:
        remaining, reset = limit.status(now)
        out += (remaining, alg.seconds_up(reset))
