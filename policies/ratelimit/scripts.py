"""The one script a request runs: `rate_limit.lua` for Redis, `check_local` for `memory://`.

Arguments are four numbers per limit (`kind, a, b, c`), the same for both:
`SLIDING` (limit, window µs, 0), `APPROXIMATE` (limit, window µs, 0),
`BUCKET` (µs per token, burst, cost). The answer is a flat list of integers:
`[admitted (1|0), retry_after s, remaining_1, reset_1 s, remaining_2, reset_2 s, ...]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from gateway.store import Keyspace, Script, Value
from policies.ratelimit import algorithms as alg

SLIDING = 1
APPROXIMATE = 2
BUCKET = 3
STRIDE = 4


@cache
def rate_limit_script() -> Script:
    """The check-and-consume script, read from package data once per process."""
    return Script.load(__package__, "rate_limit.lua", local=check_local)


def check_local(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> list[int]:
    """The memory store's twin of `rate_limit.lua` (atomic: one process, no await inside)."""
    now = int(keyspace.now() * alg.MICROS)
    states: list[Any] = []
    wait: float = 0
    for i, key in enumerate(keys):
        kind, a, b, c = (int(v) for v in args[i * STRIDE : i * STRIDE + STRIDE])
        if kind == SLIDING:
            # Mutated in place: the twin runs without awaiting, so nothing sees it half done.
            stamps: list[int] = keyspace.get(key) or []
            alg.log_trim(stamps, now, b)
            states.append(stamps)
            wait = max(wait, alg.log_wait(stamps, now, a, b))
        elif kind == APPROXIMATE:
            counters = alg.counters_at(keyspace.get(key), now, b)
            states.append(counters)
            wait = max(wait, alg.counters_wait(counters, a, b))
        else:
            debt = alg.bucket_debt(keyspace.get(key), now)
            states.append(debt)
            wait = max(wait, alg.bucket_wait(debt, a, b, c))
    admitted = wait == 0
    out = [1 if admitted else 0, 0 if admitted else max(1, alg.seconds_up(wait))]
    for i, key in enumerate(keys):
        kind, a, b, c = (int(v) for v in args[i * STRIDE : i * STRIDE + STRIDE])
        state = states[i]
        if kind == SLIDING:
            if admitted:
                alg.log_add(state, now)
                keyspace.set(key, state, b / alg.MICROS)
            elif not state:
                keyspace.delete(key)  # Redis drops an emptied sorted set too
            status = alg.log_status(state, now, a, b)
        elif kind == APPROXIMATE:
            if admitted:
                state = alg.counters_add(state)
                saved = (state.number, state.current, state.previous)
                keyspace.set(key, saved, alg.counters_ttl(state, now, b) / alg.MICROS)
            status = alg.counters_status(state, a, b)
        else:
            if admitted:
                state += c * a
                keyspace.set(key, now + state, state / alg.MICROS)
            status = alg.bucket_status(state, a, b)
        out += (status.remaining, alg.seconds_up(status.reset))
    return out
