"""`gateway run | check | schema | loadtest`, and commands that plugins add (`gateway.commands`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from gateway.config.loader import LoadedConfig, load_config
from gateway.errors import ConfigError
from gateway.loadtest.command import register as register_loadtest
from gateway.registry import Registry

COMMANDS_GROUP = "gateway.commands"


def _default_config() -> str:
    return os.environ.get("GATEWAY_CONFIG", "gateway.yaml")


def _load(path: str, registry: Registry) -> LoadedConfig | None:
    try:
        return load_config(path, registry=registry)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        count = len(exc.problems)
        print(
            f"{path}: {count} problem{'s' if count != 1 else ''}; nothing started", file=sys.stderr
        )
        return None


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.process.server import StartError
    from gateway.process.supervisor import Supervisor
    from gateway.process.worker import _run
    from gateway.telemetry.logs import setup_logging

    setup_logging(args.log_level, args.log_format)
    registry = Registry.discover()
    loaded = _load(args.config, registry)
    if loaded is None:
        return 2
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    # The same rule as `workers:` in the file (`auto` is refused too, even on one CPU).
    if args.workers not in (None, 1) and loaded.model.redis.url.startswith("memory:"):
        print(
            "memory:// holds state in one process: use --workers 1 or a redis:// store",
            file=sys.stderr,
        )
        return 2
    workers = (os.cpu_count() or 1) if args.workers == "auto" else args.workers
    supervisor = Supervisor(
        loaded, registry, workers=workers, log_level=args.log_level, log_format=args.log_format
    )
    result: list[int] = []

    async def main() -> None:
        result.append(await supervisor.run())

    try:
        _run(main())
    except StartError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return result[0] if result else 1


def _workers(value: str) -> int | str:
    """`--workers`: as `workers:` in the file, 1 to 256 or `auto` (the CPU count)."""
    if value == "auto":
        return value
    if value.isdigit() and 1 <= int(value) <= 256:
        return int(value)
    raise argparse.ArgumentTypeError(f"expected 1 to 256 or 'auto', got {value!r}")


def cmd_check(args: argparse.Namespace) -> int:
    registry = Registry.discover()
    loaded = _load(args.config, registry)
    if loaded is None:
        return 2
    table = asyncio.run(_route_table(loaded))
    if table is None:
        return 2
    print(f"{args.config}: valid, {len(table)} route{'s' if len(table) != 1 else ''}")
    for route in table:
        match = route["match"]
        methods = ",".join(match["methods"]) if match["methods"] else "any method"
        host = match["host"] or "any host"
        rewrite = f" (strip {route['strip_prefix']})" if route["strip_prefix"] else ""
        chain = " -> ".join(route["policies"]) or "(no policies)"
        print(f"  {route['name']}: {match['path']} {methods} {host}{rewrite}")
        print(f"      upstream {route['upstream']} {' '.join(route['targets'])}")
        print(f"      chain    {chain}")
    for warning in loaded.warnings:
        print(f"warning: {warning}")
    return 0


async def _route_table(loaded: LoadedConfig) -> list[dict[str, Any]] | None:
    # Building the runtime (on a throwaway memory store) also catches policies whose
    # constructors refuse their options.
    from gateway.runtime import Runtime
    from gateway.store.memory import MemoryStore
    from gateway.telemetry.metrics import Metrics

    try:
        runtime = Runtime(loaded, MemoryStore(), Metrics())
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None
    table = runtime.table()
    await runtime.stop()
    return table


def cmd_schema(args: argparse.Namespace) -> int:
    from gateway.config.schema import config_schema, reference_markdown

    registry = Registry.discover()
    if args.markdown:
        sys.stdout.write(reference_markdown(registry))
    else:
        print(json.dumps(config_schema(registry), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="An API gateway.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve a config")
    run.add_argument("-c", "--config", default=_default_config(), help="config file")
    run.add_argument(
        "--workers", type=_workers, default=None, help="override `workers`: 1 to 256 or auto"
    )
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", default="json", choices=["json", "text"])
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate a config and print its routes")
    check.add_argument("-c", "--config", default=_default_config(), help="config file")
    check.set_defaults(func=cmd_check)

    schema = sub.add_parser("schema", help="print the config's JSON Schema")
    schema.add_argument("--markdown", action="store_true", help="the README reference instead")
    schema.set_defaults(func=cmd_schema)

    register_loadtest(sub)

    for ep in entry_points(group=COMMANDS_GROUP):
        try:
            register: Callable[[Any], None] = ep.load()
        except Exception as exc:  # a broken plugin must not take the other commands down
            print(f"warning: command {ep.name!r} failed to load: {exc}", file=sys.stderr)
            continue
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
