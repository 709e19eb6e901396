"""Prometheus metrics, summed over every worker process.

Workers run prometheus-client in multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, set by the
supervisor before any worker starts); the admin listener collects all of them at once.
Label children are cached, because `.labels()` on every request is measurable.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

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


class Metrics:
    """The gateway's metrics, plus factories for policies' own (created once per process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._made: dict[str, Any] = {}
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
        self._request_children: dict[tuple[str, int], Any] = {}
        self._latency_children: dict[str, Any] = {}
        self._upstream_children: dict[str, Any] = {}
        self._store_children: dict[str, tuple[Any, Any]] = {}

    def counter(self, name: str, documentation: str, labels: list[str]) -> Counter:
        """A counter, made once per process however often a config is (re)built."""
        made = self._made.get(name)
        if made is None:
            made = self._made[name] = Counter(name, documentation, labels, registry=self.registry)
        return made  # type: ignore[no-any-return]

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: list[str],
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
    ) -> Histogram:
        made = self._made.get(name)
        if made is None:
            made = self._made[name] = Histogram(
                name, documentation, labels, buckets=buckets, registry=self.registry
            )
        return made  # type: ignore[no-any-return]

    def gauge(self, name: str, documentation: str, labels: list[str], mode: str = "max") -> Gauge:
        made = self._made.get(name)
        if made is None:
            made = self._made[name] = Gauge(
                name, documentation, labels, registry=self.registry, multiprocess_mode=mode
            )
        return made  # type: ignore[no-any-return]

    def request(self, route: str, status: int, seconds: float) -> None:
        child = self._request_children.get((route, status))
        if child is None:
            child = self._request_children[(route, status)] = self.requests.labels(
                route, str(status)
            )
        child.inc()
        latency = self._latency_children.get(route)
        if latency is None:
            latency = self._latency_children[route] = self.latency.labels(route)
        latency.observe(seconds)

    def upstream(self, name: str, seconds: float) -> None:
        child = self._upstream_children.get(name)
        if child is None:
            child = self._upstream_children[name] = self.upstream_latency.labels(name)
        child.observe(seconds)

    def store_call(self, op: str, seconds: float, failed: bool) -> None:
        children = self._store_children.get(op)
        if children is None:
            children = self._store_children[op] = (
                self.store_latency.labels(op),
                self.store_errors.labels(op),
            )
        children[0].observe(seconds)
        if failed:
            children[1].inc()

    def exposition(self) -> bytes:
        """The text format: every worker's values when in multiprocess mode, else this process's."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
