"""What a policy instance computes once from its options, so a request only fills in numbers:
the script's arguments, each limit's key suffix, and the RateLimit fields' fixed parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from policies.ratelimit import algorithms as alg
from policies.ratelimit.config import LimitFields
from policies.ratelimit.scripts import APPROXIMATE, BUCKET, SLIDING

T = TypeVar("T")


def sf_string(text: str) -> str:
    """`text` as an RFC 8941 string: printable ASCII (others become `?`), `"` and `\\` escaped."""
    printable = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Plan:
    """The per-instance constants of a rate_limit policy."""

    args: tuple[int, ...]
    """The script's arguments after the request count: four integers per limit."""
    suffixes: tuple[str, ...]
    """Per limit, the end of its store key: index and algorithm (and the fixed window's
    length for the approximate counter, whose state means nothing under another length)."""
    policy_field: str
    """The whole `RateLimit-Policy` value: `"name";q=100;w=60, ...`."""
    state_prefixes: tuple[str, ...]
    """Per limit, the start of its `RateLimit` member: `"name";r=`."""
    summary: str

    def state_field(self, answer: Sequence[int], base: int) -> str:
        """The `RateLimit` value from the script's statuses at `base`: `"name";r=42;t=17, ...`."""
        prefixes = self.state_prefixes
        if len(prefixes) == 1:
            return f"{prefixes[0]}{answer[base]};t={answer[base + 1]}"
        return ", ".join(
            f"{prefix}{answer[base + 2 * i]};t={answer[base + 2 * i + 1]}"
            for i, prefix in enumerate(prefixes)
        )


def make_plan(limits: Sequence[LimitFields], names: Sequence[str]) -> Plan:
    """Build the plan for `limits`, whose RateLimit members are called `names`."""
    args: list[int] = []
    suffixes, policies, prefixes, summaries = [], [], [], []
    for index, (limit, name) in enumerate(zip(limits, names, strict=True)):
        quoted = sf_string(name)
        if limit.algorithm == "sliding_window":
            count, window = _given(limit.limit), round(_given(limit.window) * alg.MICROS)
            kind = APPROXIMATE if limit.approximate else SLIDING
            args += (kind, count, window, 0)
            suffixes.append(f"{index}:sa{window}" if limit.approximate else f"{index}:sw")
            quota, seconds = count, alg.seconds_up(window)
            summaries.append(
                f"{count} per {window / alg.MICROS:g}s"
                + (" (approximate)" if limit.approximate else "")
            )
        else:
            rate, burst = _given(limit.rate), _given(limit.burst)
            interval = alg.interval_of(rate.count, rate.period)
            args += (BUCKET, interval, burst, limit.cost)
            suffixes.append(f"{index}:tb")
            # The bucket holds `burst` and refills completely in `w` seconds: q/w is the rate.
            quota, seconds = burst, alg.seconds_up(burst * interval)
            summaries.append(
                f"{rate} burst {burst}" + (f" cost {limit.cost}" if limit.cost != 1 else "")
            )
        policies.append(f"{quoted};q={quota};w={seconds}")
        prefixes.append(f"{quoted};r=")
    return Plan(
        args=tuple(args),
        suffixes=tuple(suffixes),
        policy_field=", ".join(policies),
        state_prefixes=tuple(prefixes),
        summary=", ".join(summaries),
    )


def _given(value: T | None) -> T:
    if value is None:  # the options model requires it for the limit's algorithm
        raise ValueError("incomplete limit")
    return value
