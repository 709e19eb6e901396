"""Upstream connection pools as metrics: sampled once a second, never counted per request.

A pool keeps plain numbers (open, idle, pending, opened so far); `PoolMetrics.sample` reads every
registered source just before the buffered metrics are flushed, sets the gauges (summed over
workers: `livesum`) and adds what was opened since the last sample to a counter, so
`rate(gateway_upstream_connections_opened_total[1m])` is the connections opened per second.
During a reload the old and the new generation's pools both count, added up per target.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple


class PoolFigures(NamedTuple):
    """One target's pool, as a source reports it."""

    upstream: str
    target: str
    open: int
    idle: int
    pending: int
    opened: int
    """Connections opened since the pool was made (monotonic)."""


Source = Callable[[], Iterable[PoolFigures]]

_GAUGES = (
    ("open", "gateway_upstream_connections_open", "Upstream connections open or being opened."),
    ("idle", "gateway_upstream_connections_idle", "Upstream connections idle in the pool."),
    ("pending", "gateway_upstream_requests_pending", "Requests waiting for a connection."),
)


class PoolMetrics:
    """The pool gauges and the opened counter, fed by sources (one per config generation)."""

    def __init__(self, gauge: Callable[..., Any], counter: Callable[..., Any]) -> None:
        labels = ["upstream", "target"]
        self._gauges = [
            (field, gauge(name, doc, labels, mode="livesum")) for field, name, doc in _GAUGES
        ]
        self._opened = counter(
            "gateway_upstream_connections_opened_total",
            "Upstream connections opened (its rate: connections opened per second).",
            labels,
        )
        self._sources: dict[Source, dict[tuple[str, str], int]] = {}
        self._shown: set[tuple[str, str]] = set()

    def add(self, source: Source) -> None:
        """Report `source`'s pools from now on."""
        self._sources.setdefault(source, {})

    def remove(self, source: Source) -> None:
        """Stop reporting `source` (its pools are closed), after a last sample of it."""
        if source in self._sources:
            self.sample()
            del self._sources[source]

    def sample(self) -> None:
        """Set the gauges and count what was opened since the last sample."""
        totals: dict[tuple[str, str], list[int]] = {}
        for source, reported in self._sources.items():
            for figures in source():
                key = (figures.upstream, figures.target)
                into = totals.setdefault(key, [0, 0, 0])
                into[0] += figures.open
                into[1] += figures.idle
                into[2] += figures.pending
                new = figures.opened - reported.get(key, 0)
                reported[key] = figures.opened
                series = self._opened.labels(*key)  # made at 0 with the pool: no gap in rate()
                if new:
                    series.inc(new)
        current = set(totals)
        for key in self._shown - current:
            totals[key] = [0, 0, 0]  # a target gone with its config: its gauges drop to 0
        self._shown = current
        for key, values in totals.items():
            for (_, gauge), value in zip(self._gauges, values, strict=True):
                gauge.labels(*key).set(value)
