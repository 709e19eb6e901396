"""Creating and revoking sessions as an app would, for operators and the demo.

The same two steps serve `gateway session create|revoke` directly on Redis, and the admin
endpoints `POST /-/session/create|revoke` that the CLI calls when the state lives inside the
gateway process (`memory://`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gateway.api import AdminCall, Store, StoreUnavailable, parse_duration
from policies.session.ids import new_id, valid_id

if TYPE_CHECKING:
    from gateway.api import Policy

DEFAULT_PREFIX = "session:"


async def create_session(
    store: Store, fields: Mapping[str, str], ttl: float, prefix: str = DEFAULT_PREFIX
) -> str:
    """Write a new session hash (HSET plus expiry, as the app does) and return its id."""
    session_id = new_id()
    await store.hset(prefix + session_id, dict(fields), ttl=ttl)
    return session_id


async def revoke_session(store: Store, session_id: str, prefix: str = DEFAULT_PREFIX) -> bool:
    """Delete the session; whether it existed. Ids of the wrong format never reach the store."""
    if not valid_id(session_id):
        raise ValueError("not a session id (16-256 characters of A-Z a-z 0-9 _ -)")
    return await store.delete(prefix + session_id) > 0


def parse_fields(pairs: Sequence[str]) -> dict[str, str]:
    """`["user_id=42", "role=admin"]` -> `{"user_id": "42", "role": "admin"}`."""
    fields: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"expected NAME=VALUE, got {pair!r}")
        fields[name] = value
    return fields


def prefixes(instances: Sequence[Policy]) -> list[str]:
    """The distinct `key_prefix` values of live session policies, in order."""
    return list(dict.fromkeys(str(policy.options.key_prefix) for policy in instances))


def _prefix(body: Mapping[str, Any], allowed: Collection[str]) -> str:
    # Only a prefix a serving session policy uses: the admin caller must not be able to write
    # or delete arbitrary keys through these endpoints.
    prefix = body.get("prefix")
    if prefix is None:
        if len(allowed) != 1:
            raise ValueError(f"several key prefixes in use ({', '.join(allowed)}): pass prefix")
        return next(iter(allowed))
    if prefix not in allowed:
        raise ValueError(f"prefix {prefix!r} is not used by any session policy")
    return str(prefix)


def _allowed(call: AdminCall) -> list[str]:
    return prefixes(call.instances) or [DEFAULT_PREFIX]


async def create(call: AdminCall) -> tuple[int, Any]:
    """`POST /-/session/create` `{"fields": {...}, "ttl": "1h", "prefix"?: ...}` -> `{"id"}`."""
    body = call.body if isinstance(call.body, dict) else {}
    try:
        prefix = _prefix(body, _allowed(call))
        fields = body.get("fields")
        if not isinstance(fields, dict) or not fields:
            raise ValueError("fields: a non-empty object of field names to values")
        values = {
            str(k): str(v)
            for k, v in fields.items()
            if k and isinstance(v, str | int) and not isinstance(v, bool)
        }
        if len(values) != len(fields):
            raise ValueError("fields: names must be non-empty, values strings or integers")
        ttl = parse_duration(body.get("ttl", "1h"))
        if ttl <= 0:
            raise ValueError("ttl must be positive")
    except ValueError as exc:  # PydanticCustomError (a bad ttl) is one too
        return 400, {"error": "invalid_request", "reason": str(exc)}
    try:
        session_id = await create_session(call.store, values, ttl, prefix)
    except StoreUnavailable:
        return 503, {"error": "session_store_unavailable"}
    return 201, {"id": session_id, "ttl": ttl}


async def revoke(call: AdminCall) -> tuple[int, Any]:
    """`POST /-/session/revoke` `{"id": ..., "prefix"?: ...}` -> `{"revoked": bool}`."""
    body = call.body if isinstance(call.body, dict) else {}
    session_id = body.get("id")
    try:
        prefix = _prefix(body, _allowed(call))
        if not isinstance(session_id, str):
            raise ValueError("id: the session id to revoke")
        revoked = await revoke_session(call.store, session_id, prefix)
    except ValueError as exc:
        return 400, {"error": "invalid_request", "reason": str(exc)}
    except StoreUnavailable:
        return 503, {"error": "session_store_unavailable"}
    return 200, {"revoked": revoked}
