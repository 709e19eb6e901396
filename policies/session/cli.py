"""`gateway session create | revoke`: sessions for operators and the demo.

On Redis the CLI writes the hash itself, exactly as an app does (HSET plus expiry). With
`memory://` the sessions live inside the running gateway, so the CLI asks its admin listener
(`POST /-/session/create|revoke`, with the admin token when the config sets one).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from gateway.api import (
    AdminCallFailed,
    ConfigError,
    LoadedConfig,
    Registry,
    StoreUnavailable,
    load_config,
    local_admin_url,
    open_store,
    parse_duration,
    post_admin,
)
from policies.session.admin import (
    DEFAULT_PREFIX,
    create_session,
    parse_fields,
    revoke_session,
)
from policies.session.config import SessionOptions
from policies.session.ids import valid_id

# A one-off command may wait longer than a request would (first connection, TLS).
_CLI_STORE_TIMEOUT = 5.0
_HTTP_TIMEOUT = 10.0
_NOT_AN_ID = "not a session id (16-256 characters of A-Z a-z 0-9 _ -)"


class _Failed(Exception):
    """A message for stderr and an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def register(subparsers: Any) -> None:
    """Add `gateway session ...` (entry point of the `gateway.commands` group)."""
    session = subparsers.add_parser("session", help="create or revoke sessions")
    commands = session.add_subparsers(dest="session_command", required=True)

    create = commands.add_parser("create", help="write a new session and print its id")
    create.add_argument(
        "--field", action="append", required=True, metavar="NAME=VALUE", help="repeatable"
    )
    create.add_argument("--ttl", default="1h", help="expiry, e.g. 30m, 1h (default: 1h)")
    _common(create)
    create.set_defaults(func=cmd_create)

    revoke = commands.add_parser("revoke", help="delete a session")
    revoke.add_argument("id", help="the session id")
    _common(revoke)
    revoke.set_defaults(func=cmd_revoke)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        default=os.environ.get("GATEWAY_CONFIG", "gateway.yaml"),
        help="config file whose redis (or admin, for memory://) settings to use "
        "(default: $GATEWAY_CONFIG, then gateway.yaml)",
    )
    parser.add_argument(
        "--prefix",
        default=None,
        help="key prefix (default: the config's session key_prefix, else session:)",
    )
    parser.add_argument(
        "--admin",
        default=None,
        metavar="URL",
        help="go through this admin listener (default: the config's admin.listen "
        "when the store is memory://)",
    )


def cmd_create(args: argparse.Namespace) -> int:
    """Print the id of a new session holding `--field`s, expiring after `--ttl`."""
    try:
        fields = parse_fields(args.field)
        ttl = parse_duration(args.ttl)
        if ttl <= 0:
            raise ValueError("--ttl must be positive")
    except ValueError as exc:
        print(f"gateway session create: {exc}", file=sys.stderr)
        return 2
    try:
        loaded = _load(args.config)
        admin = _admin_url(args, loaded)
        if admin is not None:
            body: dict[str, Any] = {"fields": fields, "ttl": ttl}
            if args.prefix is not None:
                body["prefix"] = args.prefix
            session_id = str(_post(admin, "/-/session/create", body, loaded)["id"])
        else:
            prefix = _prefix(args, loaded)
            session_id = asyncio.run(_on_store(loaded, create_session, fields, ttl, prefix))
    except _Failed as exc:
        print(f"gateway session create: {exc}", file=sys.stderr)
        return exc.code
    print(session_id)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    """Delete a session: exit 0 when it existed, 1 when there was none."""
    if not valid_id(args.id):  # never sent anywhere: it would become part of a key
        print(f"gateway session revoke: {_NOT_AN_ID}", file=sys.stderr)
        return 2
    try:
        loaded = _load(args.config)
        admin = _admin_url(args, loaded)
        if admin is not None:
            body: dict[str, Any] = {"id": args.id}
            if args.prefix is not None:
                body["prefix"] = args.prefix
            revoked = bool(_post(admin, "/-/session/revoke", body, loaded)["revoked"])
        else:
            prefix = _prefix(args, loaded)
            revoked = asyncio.run(_on_store(loaded, revoke_session, args.id, prefix))
    except _Failed as exc:
        print(f"gateway session revoke: {exc}", file=sys.stderr)
        return exc.code
    if not revoked:
        print("no such session (expired or already revoked)", file=sys.stderr)
        return 1
    print("revoked")
    return 0


def _load(path: str) -> LoadedConfig:
    try:
        return load_config(path, registry=Registry.discover())
    except ConfigError as exc:
        raise _Failed(f"{exc}\n{path}: cannot use this config", 2) from None


def _admin_url(args: argparse.Namespace, loaded: LoadedConfig) -> str | None:
    return local_admin_url(loaded.model, args.admin)


def _prefix(args: argparse.Namespace, loaded: LoadedConfig) -> str:
    if args.prefix is not None:
        return str(args.prefix)
    specs = [*loaded.named.values(), *(spec for chain in loaded.chains for spec in chain)]
    found = list(
        dict.fromkeys(
            spec.options.key_prefix for spec in specs if isinstance(spec.options, SessionOptions)
        )
    )
    if len(found) > 1:
        raise _Failed(f"the config uses several key prefixes ({', '.join(found)}): pass --prefix")
    return found[0] if found else DEFAULT_PREFIX


async def _on_store(loaded: LoadedConfig, step: Any, *args: Any) -> Any:
    config = loaded.model.redis
    store = open_store(
        config.model_copy(update={"timeout": max(config.timeout, _CLI_STORE_TIMEOUT)})
    )
    try:
        return await step(store, *args)
    except StoreUnavailable as exc:
        raise _Failed(f"store unavailable: {exc}") from None
    finally:
        await store.close()


def _post(base: str, path: str, body: dict[str, Any], loaded: LoadedConfig) -> dict[str, Any]:
    try:
        return post_admin(loaded.model, base, path, body, timeout=_HTTP_TIMEOUT)
    except AdminCallFailed as exc:
        raise _Failed(str(exc)) from None
