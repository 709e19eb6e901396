"""The expected-admission maths: the declared limits replayed over send times (no I/O)."""

from __future__ import annotations

import math
import random

import pytest

import policies.ratelimit.algorithms as alg
from gateway.loadtest.limits import Limit, admitted, steady_bucket, steady_window


def even(rate: float, duration: float, start: float = 1000.0) -> list[float]:
    return [start + n / rate for n in range(math.floor(rate * duration - 1e-9) + 1)]


def window(limit: int, seconds: float, approximate: bool = False) -> Limit:
    return Limit("sliding_window", limit=limit, window=seconds, approximate=approximate)


def bucket(burst: int, count: float, period: float = 1.0, cost: int = 1) -> Limit:
    return Limit("token_bucket", burst=burst, count=count, period=period, cost=cost)


@pytest.mark.parametrize(
    ("rate", "duration", "limit", "seconds"),
    [(100, 3, 5, 1), (100, 3.5, 5, 1), (7, 10, 3, 2), (2, 10, 5, 1), (30, 20, 10, 3.3)],
)
def test_sliding_window_replay_matches_the_closed_form(
    rate: float, duration: float, limit: int, seconds: float
) -> None:
    got = sum(admitted(even(rate, duration), [window(limit, seconds)]))
    assert got == steady_window(rate, duration, limit, seconds)


def test_a_saturated_window_admits_limit_per_window_started() -> None:
    # K keys x L per W over D: each slot admits again one window after its last admission.
    for duration in (3, 3.5, 4):
        per_key = sum(admitted(even(100, duration), [window(5, 1)]))
        assert per_key == 5 * math.ceil(duration)


def test_an_admission_stops_counting_exactly_one_window_later() -> None:
    # At `s + window` the admission at `s` no longer counts (policies/ratelimit/algorithms.py).
    assert admitted([0.0, 0.5, 1.0, 1.49], [window(1, 1)]) == [True, False, True, False]


@pytest.mark.parametrize(("rate", "burst", "refill"), [(50, 10, 5), (20, 1, 2), (3, 5, 10)])
def test_token_bucket_admits_its_burst_then_what_refills(
    rate: float, burst: int, refill: float
) -> None:
    got = sum(admitted(even(rate, 10), [bucket(burst, refill)]))
    assert abs(got - steady_bucket(rate, 10, burst, refill)) <= 1


def test_token_bucket_cost_takes_several_tokens() -> None:
    assert sum(admitted(even(100, 0.5), [bucket(10, 1, cost=5)])) == 2


def reference(times: list[float], limit: Limit) -> list[bool]:
    """The rate limiter's own functions (policies/ratelimit/algorithms.py), step by step."""
    out = []
    stamps: list[int] = []
    saved: tuple[int, int, int] | None = None
    full_at: int | None = None
    win = round(limit.window * alg.MICROS)
    for at in times:
        now = round(at * alg.MICROS)
        if limit.algorithm == "token_bucket":
            interval = alg.interval_of(limit.count, limit.period)
            debt = alg.bucket_debt(full_at, now)
            ok = alg.bucket_wait(debt, interval, limit.burst, limit.cost) == 0
            if ok:
                full_at = now + debt + limit.cost * interval
        elif limit.approximate:
            state = alg.counters_at(saved, now, win)
            ok = alg.counters_wait(state, limit.limit, win) == 0
            if ok:
                state = alg.counters_add(state)
            saved = (state.number, state.current, state.previous)
        else:
            alg.log_trim(stamps, now, win)
            ok = alg.log_wait(stamps, now, limit.limit, win) == 0
            if ok:
                alg.log_add(stamps, now)
        out.append(ok)
    return out


@pytest.mark.parametrize(
    "limit",
    [
        window(5, 1),
        window(5, 1, approximate=True),
        window(7, 2.5, approximate=True),
        bucket(10, 5),
        bucket(3, 600, 60, cost=2),
    ],
)
@pytest.mark.parametrize("rate", [3, 20, 97])
def test_the_replay_decides_as_the_rate_limiter_does(limit: Limit, rate: float) -> None:
    rng = random.Random(rate)
    times = sorted(1000 + rng.uniform(0, 12) for _ in range(int(rate * 12)))
    assert admitted(times, [limit]) == reference(times, limit)


def test_several_limits_admit_only_together_and_count_against_each() -> None:
    # 2 per second and 3 per 10 s, at 10 requests/s for 10 s: the second caps it at 3.
    got = admitted(even(10, 10), [window(2, 1), window(3, 10)])
    assert sum(got) == 3
    assert got[:3] == [True, True, False]
