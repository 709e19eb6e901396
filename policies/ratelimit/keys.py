"""The rate limiter's store keys: made here and only here.

`rl:v1:{<digest>}:<limit>`: the version prefix lets a future layout coexist with this one;
the digest of the policy's scope and the request's identity is the `{hash tag}`, so every
limit of one call lands in one Redis Cluster slot; client input is only ever hashed.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.api import digest

PREFIX = "rl:v1:"


def bucket_keys(suffixes: Sequence[str], *parts: str) -> list[str]:
    """One key per limit (`suffixes`) for the identity that `parts` name (scope first)."""
    tag = f"{PREFIX}{{{digest(*parts)}}}:"
    return [tag + suffix for suffix in suffixes]
