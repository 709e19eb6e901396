"""The circuit breaker: when it opens and closes, what it reports, and what an open one costs."""

from __future__ import annotations

import itertools
import time

import pytest

from gateway.errors import StoreUnavailable
from gateway.store.breaker import BreakerState, CircuitBreaker
from gateway.store.redis import RedisStore
from gateway.telemetry.metrics import Metrics
from tests.support.ports import free_port


def test_on_change_reports_opening_and_closing_only() -> None:
    seen: list[bool] = []
    breaker = CircuitBreaker(threshold=3, base_interval=0.01, on_change=seen.append)
    for _ in range(2):
        breaker.failure()
    assert (breaker.state, seen) == (BreakerState.CLOSED, [])
    breaker.failure()
    assert (breaker.state, seen) == (BreakerState.OPEN, [True])
    time.sleep(0.02)
    assert breaker.allow()  # the probe
    breaker.failure()  # a failed probe reopens it: not a change worth reporting
    assert (breaker.state, seen) == (BreakerState.OPEN, [True])
    time.sleep(0.03)
    assert breaker.allow()
    breaker.success()
    assert (breaker.state, seen) == (BreakerState.CLOSED, [True, False])
    breaker.success()
    assert seen == [True, False]


def test_the_metric_follows_the_breaker() -> None:
    metrics = Metrics()
    breaker = CircuitBreaker(threshold=1, on_change=metrics.store_breaker_changed)
    assert "gateway_store_breaker_open 0.0" in metrics.exposition().decode()
    breaker.failure()
    assert "gateway_store_breaker_open 1.0" in metrics.exposition().decode()
    breaker.success()
    assert "gateway_store_breaker_open 0.0" in metrics.exposition().decode()


async def test_an_open_breaker_answers_without_touching_the_network() -> None:
    seen: list[bool] = []
    errors: list[str] = []
    breaker = CircuitBreaker(threshold=5, base_interval=30, on_change=seen.append)
    store = RedisStore(
        f"redis://127.0.0.1:{free_port()}/0",
        timeout=0.2,
        breaker=breaker,
        observer=lambda op, _s, failed: errors.append(op) if failed else None,
    )
    try:
        for _ in range(5):
            with pytest.raises(StoreUnavailable, match="cannot connect"):
                await store.get("k")
        assert seen == [True]
        started = time.perf_counter()
        for _ in range(1000):
            with pytest.raises(StoreUnavailable, match="circuit open"):
                await store.get("k")
        assert time.perf_counter() - started < 0.5
        assert len(errors) == 5  # skipped calls are not store calls
    finally:
        await store.close()


def test_after_a_long_outage_the_next_probe_is_at_most_two_seconds_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr("gateway.store.breaker.time.monotonic", lambda: now[0])
    breaker = CircuitBreaker()
    for _ in range(breaker.threshold):
        breaker.failure()
    probes = []
    while now[0] < 1060:  # a minute of outage, asked every 10 ms
        now[0] += 0.01
        if breaker.allow():
            probes.append(now[0])
            breaker.failure()
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert max(gaps) <= 2.0 + 0.011
    assert len(probes) < 40  # still backing off: not a probe per request
    now[0] += 2.0  # Redis is back: the next request within 2 s probes and closes it
    assert breaker.allow()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED
