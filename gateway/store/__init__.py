"""The store: shared state for policies, on Redis or in process memory."""

from gateway.store.base import (
    Keyspace,
    MessageHandler,
    Script,
    StatusHandler,
    Store,
    Subscription,
    Value,
)

__all__ = [
    "Keyspace",
    "MessageHandler",
    "Script",
    "StatusHandler",
    "Store",
    "Subscription",
    "Value",
]
