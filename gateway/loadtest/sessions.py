"""`--sessions N`: valid sessions written before a run and removed after it.

A session is the store hash `<key_prefix><id>` that the app writes (the layout the session
policy documents for its `key_prefix` option). On a shared store the hashes are written there
directly, as an app does; on `memory://` the state lives inside the gateway process, so they go
through its admin listener (`POST /-/session/create|revoke`), as `gateway session` does.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from typing import Any

from gateway.adminclient import AdminCallFailed, local_admin_url, post_admin
from gateway.config.loader import LoadedConfig
from gateway.config.models import RedisConfig
from gateway.errors import StoreUnavailable

_TTL = 3600.0
_STORE_TIMEOUT = 5.0

Sessions = dict[str, list[dict[str, Any]]]
"""Key prefix -> [{"id": ..., "fields": {...}}]."""


class SessionError(Exception):
    """The sessions could not be written (the message says where and why)."""


def plan_sessions(count: int, fields: Mapping[str, Mapping[str, str | None]], run: str) -> Sessions:
    """`count` sessions per key prefix; a field without a required value gets a distinct one."""
    return {
        prefix: [
            {"fields": {name: value or f"lt-{run}-{n}" for name, value in wanted.items()}}
            for n in range(count)
        ]
        for prefix, wanted in fields.items()
    }


def admin_url(loaded: LoadedConfig, override: str | None) -> str | None:
    """The admin listener to go through: `override`, else the config's own on `memory://`."""
    return local_admin_url(loaded.model, override)


def create(loaded: LoadedConfig, sessions: Sessions, admin: str | None) -> None:
    """Give every planned session an id and write it (raises SessionError)."""
    if admin is not None:
        for prefix, entries in sessions.items():
            for entry in entries:
                body = {"fields": entry["fields"], "ttl": _TTL, "prefix": prefix}
                entry["id"] = str(_post(loaded, admin, "/-/session/create", body)["id"])
        return
    for entries in sessions.values():
        for entry in entries:
            entry["id"] = secrets.token_urlsafe(32)
    write(loaded.model.redis, sessions)


def remove(loaded: LoadedConfig, sessions: Sessions, admin: str | None) -> None:
    """Delete the sessions written by `create` (raises SessionError)."""
    if admin is not None:
        for prefix, entries in sessions.items():
            for entry in entries:
                if "id" in entry:
                    body = {"id": entry["id"], "prefix": prefix}
                    _post(loaded, admin, "/-/session/revoke", body)
        return
    write(loaded.model.redis, sessions, remove=True)


def write(config: RedisConfig, sessions: Sessions, remove: bool = False, ttl: float = _TTL) -> None:
    """Write (or delete) the session hashes on a shared store, as an app does."""
    asyncio.run(_on_store(config, sessions, remove, ttl))


async def _on_store(config: RedisConfig, sessions: Sessions, remove: bool, ttl: float) -> None:
    from gateway.store.factory import open_store

    store = open_store(config.model_copy(update={"timeout": max(config.timeout, _STORE_TIMEOUT)}))
    try:
        for prefix, entries in sessions.items():
            for entry in entries:
                if remove:
                    await store.delete(prefix + entry["id"])
                else:
                    await store.hset(prefix + entry["id"], dict(entry["fields"]), ttl=ttl)
    except StoreUnavailable as exc:
        raise SessionError(f"the store {config.url} is unavailable: {exc}") from None
    finally:
        await store.close()


def _post(loaded: LoadedConfig, base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        return post_admin(loaded.model, base, path, body)
    except AdminCallFailed as exc:
        raise SessionError(str(exc)) from None
