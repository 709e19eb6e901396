"""Top consumers (the leaderboard pattern): who sent a route the most requests, cluster-wide.

Counted by the rate-limit script itself, in the call that decides (no extra round trip): per
route and `BUCKET_SECONDS` time bucket, a sorted set of requests by member and one of
rejections, each kept `KEEP_SECONDS` after its bucket ends (see rate_limit.lua). A window is
the union of the buckets that overlap it, so it may reach up to one bucket further back.
Every shard of a route's leaderboard is read (top_read.lua) and, since each member lives in
exactly one shard, the busiest of the shards' busiest are the busiest overall.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import cache
from typing import Any

from gateway.api import Keyspace, Script, Store, Value

BUCKET_SECONDS = 10
KEEP_SECONDS = 3600
"""The longest window that can be asked for."""
MICROS = 1_000_000
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


@cache
def read_script() -> Script:
    return Script.load(__package__, "top_read.lua", local=read_local)


def tally_local(
    keyspace: Keyspace,
    board: str,
    args: Sequence[Value],
    requests: int,
    admitted: int,
    now: int,
) -> None:
    """The memory store's twin of the leaderboard step of rate_limit.lua (`now` in µs);
    `args` are the script's last three: bucket seconds, seconds kept, the member."""
    span, keep, member = int(args[0]), int(args[1]), str(args[2])
    bucket = now // (span * MICROS)
    key = f"{board}:{bucket}"
    ttl = (bucket + 1) * span + keep - now / MICROS
    _tally(keyspace, key, requests, member, ttl)
    if admitted < requests:
        _tally(keyspace, key + ":r", requests - admitted, member, ttl)


def _tally(keyspace: Keyspace, key: str, count: int, member: str, ttl: float) -> None:
    scores: dict[str, int] | None = keyspace.get(key)
    if scores is None:
        scores = {}
        keyspace.set(key, scores, ttl)
    size = len(scores)
    scores[member] = scores.get(member, 0) + count
    if len(scores) > size >= 63 and not size & (size + 1):
        # Grown in place to a power of two: let the keyspace account for its size again.
        keyspace.set(key, scores, keyspace.ttl(key))


def read_local(keyspace: Keyspace, keys: Sequence[str], args: Sequence[Value]) -> list[Any]:
    """The memory store's twin of top_read.lua."""
    span, window, n = (int(v) for v in args)
    now = int(keyspace.now())
    requests: dict[str, int] = {}
    rejections: dict[str, int] = {}
    for prefix in keys:
        for bucket in range((now - window) // span, now // span + 1):
            for into, key in (
                (requests, f"{prefix}:{bucket}"),
                (rejections, f"{prefix}:{bucket}:r"),
            ):
                for member, count in (keyspace.get(key) or {}).items():
                    into[member] = into.get(member, 0) + count
    busiest = sorted(requests.items(), key=lambda item: (-item[1], item[0]))[:n]
    out: list[Any] = []
    for member, count in busiest:
        out += (member.encode(), count, rejections.get(member, 0))
    return out


async def read(store: Store, boards: Sequence[str], window: int, n: int) -> list[dict[str, Any]]:
    """The `n` busiest members over the last `window` seconds, from every shard of a board:
    in one call where the store is one server, one call per shard on a Cluster (each shard is
    a slot of its own there)."""
    script = read_script()
    args = [BUCKET_SECONDS, window, n]
    calls = (
        [store.eval(script, [board], args) for board in boards]
        if store.url.startswith(CLUSTER_SCHEMES)
        else [store.eval(script, boards, args)]
    )
    answers = await asyncio.gather(*calls, return_exceptions=True)
    consumers: list[dict[str, Any]] = []
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
        for i in range(0, len(answer), 3):
            member = answer[i]
            key = member.decode("utf-8", "replace") if isinstance(member, bytes) else str(member)
            consumers.append(
                {"key": key, "requests": int(answer[i + 1]), "rejected": int(answer[i + 2])}
            )
    consumers.sort(key=lambda c: (-c["requests"], -c["rejected"], c["key"]))
    return consumers[:n]
