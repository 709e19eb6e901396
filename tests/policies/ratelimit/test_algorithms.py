"""The rate-limit maths without any store: exactness, bounds, and the numbers the headers show."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.ratelimit import algorithms as alg

SECOND = alg.MICROS

# Arrival times in microseconds, often equal or close together, sometimes far apart.
arrivals = st.lists(
    st.one_of(st.just(0), st.integers(0, 50), st.integers(0, 3 * SECOND)),
    min_size=1,
    max_size=120,
).map(lambda gaps: [sum(gaps[: i + 1]) for i in range(len(gaps))])


def run_log(times: list[int], limit: int, window: int) -> list[bool]:
    stamps: list[int] = []
    decisions = []
    for now in times:
        alg.log_trim(stamps, now, window)
        admitted = alg.log_wait(stamps, now, limit, window) == 0
        if admitted:
            alg.log_add(stamps, now)
        decisions.append(admitted)
    return decisions


@settings(max_examples=150, deadline=None)
@given(times=arrivals, limit=st.integers(1, 6), window=st.integers(1, 4 * SECOND))
def test_sliding_window_is_exact(times: list[int], limit: int, window: int) -> None:
    decisions = run_log(times, limit, window)
    admitted: list[int] = []
    for now, decision in zip(times, decisions, strict=True):
        in_window = sum(1 for t in admitted if now - window < t <= now)
        # Admitted iff fewer than `limit` were admitted in the last window: never more, and
        # never a refusal while there was room.
        assert decision == (in_window < limit)
        if decision:
            admitted.append(now)
    for i in range(limit, len(admitted)):
        assert admitted[i] - admitted[i - limit] >= window


def run_counters(times: list[int], limit: int, window: int) -> list[bool]:
    saved: tuple[int, int, int] | None = None
    decisions = []
    for now in times:
        state = alg.counters_at(saved, now, window)
        admitted = alg.counters_wait(state, limit, window) == 0
        if admitted:
            state = alg.counters_add(state)
            saved = (state.number, state.current, state.previous)
        decisions.append(admitted)
    return decisions


@settings(max_examples=150, deadline=None)
@given(times=arrivals, limit=st.integers(1, 6), window=st.integers(1, 4 * SECOND))
def test_approximate_window_stays_within_its_bound(
    times: list[int], limit: int, window: int
) -> None:
    admitted = [t for t, ok in zip(times, run_counters(times, limit, window), strict=True) if ok]
    for now in admitted:
        assert sum(1 for t in admitted if t // window == now // window) <= limit
        # The documented worst case: fewer than twice the limit in any window.
        assert sum(1 for t in admitted if now - window < t <= now) < 2 * limit


def run_bucket(times: list[int], interval: int, burst: int, cost: int) -> list[bool]:
    full_at: int | None = None
    decisions = []
    for now in times:
        debt = alg.bucket_debt(full_at, now)
        admitted = alg.bucket_wait(debt, interval, burst, cost) == 0
        if admitted:
            full_at = now + debt + cost * interval
        decisions.append(admitted)
    return decisions


@settings(max_examples=150, deadline=None)
@given(
    times=arrivals,
    interval=st.integers(1, SECOND),
    burst=st.integers(1, 8),
    cost=st.integers(1, 3),
)
def test_token_bucket_never_exceeds_burst_plus_refill(
    times: list[int], interval: int, burst: int, cost: int
) -> None:
    decisions = run_bucket(times, interval, burst, cost)
    admitted = [t for t, ok in zip(times, decisions, strict=True) if ok]
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            tokens = (j - i + 1) * cost
            assert tokens <= burst + (admitted[j] - start) // interval
    if cost <= burst:
        assert decisions[0]  # a full bucket admits the first request


def test_log_boundary_is_exclusive_of_the_window_start() -> None:
    stamps = [1_000]
    alg.log_trim(stamps, 1_000 + 499, 500)
    assert alg.log_wait(stamps, 1_499, 1, 500) == 1  # one microsecond to go
    alg.log_trim(stamps, 1_500, 500)
    assert stamps == []
    assert alg.log_wait(stamps, 1_500, 1, 500) == 0


def test_log_status_counts_equal_timestamps_separately() -> None:
    stamps: list[int] = []
    for _ in range(3):
        alg.log_add(stamps, 7)
    assert alg.log_status(stamps, 7, 3, 100) == alg.Status(0, 100)
    assert alg.log_wait(stamps, 7, 3, 100) == 100
    assert alg.log_status(stamps, 7, 5, 100) == alg.Status(2, 100)


def test_bucket_status_reports_whole_tokens_and_the_next_drip() -> None:
    # 10/s, burst 5: after 3 requests at once, 2 left and the next token in 100 ms.
    assert alg.bucket_status(3 * 100_000, 100_000, 5) == alg.Status(2, 100_000)
    assert alg.bucket_status(250_000, 100_000, 5) == alg.Status(2, 50_000)
    assert alg.bucket_status(0, 100_000, 5) == alg.Status(5, 0)
    assert alg.bucket_wait(0, 100_000, 5, 6) == 100_000  # cost above burst: never admitted


def test_counters_weight_the_previous_window() -> None:
    # Previous window had 10, a quarter of the current one has passed: 7.5 + 1 counted.
    state = alg.counters_at((4, 10, 3), 5 * SECOND + SECOND // 4, SECOND)
    assert state == alg.Counters(5, SECOND // 4, 0, 10)
    state = alg.counters_add(state)
    assert alg.estimate(state, SECOND) == 8.5
    status = alg.counters_status(state, 10, SECOND)
    assert status.remaining == 1
    # One more unit once the estimate is down to 8: the previous weight must fall to 7.
    assert status.reset == 3 * SECOND // 4 - SECOND * 7 / 10
    # A state two windows old is forgotten.
    assert alg.counters_at((3, 10, 10), 5 * SECOND, SECOND) == alg.Counters(5, 0, 0, 0)


def test_interval_and_seconds_round_as_documented() -> None:
    assert alg.interval_of(10, 1) == 100_000
    assert alg.interval_of(1000, 3600) == 3_600_000
    assert alg.interval_of(3, 1) == 333_334  # rounded up: never faster than configured
    assert alg.interval_of(1_000_000, 1) == 1
    assert alg.seconds_up(1) == 1
    assert alg.seconds_up(SECOND) == 1
    assert alg.seconds_up(SECOND + 1) == 2
    assert alg.seconds_up(0) == 0
