"""A circuit breaker, so that a dead Redis costs nothing instead of a timeout per request."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum


class BreakerState(Enum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """Opens after `threshold` failures in a row; stays open for a growing interval.

    While open, `allow()` is False except for one probe per interval; the probe's success
    closes the breaker and resets the interval, its failure reopens it for twice as long
    (up to `max_interval`). `on_change(open)` is called when it opens and when it closes
    again (metrics), not for the probes in between.

    The interval stays short: requests are the probes, so a Redis back from an outage is
    only used again at the next probe (with a 10 s cap, up to 10 s after it returned when
    nothing polls `/-/ready`), while a probe costs at most one request one `redis.timeout`
    per interval and process.
    """

    def __init__(
        self,
        threshold: int = 5,
        base_interval: float = 0.5,
        max_interval: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.base_interval = base_interval
        self.max_interval = max_interval
        self.on_change = on_change
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._interval = base_interval
        self._retry_at = 0.0

    def allow(self) -> bool:
        """Whether a call may go to the store now."""
        if self.state is BreakerState.CLOSED:
            return True
        now = time.monotonic()
        if self.state is BreakerState.OPEN and now >= self._retry_at:
            self.state = BreakerState.HALF_OPEN
            self._retry_at = now + self._interval  # a hung probe must not block recovery forever
            return True
        if self.state is BreakerState.HALF_OPEN and now >= self._retry_at:
            self._retry_at = now + self._interval
            return True
        return False

    def success(self) -> None:
        if self.state is not BreakerState.CLOSED:
            self.state = BreakerState.CLOSED
            self._interval = self.base_interval
            if self.on_change is not None:
                self.on_change(False)
        self._failures = 0

    def failure(self) -> None:
        self._failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self._interval = min(self._interval * 2, self.max_interval)
            self._open()
        elif self.state is BreakerState.CLOSED and self._failures >= self.threshold:
            self._open()

    def _open(self) -> None:
        was_closed = self.state is BreakerState.CLOSED
        self.state = BreakerState.OPEN
        self._retry_at = time.monotonic() + self._interval
        if was_closed and self.on_change is not None:
            self.on_change(True)
