"""The built-in `cache` policy: an RFC 9111 shared HTTP cache in the store."""

from policies.cache.policy import Cache

__all__ = ["Cache"]
