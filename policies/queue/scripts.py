"""The queue's store keys and scripts: Lua for Redis, the twins (twins.py) for `memory://`.

Every key of one route shares the hash tag `{<route>}`, so each script's keys sit in one
Cluster slot. The keys (version `v1`):
- `queue:v1:{R}:stream`: accepted entries not yet settled (unread, or being delivered);
- `queue:v1:{R}:due` / `:parked`: entries waiting for a retry, by due time, and their fields;
- `queue:v1:{R}:dead`: the dead-letter stream; `:counts`: deliveries and failures, all time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from gateway.api import Script
from policies.queue import twins

GROUP = "gateway"
"""The consumer group every gateway process of every deployment on the store joins."""


@dataclass(frozen=True)
class RouteKeys:
    """The store keys of one route's queue."""

    stream: str
    due: str
    parked: str
    dead: str
    counts: str

    @classmethod
    def of(cls, route: str) -> RouteKeys:
        # Route names are config names (letters, digits, '_', '.', '-'): no brace can slip in.
        base = f"queue:v1:{{{route}}}"
        return cls(
            f"{base}:stream", f"{base}:due", f"{base}:parked", f"{base}:dead", f"{base}:counts"
        )


@dataclass(frozen=True)
class Scripts:
    """The queue's atomic steps."""

    enqueue: Script
    take: Script
    settle: Script
    replay: Script
    stats: Script
    leave: Script


@cache
def scripts() -> Scripts:
    """Read from package data once per process."""

    def load(name: str) -> Script:
        return Script.load(__package__, f"{name}.lua", local=getattr(twins, name))

    return Scripts(
        *(load(name) for name in ("enqueue", "take", "settle", "replay", "stats", "leave"))
    )
