"""Helpers for the session tests: sessions written the way an app writes them."""

from __future__ import annotations

from collections import Counter
from typing import Any

from gateway.store import Store
from policies.session.ids import new_id
from tests.support.redis_server import RedisServer


async def login(store: Store, ttl: float = 60.0, prefix: str = "session:", **fields: Any) -> str:
    """A new session id whose hash holds `fields` (HSET plus expiry, like the app)."""
    session_id = new_id()
    await store.hset(prefix + session_id, {k: str(v) for k, v in fields.items()}, ttl=ttl)
    return session_id


def command_calls(server: RedisServer) -> Counter[str]:
    """Calls per command since the server started, as `INFO commandstats` counts them.

    INFO itself is left out: reading the counters must not count as the gateway's work.
    """
    calls: Counter[str] = Counter()
    for line in server.cli("INFO", "commandstats").splitlines():
        if not line.startswith("cmdstat_"):
            continue
        name, _, stats = line.removeprefix("cmdstat_").partition(":")
        if name == "info":
            continue
        for item in stats.split(","):
            key, _, value = item.partition("=")
            if key == "calls":
                calls[name] = int(value)
    return calls


def header_values(echo: dict[str, Any], name: str) -> list[str]:
    """Every value of header `name` the echo upstream received (case-insensitive)."""
    return [value for key, value in echo["header_list"] if key.lower() == name.lower()]
