"""`--sessions N`: valid sessions written before a run and removed after it.

A session is the store hash `<key_prefix><id>` that the app writes (the layout the session
policy documents for its `key_prefix` option). On a shared store the hashes are written there
directly, as an app does; on `memory://` the state lives inside the gateway process, so they go
through its admin listener (`POST /-/session/create|revoke`), as `gateway session` does.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from gateway.config.loader import LoadedConfig
from gateway.config.models import RedisConfig, split_listen
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
    if override:
        return override.rstrip("/")
    if not loaded.model.redis.url.startswith("memory:"):
        return None
    host, port = split_listen(loaded.model.admin.listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


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
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    token = loaded.model.admin.token
    if token is not None:
        request.add_header("Authorization", f"Bearer {token.get_secret_value()}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            payload: dict[str, Any] = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:200]
        raise SessionError(f"admin listener {base} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SessionError(f"cannot reach the admin listener at {base}: {reason}") from None
    return payload
