"""loadtest/thresholds.yaml: reading it, and judging one scenario's Locust CSV against it."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_LABEL = re.compile(r"\[([^\]]+)\]\s*$")
_NUMBERS = ("min_rate_share", "p95_ms", "p99_ms", "max_error_share")


@dataclass(frozen=True)
class Limits:
    """The thresholds of one scenario, defaults merged in."""

    rate: float
    users: int
    min_rate_share: float
    p95_ms: float
    p99_ms: float
    max_error_share: float
    shares: dict[str, dict[str, float]] = field(default_factory=dict)


def load_thresholds(path: Path) -> dict[str, Limits]:
    """Scenario name -> Limits; raises ValueError naming the file and key on a bad entry."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    defaults: dict[str, Any] = data.get("defaults") or {}
    out: dict[str, Limits] = {}
    for name, raw in (data.get("scenarios") or {}).items():
        merged = {**defaults, **(raw or {})}
        try:
            out[name] = Limits(
                rate=float(merged["rate"]),
                users=int(merged.get("users", 20)),
                **{key: float(merged[key]) for key in _NUMBERS},
                shares={
                    str(label): {k: float(v) for k, v in spec.items()}
                    for label, spec in (merged.get("shares") or {}).items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path}: scenarios.{name}: {exc!r}") from None
    return out


@dataclass
class Outcome:
    """What one scenario did, and which thresholds it missed."""

    scenario: str
    offered: float = 0.0
    achieved: float = 0.0
    requests: int = 0
    failures: int = 0
    p50: float = math.nan
    p95: float = math.nan
    p99: float = math.nan
    shares: dict[str, float] = field(default_factory=dict)
    misses: list[str] = field(default_factory=list)
    skipped: str = ""
    failure_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def error_share(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def verdict(self) -> str:
        if self.skipped:
            return "skipped"
        return "MISS" if self.misses else "ok"


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.nan  # Locust writes "N/A" for percentiles of nothing


def read_stats(prefix: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    """(aggregated row, per-name rows) of Locust's `<prefix>_stats.csv`."""
    with open(f"{prefix}_stats.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    total = next((row for row in rows if row["Name"] == "Aggregated"), None)
    if total is None:
        raise ValueError(f"{prefix}_stats.csv has no Aggregated row")
    return total, [row for row in rows if row["Name"] != "Aggregated"]


def read_failures(prefix: Path) -> dict[str, int]:
    """Failure message -> occurrences, from Locust's `<prefix>_failures.csv`."""
    path = Path(f"{prefix}_failures.csv")
    if not path.exists():
        return {}
    with open(path, newline="", encoding="utf-8") as handle:
        out: dict[str, int] = {}
        for row in csv.DictReader(handle):
            key = f"{row['Name']}: {row['Error']}"
            out[key] = out.get(key, 0) + int(row["Occurrences"])
    return out


def judge(
    scenario: str,
    limits: Limits,
    prefix: Path,
    *,
    offered: float,
    expected: Mapping[str, float] | None = None,
    errors_only: bool = False,
) -> Outcome:
    """Read the CSV report at `prefix` and compare it with `limits`. `expected` replaces a
    share's `expected` value (the rate-limited share follows the rate actually achieved);
    `errors_only` checks only the error share, for CI on a loaded machine."""
    total, rows = read_stats(prefix)
    out = Outcome(scenario, offered=offered)
    out.requests = int(total["Request Count"])
    out.failures = int(total["Failure Count"])
    out.achieved = _number(total["Requests/s"])
    out.p50, out.p95, out.p99 = (_number(total[k]) for k in ("50%", "95%", "99%"))
    out.failure_reasons = read_failures(prefix)
    for row in rows:
        if m := _LABEL.search(row["Name"]):
            out.shares[m[1]] = out.shares.get(m[1], 0.0) + int(row["Request Count"])
    for label in out.shares:
        out.shares[label] /= max(out.requests, 1)

    if out.requests == 0:
        out.misses.append("no requests were made")
        return out
    if out.error_share > limits.max_error_share:
        out.misses.append(
            f"error share {out.error_share:.2%} > {limits.max_error_share:.2%}"
            f" ({_top(out.failure_reasons)})"
        )
    if errors_only:
        return out
    if out.achieved < limits.min_rate_share * offered:
        out.misses.append(
            f"achieved {out.achieved:.0f} rps < {limits.min_rate_share:.0%} of {offered:.0f}"
        )
    for name, value, limit in (("p95", out.p95, limits.p95_ms), ("p99", out.p99, limits.p99_ms)):
        if not value <= limit:
            out.misses.append(f"{name} {value:.0f} ms > {limit:.0f} ms")
    for label, spec in limits.shares.items():
        out.misses.extend(_share_misses(label, spec, out, (expected or {}).get(label)))
    return out


def _share_misses(
    label: str, spec: Mapping[str, float], out: Outcome, expected: float | None
) -> list[str]:
    share = out.shares.get(label, 0.0)
    misses = []
    if "min" in spec and share < spec["min"]:
        misses.append(f"[{label}] share {share:.1%} < {spec['min']:.1%}")
    if "max" in spec and share > spec["max"]:
        misses.append(f"[{label}] share {share:.1%} > {spec['max']:.1%}")
    if "expected" in spec:
        target = spec["expected"] if expected is None else expected
        # Sampling noise of a share over n requests: never demand more than 4 standard errors.
        noise = 4 * math.sqrt(max(target * (1 - target), 1e-9) / out.requests)
        tolerance = max(spec.get("tolerance", 0.0), noise)
        if abs(share - target) > tolerance:
            misses.append(f"[{label}] share {share:.1%}, expected {target:.1%} ± {tolerance:.1%}")
    return misses


def _top(reasons: Mapping[str, int], count: int = 3) -> str:
    ranked = sorted(reasons.items(), key=lambda item: -item[1])[:count]
    return "; ".join(f"{n}x {reason}" for reason, n in ranked) or "see the failures CSV"
