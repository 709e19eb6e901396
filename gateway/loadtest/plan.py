"""`--plan FILE`: per-route weights, rates, paths, headers, bodies and thresholds (YAML).

Validated like the config itself: every problem names the file, the line and the key path
(`plan.yaml:7: routes.catalog.p99_ms: input should be greater than 0`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.config.source import YamlProblems, format_loc, parse_yaml
from gateway.errors import ConfigError, ConfigProblem


class Thresholds(BaseModel):
    """What a route must show for the verdict to pass; every field has a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p99_ms: float = Field(1000.0, gt=0, description="p99 latency ceiling. Default: 1000 ms.")
    min_rps: float = Field(0.0, ge=0, description="Achieved requests/s floor. Default: 0.")
    max_error_share: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Share of answers no policy explains (5xx, no answer, a 401 for a valid "
        "session...). Default: 0.01.",
    )
    min_hit_share: float = Field(
        0.5, ge=0, le=1, description="Cached routes: X-Cache HIT or STALE share. Default: 0.5."
    )
    admit_tolerance: float = Field(
        0.1,
        ge=0,
        description="Rate-limited routes: relative slack on the admitted count (plus 2 per "
        "bucket). Default: 0.1.",
    )


class RoutePlan(Thresholds):
    """How one route is exercised, and its thresholds."""

    skip: bool = Field(False, description="Send this route nothing. Default: false.")
    weight: float = Field(1.0, gt=0, description="Share of `--rate` by weight. Default: 1.")
    rate: float | None = Field(
        None, gt=0, description="Requests/s for this route, instead of a share. Default: none."
    )
    method: str | None = Field(
        None, description="Default: GET when the route takes it, else its first method."
    )
    paths: list[str] | None = Field(
        None, min_length=1, description="Paths to send, under the route's prefix. Default: it."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Sent on every request.")
    body: str | dict[str, Any] | list[Any] | None = Field(
        None, description="Request body: text as is, a mapping or list as JSON. Default: none."
    )
    keys: int = Field(
        4,
        ge=1,
        le=10_000,
        description="Distinct values sent for each `header.X` / `query.X` rate-limit key. "
        "Default: 4.",
    )
    invalid_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Session routes: share sent with an unknown session. Default: 0.2 (1 "
        "without --sessions).",
    )


class Plan(BaseModel):
    """The whole plan file: `defaults` for every route, then `routes` by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: dict[str, Any] = Field(default_factory=dict)
    routes: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def for_route(self, name: str) -> RoutePlan:
        """The route's plan, defaults merged in (validated by `load_plan` already)."""
        return RoutePlan.model_validate({**self.defaults, **self.routes.get(name, {})})


def load_plan(path: str | None, routes: list[str]) -> Plan:
    """Read and validate the plan at `path` (None: the empty plan) for a config with `routes`;
    raise `ConfigError` listing every problem with its line and key path."""
    if path is None:
        return Plan()
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError([ConfigProblem(path, None, "", f"cannot read: {exc.strerror}")]) from None
    try:
        data, positions, problems = parse_yaml(text, path)
    except YamlProblems as exc:
        raise ConfigError(exc.problems) from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(path, 1, "", "the plan must be a mapping")])

    def add(loc: tuple[str | int, ...], message: str) -> None:
        problems.append(ConfigProblem(path, positions.line(loc), format_loc(loc), message))

    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            add(tuple(error["loc"]), _message(error))
        raise ConfigError(problems) from None
    entries: list[tuple[tuple[str | int, ...], dict[str, Any]]] = [(("defaults",), plan.defaults)]
    for name, entry in plan.routes.items():
        if name not in routes:
            add(("routes", name), f"no route named {name!r} (routes: {', '.join(routes)})")
            continue
        entries.append((("routes", name), {**plan.defaults, **entry}))
    for loc, entry in entries:
        try:
            RoutePlan.model_validate(entry)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                where = (*loc, *error["loc"])
                # A bad default is reported once, under `defaults`.
                key = error["loc"][0]
                own = plan.routes[str(loc[1])] if loc[0] == "routes" else {}
                if loc[0] == "routes" and key in plan.defaults and key not in own:
                    continue
                add(where, _message(error))
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: (p.line or 0, p.path)))
    return plan


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    return message[:1].lower() + message[1:]
