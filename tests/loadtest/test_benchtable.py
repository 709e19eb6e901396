"""The bench's arithmetic: ratios paired within rounds, targets judged on them."""

from __future__ import annotations

import argparse

from loadtest.benchtable import make_rows, paired, report
from loadtest.measure import Sample


def _rows(speeds: dict[str, float], drift: list[float]) -> list:
    """Rows whose throughput is `speed * drift[round]` (a machine that speeds up and slows
    down between rounds), with CPU per request moving the other way."""
    rows = [row for row in make_rows() if row.key in speeds]
    for row in rows:
        for factor in drift:
            rps = speeds[row.key] * factor
            row.throughput.append(Sample(rps=rps, p50=1.0, p99=2.0, cpu_us=1e6 / rps, requests=1))
            row.latency.append(Sample(rps=1000, p50=0.5, p99=1.0, requests=10_000))
    return rows


def test_paired_ratios_cancel_drift_between_rounds() -> None:
    # Passthrough ran in a slow round and the cache row in a fast one: a ratio of medians
    # would say 4x; within each round the cache row is 2x.
    rows = _rows({"passthrough": 10_000, "cache": 20_000}, [1.0, 2.0, 0.5])
    rows[0].throughput[1] = Sample(rps=5_000, p50=1, p99=2, cpu_us=200, requests=1)
    rows[1].throughput[0] = Sample(rps=20_000, p50=1, p99=2, cpu_us=50, requests=1)
    assert paired(rows, "cache", "passthrough", "rps") == 2.0
    assert paired(rows, "passthrough", "cache", "cpu_us") == 2.0


def test_targets_are_judged_on_paired_ratios() -> None:
    speeds = {
        "direct": 90_000,
        "aiohttp": 6_000,
        "passthrough": 12_000,
        "rate_limit": 11_000,  # costs 8.3%: holds
        "session": 10_000,  # costs 16.7%: misses
        "cache": 24_000,  # 2x: misses
        "tls": 10_000,  # CPU per request 1.2x passthrough's: holds
    }
    rows = _rows(speeds, [1.0, 1.3, 0.8])
    args = argparse.Namespace(
        no_access_log=False, rate=1000, latency_duration=5.0, rounds=3, generator="asyncio",
        connections=50, threads=1, duration=10.0, workers=1,
    )  # fmt: skip
    page, ok = report(args, rows)
    assert not ok
    lines: dict[str, str] = {}
    for line in page.splitlines():
        if "|" in line:
            lines.setdefault(line.split("|")[1].strip(), line)  # the throughput table first
    assert "8.3%" in lines["rate_limit costs <= 12% of passthrough"]
    assert "yes" in lines["rate_limit costs <= 12% of passthrough"]
    assert "16.7%" in lines["session costs <= 12% of passthrough"]
    assert "NO" in lines["session costs <= 12% of passthrough"]
    assert "2.00x" in lines["cache hit >= 3x passthrough"]
    assert "2.00x" in lines["passthrough >= 1.5x plain aiohttp proxy"]
    assert "| 2.00x " in lines["gateway cache hit"]  # the vs passthrough column
    tls = lines["TLS passthrough CPU us/req <= 1.3x passthrough's"]
    assert "1.20x" in tls
    assert "yes" in tls
