"""The built-in `queue` policy (entry point `queue = "policies.queue:Queue"`)."""

from policies.queue.policy import Queue

__all__ = ["Queue"]
