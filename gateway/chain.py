"""Composing a route's chain once, when a config is built."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from gateway.http.messages import Handler
from gateway.policy import Policy


def compose(policies: Sequence[Policy], terminal: Handler) -> Handler:
    """`policies[0]` wraps `policies[1]` ... wraps `terminal` (the proxy).

    Each step is a `partial`, so a request pays one call per policy and no wrapper frames.
    """
    handler = terminal
    for policy in reversed(policies):
        handler = partial(policy, call_next=handler)
    return handler
