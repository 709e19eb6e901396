"""The rate limiter's store keys: made here and only here.

`rl:v2:{<policy>.<shard>}:<identity>:<limit>`: the version prefix lets a future layout coexist
with this one; `<policy>` is a digest of the policy's scope and key spec, `<identity>` a digest
of that and the request's key values (client input is only ever hashed). An identity belongs
to one of `SHARDS` shards, and the `{hash tag}` names the policy and the shard, not the
identity: so the leaderboard of top consumers, `rl:v2:{<policy>.<shard>}:top:<route>:<bucket>`,
sits in the same Redis Cluster slot as the limits it is counted with, in the same script call.
A policy's keys spread over `SHARDS` slots of a Cluster; a leaderboard is read shard by shard.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from gateway.api import ANONYMOUS, digest

PREFIX = "rl:v2:"
SHARDS = 16
"""Slots one policy's keys spread over on a Cluster, and reads of one leaderboard."""
_SHOWN_MAX = 128


class PolicyKeys:
    """The keys of one policy instance: `policy` is what `digest` makes of its namespace."""

    def __init__(self, namespace: str, suffixes: Sequence[str]) -> None:
        self.policy = digest(namespace)[:16]
        self.suffixes = tuple(suffixes)

    def tag(self, shard: int) -> str:
        return f"{PREFIX}{{{self.policy}.{shard}}}:"

    def bucket_keys(self, *parts: str) -> tuple[str, list[str]]:
        """The tag of the identity that `parts` name, and its keys (one per limit)."""
        identity = digest(self.policy, *parts)
        tag = self.tag(int(identity[:8], 16) % SHARDS)
        return tag, [f"{tag}{identity}:{suffix}" for suffix in self.suffixes]

    def boards(self, route: str) -> list[str]:
        """The leaderboard prefix of `route` in every shard (buckets are `<prefix>:<n>`)."""
        return [board(self.tag(shard), route) for shard in range(SHARDS)]


def board(tag: str, route: str) -> str:
    """The leaderboard prefix of `route` under `tag`; the script appends the time bucket."""
    return f"{tag}top:{route}"


def fingerprint(value: str) -> str:
    """A short stable stand-in for a secret (an API key): the first 12 hex digits of its
    SHA-256, as `printf %s "$KEY" | sha256sum | cut -c1-12` prints them."""
    data = value.encode("utf-8", "surrogateescape")
    return "sha256:" + hashlib.sha256(data).hexdigest()[:12]


def shown(specs: Sequence[str], identity: str) -> str:
    """How an identity appears in `/-/top` and the dashboard: `client_ip` and `session.*` as
    they are; anything else a client sends (`header.*`, `query.*`) only fingerprinted."""
    values = identity.split("\x1f") if len(specs) > 1 else [identity]
    if len(values) != len(specs):  # a value held the separator: show nothing of it
        return fingerprint(identity)
    out = []
    for spec, value in zip(specs, values, strict=True):
        if spec == "route":
            continue
        if value == ANONYMOUS:
            out.append("(none)")
        elif spec == "client_ip" or spec.startswith("session."):
            out.append(value[:_SHOWN_MAX])
        else:
            out.append(fingerprint(value))
    return " ".join(out) or "(route)"
