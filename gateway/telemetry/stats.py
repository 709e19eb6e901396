"""Live figures per route for `GET /-/stats`, read from the metrics' buffers: nothing is added
to the request path.

Requests only add to the buffers of `telemetry/metrics.py`. Just before those are folded into
prometheus-client (once a second, and before every scrape or stats call), `Stats.collect`
reads them: totals since the process started, and per second of the last minute the requests
and their latency histogram, from which `rps` (last 10 s) and `latency_ms` (last 60 s) come.

`snapshot()` is this process's share as plain JSON, made to be added up: the supervisor sums
its workers' snapshots (`merge`) and `gateway/admin/stats.py` turns the sum into the answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

RECENT = 60
"""Seconds of per-second history kept: the latency window."""
RPS_WINDOW = 10
"""Seconds over which `rps` is measured."""

REQUESTS = "gateway_requests_total"
LATENCY = "gateway_request_duration_seconds"
STORE_LATENCY = "gateway_store_duration_seconds"
STORE_ERRORS = "gateway_store_errors_total"
RESULTS = {
    "gateway_cache_results_total": "cache",
    "gateway_rate_limit_decisions_total": "rate_limit",
}
"""Counters labelled `(route, ..., result)` whose results are kept per route, by metric name
(a policy's metric is named here, never imported: the core knows no policy)."""

_STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_STORE = "\x00store"  # not a route name (those are validated tokens; "" is "no route")


class Series(Protocol):
    """What `collect` reads from a buffered metric (`telemetry.metrics.Buffered`)."""

    labelnames: tuple[str, ...]

    def series(self) -> Iterable[tuple[tuple[str, ...], Any]]:
        """`(label values, child)`: a child has `pending` (counter) or `counts` (histogram)."""


def _add_into(into: list[int], counts: Sequence[int]) -> None:
    for index, count in enumerate(counts):
        if count:
            into[index] += count


class Stats:
    """One process's figures, fed by `collect` (see the module docstring)."""

    def __init__(self, latency_bounds: Sequence[float], store_bounds: Sequence[float]) -> None:
        self.latency_bounds = tuple(latency_bounds)
        self.store_bounds = tuple(store_bounds)
        self._totals: dict[str, dict[str, Any]] = {}
        # second -> route -> [requests, *latency bucket counts]; _STORE is the store's row
        self._seconds: dict[int, dict[str, list[int]]] = {}
        self._store: dict[str, dict[str, int]] = {}  # op -> {"calls", "errors"}

    def _route(self, name: str) -> dict[str, Any]:
        totals = self._totals.get(name)
        if totals is None:
            totals = self._totals[name] = {
                "requests": 0,
                "status": dict.fromkeys(_STATUS_CLASSES, 0),
                "cache": {},
                "rate_limit": {},
            }
        return totals

    def _slot(self, second: int, row: str, width: int) -> list[int]:
        rows = self._seconds.get(second)
        if rows is None:
            rows = self._seconds[second] = {}
            for old in [s for s in self._seconds if s <= second - RECENT]:
                del self._seconds[old]
        slot = rows.get(row)
        if slot is None:
            slot = rows[row] = [0] * (width + 1)
        return slot

    def collect(self, made: Mapping[str, Series]) -> None:
        """Read the buffered updates of `made` (metric name -> metric) before they are folded."""
        second = int(time.time())
        width = len(self.latency_bounds) + 1
        requests = made.get(REQUESTS)
        if requests is not None:
            for (route, status), child in requests.series():
                count = int(child.pending)
                if count:
                    totals = self._route(route)
                    totals["requests"] += count
                    klass = f"{status[:1]}xx"
                    totals["status"][klass] = totals["status"].get(klass, 0) + count
                    self._slot(second, route, width)[0] += count
        latency = made.get(LATENCY)
        if latency is not None:
            for (route,), child in latency.series():
                counts = child.counts
                if any(counts):
                    _add_into_offset(self._slot(second, route, width), counts)
        for name, field in RESULTS.items():
            metric = made.get(name)
            if metric is None or metric.labelnames[:1] != ("route",):
                continue
            for labels, child in metric.series():
                count = int(child.pending)
                if count:
                    results = self._route(labels[0])[field]
                    results[labels[-1]] = results.get(labels[-1], 0) + count
        self._collect_store(made, second)

    def _collect_store(self, made: Mapping[str, Series], second: int) -> None:
        width = len(self.store_bounds) + 1
        latency = made.get(STORE_LATENCY)
        if latency is not None:
            for (op,), child in latency.series():
                counts = child.counts
                calls = sum(counts)
                if calls:
                    self._store.setdefault(op, {"calls": 0, "errors": 0})["calls"] += calls
                    slot = self._slot(second, _STORE, width)
                    slot[0] += calls
                    _add_into_offset(slot, counts)
        errors = made.get(STORE_ERRORS)
        if errors is not None:
            for (op,), child in errors.series():
                count = int(child.pending)
                if count:
                    self._store.setdefault(op, {"calls": 0, "errors": 0})["errors"] += count

    def snapshot(self, routes: Sequence[str]) -> dict[str, Any]:
        """This process's share: totals, and the recent windows, ready to be added up."""
        now = time.time()
        second = int(now)
        rps_from, latency_from = second - RPS_WINDOW + 1, second - RECENT + 1
        out_routes: dict[str, Any] = {}
        total = _empty_route(len(self.latency_bounds) + 1)
        for name in (*routes, *(r for r in self._totals if r not in routes)):
            entry = _empty_route(len(self.latency_bounds) + 1)
            totals = self._totals.get(name)
            if totals is not None:
                entry["requests"] = totals["requests"]
                entry["status"] = dict(totals["status"])
                entry["cache"] = dict(totals["cache"])
                entry["rate_limit"] = dict(totals["rate_limit"])
            for at, rows in self._seconds.items():
                slot = rows.get(name)
                if slot is None or at < latency_from:
                    continue
                if at >= rps_from:
                    entry["recent"] += slot[0]
                _add_into(entry["latency"], slot[1:])
            merge_into(total, entry)
            if name in routes:
                out_routes[name] = entry
        store_latency = [0] * (len(self.store_bounds) + 1)
        for at, rows in self._seconds.items():
            slot = rows.get(_STORE)
            if slot is not None and at >= latency_from:
                _add_into(store_latency, slot[1:])
        return {
            "order": list(routes),
            "latency_bounds": list(self.latency_bounds),
            "store_bounds": list(self.store_bounds),
            "rps_span": RPS_WINDOW - 1 + (now - second),
            "latency_span": RECENT,
            "workers": 1,
            "routes": out_routes,
            "total": total,
            "store": {
                "ops": {op: dict(v) for op, v in self._store.items()},
                "latency": store_latency,
            },
        }


def _add_into_offset(slot: list[int], counts: Sequence[int]) -> None:
    for index, count in enumerate(counts):
        if count:
            slot[index + 1] += count


def _empty_route(width: int) -> dict[str, Any]:
    return {
        "requests": 0,
        "status": dict.fromkeys(_STATUS_CLASSES, 0),
        "cache": {},
        "rate_limit": {},
        "recent": 0,
        "latency": [0] * width,
    }


_FIRST_WINS = frozenset({"order", "latency_bounds", "store_bounds", "latency_span"})


def merge_into(into: dict[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """Add `other` (a snapshot, or part of one) into `into`: numbers and lists of numbers are
    summed, mappings merged key by key; `rps_span` keeps the longer of the two."""
    for key, value in other.items():
        mine = into.get(key)
        if key in _FIRST_WINS and mine is not None:
            continue
        if key == "rps_span" and isinstance(mine, int | float):
            into[key] = max(mine, value)
        elif mine is None:
            into[key] = _copy(value)
        elif isinstance(value, Mapping):
            merge_into(mine, value)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if index < len(mine):
                    mine[index] += item
                else:
                    mine.append(item)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            into[key] = mine + value
    return into


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return list(value)
    return value
