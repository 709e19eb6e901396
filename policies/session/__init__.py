"""The built-in `session` policy (entry point `session` of `gateway.policies`)."""

from policies.session.policy import Session

__all__ = ["Session"]
