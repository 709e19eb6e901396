"""From a config file to a validated `LoadedConfig`, or one `ConfigError` listing every problem."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.config.models import GatewayConfig, RouteConfig
from gateway.config.source import (
    Loc,
    Positions,
    YamlProblems,
    format_loc,
    parse_yaml,
    substitute_env,
)
from gateway.errors import ConfigError, ConfigProblem
from gateway.policy import Policy
from gateway.registry import Registry


@dataclass(frozen=True)
class PolicySpec:
    """One validated policy declaration: its type, options, and name when it is a definition."""

    kind: str
    """The policy type (its YAML key)."""
    cls: type[Policy]
    options: BaseModel
    name: str | None = None


@dataclass(frozen=True)
class LoadedConfig:
    """A config that passed every check, ready to be built into a running gateway."""

    model: GatewayConfig
    named: dict[str, PolicySpec]
    chains: list[list[PolicySpec]]
    """Per route, in file order: the policy declarations of its chain, outermost first."""
    file: str
    text: str
    """The file's text as read (before `${VAR}` substitution): what reload hands to workers."""
    positions: Positions
    warnings: list[str] = field(default_factory=list)

    def problem(self, loc: Loc, message: str) -> ConfigError:
        """A `ConfigError` pointing at `loc` in this file (for problems found while building)."""
        return ConfigError(
            [ConfigProblem(self.file, self.positions.line(loc), format_loc(loc), message)]
        )

    @property
    def workers(self) -> int:
        workers = self.model.workers
        return (os.cpu_count() or 1) if workers == "auto" else workers


def load_config(
    path: str, *, env: Mapping[str, str] | None = None, registry: Registry | None = None
) -> LoadedConfig:
    """Read and validate the config at `path`; raise `ConfigError` with every problem found."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError([ConfigProblem(path, None, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem(path, None, "", "not UTF-8 text")]) from None
    return parse_config(text, path, env=env, registry=registry)


def parse_config(
    text: str,
    file: str,
    *,
    env: Mapping[str, str] | None = None,
    registry: Registry | None = None,
) -> LoadedConfig:
    """Validate config `text`, naming `file` in errors."""
    registry = registry if registry is not None else Registry.discover()
    substituted, problems = substitute_env(text, os.environ if env is None else env, file)
    try:
        data, positions = parse_yaml(substituted, file)
    except YamlProblems as exc:
        raise ConfigError(problems + exc.problems) from None
    if data is None:
        raise ConfigError([*problems, ConfigProblem(file, None, "", "the config is empty")])
    if not isinstance(data, dict):
        raise ConfigError([*problems, ConfigProblem(file, 1, "", "the config must be a mapping")])

    checker = _Checker(file, positions, registry)
    checker.problems.extend(problems)
    model: GatewayConfig | None = None
    try:
        model = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        checker.pydantic(exc, ())
    named, chains = checker.policies(data)
    checker.references(data, model)
    if checker.problems or model is None:
        raise ConfigError(sorted(checker.problems, key=lambda p: (p.line or 0, p.path)))
    return LoadedConfig(model, named, chains, file, text, positions, _shadowed(model, positions))


class _Checker:
    """Collects problems with their lines while walking a parsed config."""

    def __init__(self, file: str, positions: Positions, registry: Registry) -> None:
        self.file = file
        self.positions = positions
        self.registry = registry
        self.problems: list[ConfigProblem] = []

    def add(self, loc: Loc, message: str) -> None:
        self.problems.append(
            ConfigProblem(self.file, self.positions.line(loc), format_loc(loc), message)
        )

    def pydantic(self, exc: ValidationError, prefix: Loc) -> None:
        for error in exc.errors(include_url=False):
            loc = (*prefix, *error["loc"])
            kind = error["type"]
            if kind == "missing":
                self.add(loc, "required key is missing")
            elif kind == "extra_forbidden":
                self.add(loc, "unknown key")
            else:
                message = error["msg"].removeprefix("Value error, ")
                self.add(loc, message[:1].lower() + message[1:])

    def policies(
        self, data: dict[str, Any]
    ) -> tuple[dict[str, PolicySpec], list[list[PolicySpec]]]:
        named: dict[str, PolicySpec] = {}
        raw_named = data.get("policies")
        if isinstance(raw_named, dict):
            for name, decl in raw_named.items():
                spec = self.declaration(decl, ("policies", name), name=str(name))
                if spec is not None:
                    named[str(name)] = spec
        chains: list[list[PolicySpec]] = []
        routes = data.get("routes")
        for index, route in enumerate(routes if isinstance(routes, list) else []):
            chain: list[PolicySpec] = []
            entries = route.get("policies") if isinstance(route, dict) else None
            for position, entry in enumerate(entries if isinstance(entries, list) else []):
                loc: Loc = ("routes", index, "policies", position)
                if isinstance(entry, str):
                    if entry in named:
                        chain.append(named[entry])
                    elif not isinstance(raw_named, dict) or entry not in raw_named:
                        known = ", ".join(sorted(raw_named)) if isinstance(raw_named, dict) else ""
                        self.add(
                            loc,
                            f"no policy named {entry!r}"
                            + (f" (defined: {known})" if known else ""),
                        )
                else:
                    spec = self.declaration(entry, loc)
                    if spec is not None:
                        chain.append(spec)
            chains.append(chain)
        return named, chains

    def declaration(self, decl: Any, loc: Loc, name: str | None = None) -> PolicySpec | None:
        if not isinstance(decl, dict) or len(decl) != 1:
            shape = (
                f"got keys {', '.join(map(str, decl))}"
                if isinstance(decl, dict)
                else (f"got {type(decl).__name__}")
            )
            what = "" if name else "a policy name or "
            self.add(loc, f"expected {what}a one-key mapping TYPE: {{options}}, {shape}")
            return None
        ((kind, options),) = decl.items()
        loc = (*loc, kind)
        if kind in self.registry.broken and kind not in self.registry:
            self.add(loc, f"policy type {kind!r} failed to load: {self.registry.broken[kind]}")
            return None
        if kind not in self.registry:
            self.add(loc, f"unknown policy type {kind!r} (known: {', '.join(self.registry)})")
            return None
        cls = self.registry[kind]
        if options is None:
            options = {}
        if not isinstance(options, dict):
            self.add(loc, f"options must be a mapping, got {type(options).__name__}")
            return None
        try:
            validated = cls.Options.model_validate(options)
        except ValidationError as exc:
            self.pydantic(exc, loc)
            return None
        return PolicySpec(kind, cls, validated, name)

    def references(self, data: dict[str, Any], model: GatewayConfig | None) -> None:
        """Cross-references, checked on the raw data so they are reported with other problems."""
        upstreams = data.get("upstreams")
        known = sorted(map(str, upstreams)) if isinstance(upstreams, dict) else []
        routes = data.get("routes")
        seen: dict[str, int] = {}
        for index, route in enumerate(routes if isinstance(routes, list) else []):
            if not isinstance(route, dict):
                continue
            name = route.get("name")
            if isinstance(name, str):
                if name in seen:
                    self.add(
                        ("routes", index, "name"),
                        f"duplicate route name {name!r} (first at routes[{seen[name]}])",
                    )
                seen.setdefault(name, index)
            upstream = route.get("upstream")
            if isinstance(upstream, str) and isinstance(upstreams, dict) and upstream not in known:
                self.add(
                    ("routes", index, "upstream"),
                    f"no upstream named {upstream!r} (defined: {', '.join(known) or 'none'})",
                )
        if model is None:
            return
        for index, route_model in enumerate(model.routes):
            strip, path = route_model.strip_prefix, route_model.match.path
            if strip and not _covers(strip, path):
                self.add(
                    ("routes", index, "strip_prefix"),
                    f"{strip!r} is not a prefix of match.path {path!r}",
                )
        if model.redis.url.startswith("memory:") and model.workers != 1:
            self.add(
                ("workers",),
                "memory:// holds state in one process: use workers: 1 or a redis:// store",
            )
        if model.admin.listen == model.listen:
            self.add(("admin", "listen"), "the admin listener must not be the public listener")


def _covers(prefix: str, path: str) -> bool:
    """Whether the segment-aware `prefix` takes every path that starts with `path`."""
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def _shadowed(model: GatewayConfig, positions: Positions) -> list[str]:
    """Warnings for routes that an earlier route always takes first, and for `methods`
    that an operator may read as a fall-through to a later, wider route."""
    warnings = []
    routes = model.routes
    shadowed: set[int] = set()
    for later_index, later in enumerate(routes):
        for earlier_index, earlier in enumerate(routes[:later_index]):
            if _takes_all(earlier, later):
                shadowed.add(later_index)
                line = positions.line(("routes", later_index))
                warnings.append(
                    f"route {later.name!r} (line {line}) is shadowed by route {earlier.name!r} "
                    f"(line {positions.line(('routes', earlier_index))}): it can never match"
                )
                break
    for index, route in enumerate(routes):
        if index in shadowed or any(_same_match(elder, route) for elder in routes[:index]):
            continue
        group = [route, *(later for later in routes[index + 1 :] if _same_match(route, later))]
        if any(member.match.methods is None for member in group):
            continue
        wider = next(
            (
                (later_index, later)
                for later_index, later in enumerate(routes[index + 1 :], index + 1)
                if not _same_match(route, later) and _takes_all(later, route, methods=False)
            ),
            None,
        )
        if wider is not None:
            methods = sorted({method for member in group for method in member.match.methods or ()})
            later_index, later = wider
            warnings.append(
                f"route {route.name!r} (line {positions.line(('routes', index))}) takes "
                f"{route.match.path} with {', '.join(methods)} only: other methods get 405, "
                f"they do not fall through to route {later.name!r} (line "
                f"{positions.line(('routes', later_index))})"
            )
    return warnings


def _same_match(a: RouteConfig, b: RouteConfig) -> bool:
    return a.match.path == b.match.path and a.match.host == b.match.host


def _takes_all(earlier: RouteConfig, later: RouteConfig, *, methods: bool = True) -> bool:
    """Whether `earlier` owns every request `later` could match (see `gateway.routing`):
    the first route whose host and path match owns the request whatever its method, so only
    a sibling (same host and path) is reached by the methods its elder lacks."""
    a, b = earlier.match, later.match
    host_ok = (
        a.host is None
        or a.host == b.host
        or (b.host is not None and a.host.startswith("*.") and b.host.endswith(a.host[1:]))
    )
    if not (host_ok and _covers(a.path, b.path)):
        return False
    if not methods or not _same_match(earlier, later):
        return True
    return a.methods is None or (b.methods is not None and set(b.methods) <= set(a.methods))
