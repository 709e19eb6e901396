"""What run.py and bench.py share: which policies are installed, a config with only the
routes that can be served today, sessions written into Redis, and plain-text tables."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

POLICY_TYPES = ("rate_limit", "cache", "session")
_ROUTE_LOC = re.compile(r"^routes\[(\d+)\]")
_NAMED_LOC = re.compile(r"^policies\.([^.\[]+)")


def missing_policies() -> dict[str, str]:
    """Built-in policy types that cannot be used yet, with the reason (empty when all load)."""
    from gateway.registry import Registry

    registry = Registry.discover()
    missing: dict[str, str] = {}
    for name in POLICY_TYPES:
        if name not in registry:
            missing[name] = registry.broken.get(name, "not registered")
    return missing


@dataclass
class Rendered:
    """A config reduced to what the installed gateway can serve."""

    doc: dict[str, Any]
    dropped: dict[str, str] = field(default_factory=dict)
    """Route name -> why it was left out."""

    @property
    def routes(self) -> set[str]:
        return {route["name"] for route in self.doc.get("routes", [])}

    def write(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.doc, sort_keys=False), encoding="utf-8")


def _uses(route: Mapping[str, Any], named: str) -> bool:
    return any(entry == named for entry in route.get("policies") or [])


async def _validate(text: str, file: str) -> None:
    # What `gateway check` does: load, then build every chain (policy constructors may refuse
    # their options) on a throwaway memory store.
    from gateway.config.loader import parse_config
    from gateway.runtime import Runtime
    from gateway.store.memory import MemoryStore
    from gateway.telemetry.metrics import Metrics

    loaded = parse_config(text, file, env={})
    runtime = Runtime(loaded, MemoryStore(), Metrics())
    await runtime.stop()


def render_config(source: Path, env: Mapping[str, str]) -> Rendered:
    """Substitute `env` into the config at `source` (as the gateway would) and drop every route
    the installed gateway refuses, e.g. because its policy type is not written yet. A problem
    that no route explains (a broken listener, say) is raised as the gateway's ConfigError."""
    from gateway.config.source import substitute_env
    from gateway.errors import ConfigError

    substituted, problems = substitute_env(source.read_text(encoding="utf-8"), env, str(source))
    if problems:
        raise ConfigError(problems)
    rendered = Rendered(yaml.safe_load(substituted))
    doc = rendered.doc
    while doc.get("routes"):
        try:
            asyncio.run(_validate(yaml.safe_dump(doc, sort_keys=False), str(source)))
        except ConfigError as exc:
            routes: list[dict[str, Any]] = doc["routes"]
            drop: dict[int, str] = {}
            for problem in exc.problems:
                if m := _ROUTE_LOC.match(problem.path):
                    drop.setdefault(int(m[1]), f"{problem.path}: {problem.message}")
                elif (m := _NAMED_LOC.match(problem.path)) and m[1] in (doc.get("policies") or {}):
                    del doc["policies"][m[1]]
                    for index, route in enumerate(routes):
                        if _uses(route, m[1]):
                            reason = f"uses policy {m[1]!r}: {problem.message}"
                            drop.setdefault(index, reason)
                else:
                    raise
            if not drop:
                raise
            for index in sorted(drop, reverse=True):
                rendered.dropped[routes.pop(index)["name"]] = drop[index]
        else:
            return rendered
    raise RuntimeError(f"{source}: no route can be served: " + "; ".join(rendered.dropped.values()))


def create_sessions(redis_url: str, count: int, ttl: int = 3600) -> list[dict[str, str]]:
    """Write `count` sessions as an application would (HSET session:<id> ... + EXPIRE), with
    the session writer of `gateway loadtest --sessions`."""
    from gateway.config.models import RedisConfig
    from gateway.loadtest.sessions import write

    planned = [
        {"id": secrets.token_urlsafe(24), "fields": {"user_id": str(1000 + n), "role": "user"}}
        for n in range(count)
    ]
    write(RedisConfig(url=redis_url, timeout=5.0), {"session:": planned}, ttl=ttl)
    return [{"id": entry["id"], **entry["fields"]} for entry in planned]


def write_report(path: Path, data: Any) -> None:
    """Write a report file (pretty JSON unless `data` is text). A report directory removed
    meanwhile (someone's `make clean`) is made again; a write that still fails is a warning,
    never a lost run."""
    text = data if isinstance(data, str) else json.dumps(data, indent=2, default=str) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"warning: cannot write {path}: {exc}", file=sys.stderr)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], markdown: bool = True) -> str:
    """A column-aligned table; Markdown pipes when `markdown`, so the same text reads in a
    terminal and renders in docs."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        return ("| " + " | ".join(padded) + " |") if markdown else "  ".join(padded)

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    out = [line(cells[0]), rule if markdown else "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells[1:]]
    return "\n".join(out)
