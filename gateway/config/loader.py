"""From a config file to a validated `LoadedConfig`, or one `ConfigError` listing every problem."""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.config.models import GatewayConfig
from gateway.config.routes import covers, route_warnings
from gateway.config.source import (
    Loc,
    Positions,
    YamlProblems,
    format_loc,
    parse_yaml,
    substitute_env,
)
from gateway.config.tls_files import tls_file_problems
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
    path: str,
    *,
    env: Mapping[str, str] | None = None,
    registry: Registry | None = None,
    shape: type[GatewayConfig] = GatewayConfig,
) -> LoadedConfig:
    """Read and validate the config at `path`; raise `ConfigError` with every problem found."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError([ConfigProblem(path, None, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem(path, None, "", "not UTF-8 text")]) from None
    return parse_config(text, path, env=env, registry=registry, shape=shape)


def parse_config(
    text: str,
    file: str,
    *,
    env: Mapping[str, str] | None = None,
    registry: Registry | None = None,
    shape: type[GatewayConfig] = GatewayConfig,
) -> LoadedConfig:
    """Validate config `text`, naming `file` in errors."""
    registry = registry if registry is not None else Registry.discover()
    substituted, problems = substitute_env(text, os.environ if env is None else env, file)
    try:
        data, positions, read = parse_yaml(substituted, file)
    except YamlProblems as exc:
        raise ConfigError(problems + exc.problems) from None
    problems += read
    if data is None:
        raise ConfigError([*problems, ConfigProblem(file, None, "", "the config is empty")])
    if not isinstance(data, dict):
        raise ConfigError([*problems, ConfigProblem(file, 1, "", "the config must be a mapping")])
    return check_config(data, file, text, positions, registry, shape, problems)


def check_config(
    data: dict[str, Any],
    file: str,
    text: str,
    positions: Positions,
    registry: Registry,
    shape: type[GatewayConfig] = GatewayConfig,
    problems: list[ConfigProblem] | None = None,
) -> LoadedConfig:
    """Validate parsed config `data` against `shape` (`EmbeddedConfig` for the aiohttp
    embedding), adding to the `problems` already found; `ConfigError` lists them all."""
    problems = list(problems or [])
    checker = _Checker(file, positions, registry)
    model: GatewayConfig | None = None
    try:
        model = shape.model_validate(data)
    except ValidationError as exc:
        checker.pydantic(exc, (), shape)
    named, chains = checker.policies(data)
    checker.references(data, model)
    for problem in tls_file_problems(data, os.path.dirname(file)):
        checker.add(problem.loc, problem.message)
    problems += checker.problems
    if problems or model is None:
        raise ConfigError(sorted(problems, key=lambda p: (p.line or 0, p.path)))
    return LoadedConfig(
        model, named, chains, file, text, positions, route_warnings(model, positions)
    )


def check_chain(
    entries: Sequence[Any],
    named: Mapping[str, PolicySpec],
    route: str,
    loc: Loc,
    file: str,
    line: int | None,
    registry: Registry,
) -> list[PolicySpec]:
    """A chain declared in code (the aiohttp embedding): each entry a name of `named` or a
    one-key mapping, checked as a route's `policies`; problems name `file:line` and `loc`."""
    checker = _Checker(file, Positions({(): line} if line else {}), registry)
    raw_named: dict[str, Any] = {name: {spec.kind: {}} for name, spec in named.items()}
    chain = checker.chain(list(entries), loc, named, raw_named, route)
    if checker.problems:
        raise ConfigError(checker.problems)
    return chain


class _Checker:
    """Collects problems with their lines while walking a parsed config."""

    def __init__(self, file: str, positions: Positions, registry: Registry) -> None:
        self.file = file
        self.positions = positions
        self.registry = registry
        self.problems: list[ConfigProblem] = []

    def add(self, loc: Loc, message: str) -> None:
        if self.positions.unread(loc):
            return
        self.problems.append(
            ConfigProblem(self.file, self.positions.line(loc), format_loc(loc), message)
        )

    def pydantic(self, exc: ValidationError, prefix: Loc, model: type[BaseModel]) -> None:
        for error in exc.errors(include_url=False):
            loc = (*prefix, *error["loc"])
            kind = error["type"]
            if kind == "missing":
                self.add(loc, "required key is missing")
            elif kind == "extra_forbidden":
                known = _keys_at(model, error["loc"][:-1])
                self.add(loc, "unknown key" + _did_you_mean(str(error["loc"][-1]), known))
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
            entries = route.get("policies") if isinstance(route, dict) else None
            name = route.get("name") if isinstance(route, dict) else None
            chains.append(
                self.chain(
                    entries if isinstance(entries, list) else [],
                    ("routes", index, "policies"),
                    named,
                    raw_named,
                    name if isinstance(name, str) else format_loc(("routes", index)),
                )
            )
        return named, chains

    def chain(
        self,
        entries: list[Any],
        at: Loc,
        named: Mapping[str, PolicySpec],
        raw_named: Any,
        route: str,
    ) -> list[PolicySpec]:
        """One route's chain: each entry a definition's name or a `TYPE: {options}`."""
        steps: list[_Step] = []
        for position, entry in enumerate(entries):
            loc: Loc = (*at, position)
            if isinstance(entry, str):
                if entry in named:
                    steps.append(_Step(loc, named[entry].kind, named[entry]))
                elif not isinstance(raw_named, dict) or entry not in raw_named:
                    known = ", ".join(sorted(raw_named)) if isinstance(raw_named, dict) else ""
                    self.add(
                        loc,
                        f"no policy named {entry!r}" + (f" (defined: {known})" if known else ""),
                    )
                else:  # a definition with problems of its own, already reported
                    steps.append(_Step(loc, _kind(raw_named[entry]), None))
            else:
                kind = _kind(entry)
                spec = self.declaration(entry, loc)
                steps.append(_Step((*loc, kind) if kind else loc, kind, spec))
        self.order(route, steps, at)
        return [step.spec for step in steps if step.spec is not None]

    def order(self, route: str, steps: list[_Step], prefix: Loc) -> None:
        """Each policy's `requires_before`: the policy types that must run earlier."""
        for at, step in enumerate(steps):
            # Policy.Options may be any pydantic model, not only gateway.policy.Options.
            needs = getattr(step.spec.options, "requires_before", None) if step.spec else None
            for kind, why in (needs() if callable(needs) else {}).items():
                if any(earlier.kind == kind for earlier in steps[:at]):
                    continue
                later = next((s for s in steps[at + 1 :] if s.kind == kind), None)
                this = step.describe()
                if later is None:
                    self.add(step.loc, f"route {route!r} has no {kind} policy before {this}: {why}")
                else:
                    self.add(
                        step.loc,
                        f"route {route!r} runs {this} before {later.describe()} "
                        f"({format_loc((prefix[-1], later.loc[len(prefix)]))}), "
                        f"which must come earlier: {why}",
                    )

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
            self.add(
                loc,
                f"unknown policy type {kind!r} (known: {', '.join(self.registry)})"
                + _did_you_mean(str(kind), list(self.registry)),
            )
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
            self.pydantic(exc, loc, cls.Options)
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
            if strip and not covers(strip, path):
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
        if model.redirect_http is not None:
            if model.tls is None:
                self.add(("redirect_http",), "redirects to HTTPS, so it needs a tls section")
            elif model.redirect_http in (model.listen, model.admin.listen):
                self.add(("redirect_http",), "must be an address of its own")


@dataclass(frozen=True)
class _Step:
    """One entry of a route's chain, as far as it could be read."""

    loc: Loc
    kind: str | None
    spec: PolicySpec | None

    def describe(self) -> str:
        name = self.spec.name if self.spec is not None else None
        return f"{self.kind} {name!r}" if name else str(self.kind)


def _kind(decl: Any) -> str | None:
    """The policy type of a raw `TYPE: {options}` declaration, when it is one."""
    return str(next(iter(decl))) if isinstance(decl, dict) and len(decl) == 1 else None


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f", did you mean {close[0]!r}?" if close else ""


def _keys_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """The keys the model allows in the mapping at `loc` (a path of pydantic's error)."""
    current: list[Any] = [model]
    for part in loc:
        current = [step for option in current for step in _step(option, part)]
    return [key for option in current for key in _fields(option)]


def _options(annotation: Any) -> list[Any]:
    """`Annotated`, `X | None` and unions unwrapped into the types they allow."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _options(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [o for arg in typing.get_args(annotation) for o in _options(arg)]
    return [annotation]


def _step(annotation: Any, part: str | int) -> list[Any]:
    steps = []
    for option in _options(annotation):
        origin, args = typing.get_origin(option), typing.get_args(option)
        if isinstance(option, type) and issubclass(option, BaseModel) and isinstance(part, str):
            field = option.model_fields.get(part)
            steps += [field.annotation] if field is not None else []
        elif origin is list and args and isinstance(part, int):
            steps.append(args[0])
        elif origin is dict and len(args) == 2:
            steps.append(args[1])
    return steps


def _fields(annotation: Any) -> list[str]:
    return [
        key
        for option in _options(annotation)
        if isinstance(option, type) and issubclass(option, BaseModel)
        for key in option.model_fields
    ]
