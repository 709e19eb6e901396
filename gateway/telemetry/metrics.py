"""Prometheus metrics, summed over every worker process, cheap on the request path.

Workers run prometheus-client in multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, set by the
supervisor), whose every `inc()` costs a lock and a `getpid()` system call. So requests only
add to plain Python numbers here; `flush()` folds them into the real metrics once a second,
and before every scrape (the supervisor asks each worker to flush first), so a scrape still
sees every request that was answered before it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from bisect import bisect_left
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from gateway.telemetry.pools import PoolMetrics
from gateway.telemetry.stats import Stats

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
log = logging.getLogger("gateway.metrics")

FLUSH_EVERY = 1.0
GaugeMode = Literal[
    "all",
    "liveall",
    "min",
    "livemin",
    "max",
    "livemax",
    "sum",
    "livesum",
    "mostrecent",
    "livemostrecent",
]


class CounterChild:
    """One labelled counter series; `inc()` only adds to a number until the next flush."""

    __slots__ = ("_target", "pending")

    def __init__(self, target: Any) -> None:
        self._target = target
        self.pending = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.pending += amount

    def flush(self) -> None:
        if self.pending:
            self._target.inc(self.pending)
            self.pending = 0.0


class HistogramChild:
    """One labelled histogram series, bucketed locally until the next flush."""

    __slots__ = ("_bounds", "_counts", "_sum", "_target")

    def __init__(self, target: Any, bounds: tuple[float, ...]) -> None:
        self._target = target
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    @property
    def counts(self) -> list[int]:
        """Observations per bucket since the last flush (the last one: above every bound)."""
        return self._counts

    def flush(self) -> None:
        counts, self._counts = self._counts, [0] * len(self._counts)
        total, self._sum = self._sum, 0.0
        if not any(counts):
            return
        # prometheus-client keeps one value per bucket (non-cumulative) and a sum.
        buckets = self._target._buckets
        for index, count in enumerate(counts):
            if count:
                buckets[index].inc(count)
        self._target._sum.inc(total)


class Buffered:
    """A counter or histogram whose series buffer their updates (see the module docstring)."""

    def __init__(
        self,
        metric: Any,
        bounds: tuple[float, ...] | None = None,
        labelnames: tuple[str, ...] = (),
    ) -> None:
        self._metric = metric
        self._bounds = bounds
        self.labelnames = labelnames
        self._children: dict[tuple[str, ...], Any] = {}

    def series(self) -> Any:
        """`(label values, child)` of every series made so far."""
        return self._children.items()

    def labels(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            target = self._metric.labels(*values) if values else self._metric
            child = (
                CounterChild(target)
                if self._bounds is None
                else HistogramChild(target, self._bounds)
            )
            self._children[values] = child
        return child

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def observe(self, value: float) -> None:
        self.labels().observe(value)

    def flush(self) -> None:
        for child in self._children.values():
            child.flush()


class Metrics:
    """The gateway's metrics, plus factories for policies' own (made once per process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._made: dict[str, Any] = {}  # name -> Buffered or Gauge
        self.requests = self.counter(
            "gateway_requests_total", "Answered requests.", ["route", "status"]
        )
        self.latency = self.histogram(
            "gateway_request_duration_seconds", "Time to answer, by route.", ["route"]
        )
        self.upstream_latency = self.histogram(
            "gateway_upstream_duration_seconds",
            "Time to the upstream's response head.",
            ["upstream"],
        )
        self.upstream_errors = self.counter(
            "gateway_upstream_errors_total", "Failed upstream exchanges.", ["upstream", "error"]
        )
        self.store_latency = self.histogram(
            "gateway_store_duration_seconds", "Store call latency.", ["op"], buckets=STORE_BUCKETS
        )
        self.store_errors = self.counter(
            "gateway_store_errors_total", "Store calls that failed or timed out.", ["op"]
        )
        self.reloads = self.counter(
            "gateway_config_reloads_total", "Config reloads by result.", ["result"]
        )
        self.accept_errors = self.counter(
            "gateway_accept_errors_total",
            "Client connections the public listener could not accept, by errno "
            "(EMFILE, ENFILE: out of file descriptors).",
            ["error"],
        )
        # Made now, at 0: a series made while out of descriptors could not grow the file
        # that multiprocess mode keeps it in.
        for error in ("EMFILE", "ENFILE"):
            self.accept_errors.labels(error)
        # livemax: the worst worker counts, and a dead worker's last value goes with it.
        self.store_breaker = self.gauge(
            "gateway_store_breaker_open",
            "1 while a process's store circuit breaker is open (store calls are skipped).",
            [],
            mode="livemax",
        )
        self.pools = PoolMetrics(self.gauge, self.counter)
        self._request_series: dict[tuple[str, int], tuple[CounterChild, HistogramChild]] = {}
        self._store_series: dict[str, tuple[HistogramChild, CounterChild]] = {}
        self.stats = Stats(LATENCY_BUCKETS, STORE_BUCKETS)
        self._flusher: asyncio.Task[None] | None = None

    def counter(self, name: str, documentation: str, labels: list[str]) -> Buffered:
        """A counter (`.labels(...).inc()`), made once per process however often a config is
        built; its series are buffered, so cache the children you use per request."""
        made = self._made.get(name)
        if made is None:
            metric = Counter(name, documentation, labels, registry=self.registry)
            made = self._made[name] = Buffered(metric, labelnames=tuple(labels))
        return made

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: list[str],
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
    ) -> Buffered:
        made = self._made.get(name)
        if made is None:
            metric = Histogram(name, documentation, labels, buckets=buckets, registry=self.registry)
            made = self._made[name] = Buffered(metric, tuple(buckets), tuple(labels))
        return made

    def gauge(
        self, name: str, documentation: str, labels: list[str], mode: GaugeMode = "max"
    ) -> Gauge:
        """A gauge, written through at once (for rare changes such as a breaker's state)."""
        made = self._made.get(name)
        if made is None:
            made = self._made[name] = Gauge(
                name, documentation, labels, registry=self.registry, multiprocess_mode=mode
            )
        return made

    def request(self, route: str, status: int, seconds: float) -> None:
        children = self._request_series.get((route, status))
        if children is None:
            children = self._request_series[(route, status)] = (
                self.requests.labels(route, str(status)),
                self.latency.labels(route),
            )
        children[0].pending += 1
        children[1].observe(seconds)

    def upstream(self, name: str, seconds: float) -> None:
        self.upstream_latency.labels(name).observe(seconds)

    def store_call(self, op: str, seconds: float, failed: bool) -> None:
        children = self._store_series.get(op)
        if children is None:
            # The error series is made with the first call, at 0: "no errors" is then a value
            # that dashboards can show, not a missing series.
            children = self._store_series[op] = (
                self.store_latency.labels(op),
                self.store_errors.labels(op),
            )
        children[0].observe(seconds)
        if failed:
            children[1].pending += 1

    def accept_refused(self, error: str) -> None:
        """The public listener could not accept a connection (`error`: the errno's name)."""
        self.accept_errors.labels(error).inc()

    def store_breaker_changed(self, is_open: bool) -> None:
        """The store's circuit breaker opened or closed (`CircuitBreaker.on_change`)."""
        self.store_breaker.set(1 if is_open else 0)

    def flush(self) -> None:
        """Fold buffered updates into the exported metrics (`stats` reads them first)."""
        self.stats.collect(self._made)
        for made in self._made.values():
            if isinstance(made, Buffered):
                made.flush()
        # Last: a new series needs a file in multiprocess mode, which fails while the worker
        # is out of descriptors, and must not keep the counters above from being written.
        self.pools.sample()

    def start(self) -> None:
        """Flush once a second from now on (workers)."""
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            try:
                self.flush()
            except OSError as exc:  # out of descriptors, a full disk: next second may do
                if not failing:  # once per spell, not every second
                    log.warning("metrics not flushed (retried every second): %s", exc)
                failing = True
            else:
                failing = False

    def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            self._flusher = None
        self.flush()

    def exposition(self) -> bytes:
        """The text format: every worker's values in multiprocess mode, else this process's."""
        self.flush()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
