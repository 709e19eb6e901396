"""Rate-limit maths as plain functions: no I/O, no clock, times in integer microseconds.

`rate_limit.lua` performs exactly these steps against Redis; the memory store's twin
(`scripts.py`) calls these functions. Every algorithm answers three questions about a state:
`wait` (how long until it admits one more request: 0 means now), and after the decision
`remaining` (whole units left) and `reset` (time until one more unit becomes available, the
`t` of the RateLimit field). A request is admitted iff every limit's wait is 0.
"""

from __future__ import annotations

import math
from bisect import bisect_right, insort
from typing import NamedTuple

MICROS = 1_000_000


def seconds_up(micros: float) -> int:
    """Whole seconds, rounded up: what the RateLimit `t` and `Retry-After` carry."""
    return math.ceil(micros / MICROS)


class Status(NamedTuple):
    """One limit's answer for the header: units left and microseconds until one more."""

    remaining: int
    reset: float


# --- sliding window, exact: the times of the admitted requests still inside the window -----


def log_trim(stamps: list[int], now: int, window: int) -> None:
    """Drop admissions that left the window: one at `s` counts while `now < s + window`."""
    del stamps[: bisect_right(stamps, now - window)]


def log_wait(stamps: list[int], now: int, limit: int, window: int) -> int:
    """Microseconds until a request would be admitted (0: now); `stamps` trimmed and sorted."""
    excess = len(stamps) - limit
    if excess < 0:
        return 0
    # The (excess+1)-th oldest admission must leave before a place is free.
    return stamps[excess] + window - now


def log_add(stamps: list[int], now: int) -> None:
    """Record an admission at `now` (kept sorted even if a clock stepped back)."""
    insort(stamps, now)


def log_status(stamps: list[int], now: int, limit: int, window: int) -> Status:
    """Units left, and the time until the next admission leaves the window."""
    count = len(stamps)
    if count == 0:
        return Status(limit, 0)
    index = max(0, count - limit)
    return Status(max(0, limit - count), stamps[index] + window - now)


# --- sliding window, approximate: two fixed-window counters, the previous one weighted -----


class Counters(NamedTuple):
    """The approximate window's state, as seen from the current fixed window."""

    number: int
    """The current fixed window's number: `now // window`."""
    elapsed: int
    """Microseconds since the current fixed window began."""
    current: int
    previous: int


def counters_at(saved: tuple[int, int, int] | None, now: int, window: int) -> Counters:
    """Bring a saved `(number, current, previous)` to the fixed window that holds `now`."""
    number = now // window
    elapsed = now - number * window
    if saved is not None:
        at, current, previous = saved
        if at == number:
            return Counters(number, elapsed, current, previous)
        if at == number - 1:
            return Counters(number, elapsed, 0, current)
    return Counters(number, elapsed, 0, 0)


def estimate(state: Counters, window: int) -> float:
    """Requests in the sliding window, assuming the previous window's were evenly spread."""
    # Float arithmetic in the order Lua does it, so both stores round alike.
    return state.previous * float(window - state.elapsed) / window + state.current


def _decay(state: Counters, window: int, target: float) -> float:
    """Microseconds until the estimate falls to `target` with no further admissions."""
    if target < 0:
        return 0
    if estimate(state, window) <= target:
        return 0
    left = window - state.elapsed
    if state.current <= target:
        # The previous window's weight alone has to shrink; it does before this window ends.
        return left - float(window) * (target - state.current) / state.previous
    # Only once this window is the previous one does its count start to fade.
    return left + window - float(window) * target / state.current


def counters_wait(state: Counters, limit: int, window: int) -> float:
    """Microseconds until one more request fits under `limit` (0: now)."""
    return _decay(state, window, limit - 1)


def counters_add(state: Counters) -> Counters:
    """The state after one admission."""
    return state._replace(current=state.current + 1)


def counters_status(state: Counters, limit: int, window: int) -> Status:
    """Units left (rounded down), and the time until the estimate frees one more."""
    remaining = max(0, math.floor(limit - estimate(state, window)))
    return Status(remaining, _decay(state, window, limit - remaining - 1))


def counters_ttl(state: Counters, now: int, window: int) -> int:
    """Microseconds the state stays useful: until the end of the next fixed window."""
    return (state.number + 2) * window - now


# --- token bucket, as GCRA: the state is the time at which the bucket will be full again ---


def bucket_debt(full_at: int | None, now: int) -> int:
    """Microseconds of refill the bucket still owes (0: it is full)."""
    return 0 if full_at is None or full_at <= now else full_at - now


def bucket_wait(debt: int, interval: int, burst: int, cost: int) -> int:
    """Microseconds until `cost` tokens are there (0: now); positive forever if cost > burst."""
    return max(0, debt + cost * interval - burst * interval)


def bucket_status(debt: int, interval: int, burst: int) -> Status:
    """Whole tokens in the bucket, and the time until the next one drips in."""
    remaining = max(0, (burst * interval - debt) // interval)
    if debt <= 0:
        return Status(remaining, 0)
    partial = debt % interval
    return Status(remaining, partial if partial else interval)


def interval_of(count: float, period: float) -> int:
    """Whole microseconds per token for `count` per `period` seconds, rounded up: the bucket
    never refills faster than configured (slower by at most one part in `1e6 / rate`)."""
    return max(1, math.ceil(period * MICROS / count - 1e-9))
