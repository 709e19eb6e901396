"""The delivery rules without I/O: verdicts, backoff with full jitter, Retry-After."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from policies.queue.entry import backoff, retry_after, verdict


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        *[(200, "ack"), (204, "ack"), (299, "ack")],
        *[(500, "retry"), (503, "retry"), (408, "retry"), (429, "retry")],
        *[(400, "dead"), (404, "dead"), (409, "dead"), (301, "dead")],
    ],
)
def test_verdicts(status: int, expected: str) -> None:
    assert verdict(status) == expected


def test_backoff_is_full_jitter_under_a_doubling_bound_up_to_the_cap() -> None:
    rng = random.Random(7)
    for attempts, bound in [(1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0), (10, 300.0), (99, 300.0)]:
        waits = [backoff(attempts, 1.0, 300.0, rng) for _ in range(500)]
        assert all(0 <= w <= bound for w in waits)
        assert max(waits) > bound * 0.9  # spread over all of it
        assert min(waits) < bound * 0.1


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after("120", 0.0) == 120.0
    assert retry_after(None, 0.0) is None
    assert retry_after("soon", 0.0) is None
    now = 1_800_000_000.0
    when = retry_after(formatdate(now + 30, usegmt=True), now)
    assert when == pytest.approx(30, abs=1)
    assert retry_after(formatdate(now - 30, usegmt=True), now) == 0.0
