"""The gateway's public surface for policies: what a built-in or third-party policy may import.

Everything else in `gateway` is internal and may move between releases; an import-linter
contract (`pyproject.toml`) keeps `policies/` on this module. See docs/policies/writing.md.
"""

from __future__ import annotations

from gateway.adminclient import AdminCallFailed, local_admin_url, post_admin
from gateway.config.loader import LoadedConfig, load_config
from gateway.config.models import split_listen
from gateway.config.units import Duration, Rate, Size, parse_duration
from gateway.errors import ConfigError, HTTPError, SlotMoving, StoreUnavailable, UpstreamError
from gateway.http.headers import HOP_BY_HOP
from gateway.http.messages import Body, Handler, Request, Response, RouteInfo
from gateway.http.paths import BadPath, normalise
from gateway.keys import ANONYMOUS, Key, digest
from gateway.policy import (
    AdminCall,
    AdminEndpoint,
    Background,
    Downstream,
    Options,
    Policy,
    PolicyContext,
)
from gateway.registry import Registry
from gateway.store import Keyspace, Script, Store, Subscription, Value
from gateway.store.factory import open_store
from gateway.store.memory import MemoryStore

__all__ = [
    "ANONYMOUS",
    "HOP_BY_HOP",
    "AdminCall",
    "AdminCallFailed",
    "AdminEndpoint",
    "Background",
    "BadPath",
    "Body",
    "ConfigError",
    "Downstream",
    "Duration",
    "HTTPError",
    "Handler",
    "Key",
    "Keyspace",
    "LoadedConfig",
    "MemoryStore",
    "Options",
    "Policy",
    "PolicyContext",
    "Rate",
    "Registry",
    "Request",
    "Response",
    "RouteInfo",
    "Script",
    "Size",
    "SlotMoving",
    "Store",
    "StoreUnavailable",
    "Subscription",
    "UpstreamError",
    "Value",
    "digest",
    "load_config",
    "local_admin_url",
    "normalise",
    "open_store",
    "parse_duration",
    "post_admin",
    "split_listen",
]
