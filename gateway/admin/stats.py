"""`GET /-/stats`: the summed snapshots of a gateway's workers, as operators read them.

Percentiles are estimated from the latency histogram's buckets the way Prometheus's
`histogram_quantile` does (linear within a bucket), so they agree with a Grafana board.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.telemetry.stats import RPS_WINDOW

CACHE_RESULTS = {"hits": ("HIT",), "misses": ("MISS", "EXPIRED"), "stale": ("STALE",)}


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The `q` quantile of a histogram (`counts` per bucket, the last above every bound)."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index >= len(bounds):
                return bounds[-1]  # above the last bound: all that can be said
            lower = bounds[index - 1] if index else 0.0
            return lower + (bounds[index] - lower) * (rank - seen) / count
        seen += count
    return bounds[-1]


def _latency(bounds: Sequence[float], counts: Sequence[int]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, q in (("p50", 0.5), ("p99", 0.99)):
        value = quantile(q, bounds, counts)
        out[name] = None if value is None else round(value * 1000, 3)
    return out


def _route(entry: Mapping[str, Any], bounds: Sequence[float], span: float) -> dict[str, Any]:
    cache = entry.get("cache", {})
    out: dict[str, Any] = {
        "requests": entry["requests"],
        "rps": round(entry["recent"] / span, 2) if span > 0 else 0.0,
        "status": entry["status"],
        "latency_ms": _latency(bounds, entry["latency"]),
    }
    out["cache"] = {
        name: sum(cache.get(result, 0) for result in results)
        for name, results in CACHE_RESULTS.items()
    }
    # Refusals decided in process while the store was away (`on_store_error: local`) too.
    limits = entry["rate_limit"]
    out["rate_limited"] = limits.get("limited", 0) + limits.get("local_limited", 0)
    return out


def render(snapshot: Mapping[str, Any]) -> dict[str, Any]:
    """The `/-/stats` answer from a (summed) snapshot."""
    bounds = snapshot["latency_bounds"]
    span = snapshot["rps_span"]
    store = snapshot["store"]
    ops = store["ops"]
    return {
        "workers": snapshot["workers"],
        "windows": {"rps_s": RPS_WINDOW, "latency_s": snapshot["latency_span"]},
        "routes": {
            name: _route(snapshot["routes"][name], bounds, span)
            for name in snapshot["order"]
            if name in snapshot["routes"]
        },
        "total": _route(snapshot["total"], bounds, span),
        "store": {
            "calls": sum(op["calls"] for op in ops.values()),
            "errors": sum(op["errors"] for op in ops.values()),
            "latency_ms": _latency(snapshot["store_bounds"], store["latency"]),
            "ops": ops,
        },
    }
