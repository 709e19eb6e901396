"""The concurrency sweep's verdict: issue 22's two goals, on ratios taken within a round."""

from __future__ import annotations

from loadtest.measure import Sample
from loadtest.sweep import Level, report


def level(connections: int, rps: list[float], new: list[float]) -> Level:
    samples = [Sample(rps=r, p50=1.0, p99=2.0, requests=int(r * 10), cpu_us=100.0) for r in rps]
    nginx = [Sample(rps=10_000.0, p50=1.0, p99=2.0) for _ in rps]
    return Level(connections, nginx, samples, new)


def test_throughput_held_and_no_churn_meet_the_goals() -> None:
    # Round 2 ran on a slower machine: both levels drop, the within-round ratio holds.
    levels = [level(50, [10_000, 5_000], [0, 0]), level(2000, [9_000, 4_500], [0.001, 0.002])]
    text, ok = report(levels, rounds=2, duration=10)
    assert ok
    assert "**0.90x** (holds)" in "\n".join(text)


def test_a_throughput_drop_or_churn_fails_a_goal() -> None:
    dropped = [level(50, [10_000], [0]), level(2000, [5_000], [0])]
    churned = [level(50, [10_000], [0]), level(2000, [10_000], [0.5])]
    for levels in (dropped, churned):
        text, ok = report(levels, rounds=1, duration=10)
        assert not ok
        assert "does NOT hold" in "\n".join(text)
