"""The built-in `rate_limit` policy (entry point `rate_limit = "policies.ratelimit:RateLimit"`)."""

from policies.ratelimit.policy import RateLimit

__all__ = ["RateLimit"]
