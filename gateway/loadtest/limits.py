"""What declared rate limits admit: the rate limiter's semantics replayed over the traffic sent.

Pure functions (no I/O, no clock): each takes the send times of the requests one bucket saw and
answers which of them the limit admits, exactly as `policies/ratelimit/algorithms.py` decides
(times in integer microseconds). A request is admitted iff every limit of its policy admits it,
and then counts against each. The closed forms below say the same for evenly spaced traffic.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

MICROS = 1_000_000


@dataclass(frozen=True)
class Limit:
    """One declared limit: `sliding_window` (limit per window, exact or approximate) or
    `token_bucket` (burst, refilled at count/period, cost per request)."""

    algorithm: str
    limit: int = 0
    window: float = 0.0
    approximate: bool = False
    count: float = 0.0
    period: float = 0.0
    burst: int = 0
    cost: int = 1

    @property
    def ceiling(self) -> int:
        """The most one bucket can admit at once: what state from before a run may hold."""
        return self.limit if self.algorithm == "sliding_window" else self.burst

    def describe(self) -> str:
        if self.algorithm == "sliding_window":
            kind = "approximate window" if self.approximate else "window"
            return f"{self.limit} per {self.window:g}s {kind}"
        return f"bucket {self.burst} + {self.count:g}/{self.period:g}s"


class _State:
    """One limit's state for one bucket."""

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self.window = max(1, round(limit.window * MICROS))
        self.stamps: list[int] = []
        self.saved: tuple[int, int, int] | None = None
        self.full_at = 0
        if limit.algorithm == "token_bucket":
            self.interval = max(1, math.ceil(limit.period * MICROS / limit.count - 1e-9))

    def admits(self, now: int) -> bool:
        limit = self.limit
        if limit.algorithm == "token_bucket":
            debt = max(0, self.full_at - now)
            return debt + limit.cost * self.interval - limit.burst * self.interval <= 0
        if limit.approximate:
            _, elapsed, current, previous = self._counters(now)
            estimate = previous * float(self.window - elapsed) / self.window + current
            return estimate <= limit.limit - 1
        # A past admission at `s` counts while `now < s + window`.
        del self.stamps[: bisect_right(self.stamps, now - self.window)]
        return len(self.stamps) < limit.limit

    def add(self, now: int) -> None:
        limit = self.limit
        if limit.algorithm == "token_bucket":
            self.full_at = max(self.full_at, now) + limit.cost * self.interval
        elif limit.approximate:
            number, _, current, previous = self._counters(now)
            self.saved = (number, current + 1, previous)
        else:
            self.stamps.append(now)  # times arrive sorted

    def _counters(self, now: int) -> tuple[int, int, int, int]:
        number = now // self.window
        elapsed = now - number * self.window
        if self.saved is not None:
            at, current, previous = self.saved
            if at == number:
                return number, elapsed, current, previous
            if at == number - 1:
                return number, elapsed, 0, current
        return number, elapsed, 0, 0


def admitted(times: Sequence[float], limits: Sequence[Limit]) -> list[bool]:
    """For requests of one bucket sent at `times` (seconds, ascending): which are admitted."""
    states = [_State(limit) for limit in limits]
    out = []
    for at in times:
        now = round(at * MICROS)
        ok = all(state.admits(now) for state in states)
        if ok:
            for state in states:
                state.add(now)
        out.append(ok)
    return out


def steady_window(rate: float, duration: float, limit: int, window: float) -> int:
    """Admissions of an exact sliding window under one key sending `rate` requests/s, evenly
    spaced from t=0 for `duration`: every slot admits again once its last admission leaves the
    window, i.e. at the first request at or after `window` later."""
    sent = math.floor(rate * duration - 1e-9) + 1
    if rate * window <= limit:
        return sent
    gap = 1 / rate
    period = math.ceil(window / gap - 1e-9) * gap  # a slot's cycle, on the request grid
    return sum(math.floor((duration - i * gap - 1e-9) / period) + 1 for i in range(limit))


def steady_bucket(rate: float, duration: float, burst: int, refill: float) -> int:
    """Admissions of a token bucket (cost 1) under one key sending `rate` requests/s, evenly
    spaced from t=0 for `duration`: the burst, then what refills (`burst + refill * D`)."""
    sent = math.floor(rate * duration - 1e-9) + 1
    if rate <= refill:
        return sent
    return min(sent, burst + math.floor(refill * (duration - 1e-9)))
