"""The `cache` policy's options: every field documents its default."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import Field

from gateway.api import Duration, Options, Size
from policies.cache.freshness import Rules

SessionField = Annotated[str, Field(min_length=1, max_length=256)]
FieldName = Annotated[str, Field(pattern=r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")]


class CacheOptions(Options):
    """Options of the `cache` policy (see docs/policies/cache.md)."""

    ttl: Duration = Field(
        0.0,
        description="Freshness given to responses without explicit freshness (no s-maxage, "
        "max-age or Expires) whose status is heuristically cacheable (200, 203, 204, 300, 301, "
        "308, 404, 405, 410, 414, 501) or that say `public`. Default 0s: only the origin's "
        "headers (and, with a Last-Modified, `heuristic_fraction`) make responses fresh.",
    )
    respect_origin: bool = Field(
        True,
        description="The origin's s-maxage / max-age / Expires (and stale-while-revalidate, "
        "stale-if-error) win over `ttl` and the windows below. With false, `ttl` is the "
        "lifetime of every stored response. Changes only freshness, never what is stored.",
    )
    stale_while_revalidate: Duration = Field(
        0.0,
        description="How long past its freshness a response is still served (at once, "
        "`X-Cache: STALE`) while one gateway refreshes it in the background. Default 0s.",
    )
    stale_if_error: Duration = Field(
        0.0,
        description="How long past its freshness a response is served instead of an upstream "
        "error, timeout or 5xx. Default 0s.",
    )
    max_body: Size = Field(
        1024 * 1024,
        ge=0,
        description="Largest body stored; bigger responses stream through, unstored. Default 1MiB.",
    )
    store_set_cookie: bool = Field(
        False,
        description="Store responses that carry Set-Cookie (and replay the cookie to everyone). "
        "Default false: such responses are never stored.",
    )
    vary_session: list[SessionField] = Field(
        default_factory=list,
        description="Session fields (from the session policy, which must come earlier in the "
        "chain, or the config is refused) that become part of the key: each user gets their "
        "own copy. Default none: "
        "requests with a session or the route's session credentials bypass the cache.",
    )
    near_cache: Size = Field(
        32 * 1024 * 1024,
        ge=0,
        description="Bytes of hot entries each process keeps in memory on top of Redis, "
        "dropped everywhere within milliseconds of a change (pub/sub). 0 disables it; it is "
        "never used with memory://. Default 32MiB.",
    )
    max_variants: int = Field(
        16,
        ge=1,
        le=1024,
        description="Most Vary variants kept per URI; the oldest is evicted first (bounds "
        "what clients can make the cache hold by varying headers). Default 16.",
    )
    heuristic_fraction: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="With `ttl: 0s`, a response without explicit freshness but with "
        "Last-Modified is fresh for this share of its age at arrival (RFC 9111 4.2.2), at "
        "most a day. 0 disables. Default 0.1.",
    )

    targeted: list[FieldName] = Field(
        default_factory=lambda: ["CDN-Cache-Control"],
        description="Targeted cache-control fields (RFC 9213) this cache obeys, most specific "
        "first: the first one present and valid replaces Cache-Control and Expires for this "
        "cache's own storing and freshness decisions; all are forwarded unchanged. [] obeys "
        "Cache-Control only. Default [CDN-Cache-Control].",
    )

    def requires_before(self) -> Mapping[str, str]:
        # Before the session policy ran there is no session to key by: every request that
        # carries the route's credentials would bypass the cache.
        if self.vary_session:
            return {"session": "vary_session needs the session fields that session sets"}
        return {}

    def rules(self) -> Rules:
        """The subset the freshness rules consult."""
        return Rules(
            ttl=self.ttl,
            respect_origin=self.respect_origin,
            stale_while_revalidate=self.stale_while_revalidate,
            stale_if_error=self.stale_if_error,
            store_set_cookie=self.store_set_cookie,
            heuristic_fraction=self.heuristic_fraction,
            targeted=tuple(self.targeted),
        )
