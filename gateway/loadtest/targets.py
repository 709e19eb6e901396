"""What each route of a config is sent, and what its policies are expected to do.

Built once from a `LoadedConfig` and a plan, before Locust starts: the users (users.py) send
from it, the verdict (verdict.py) judges by it. The built-in policies' options are read here by
their documented names; the core imports no policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.config.loader import LoadedConfig, PolicySpec
from gateway.config.routes import covers
from gateway.loadtest.limits import Limit
from gateway.loadtest.plan import Plan, RoutePlan

ANONYMOUS = "\x00anonymous"
_DEFAULT_SESSION_PREFIX = "session:"


@dataclass(frozen=True)
class Limiter:
    """A `rate_limit` step: its buckets are `(scope, identity)`, shared by every route that
    uses the same named definition."""

    scope: str
    limits: tuple[Limit, ...]
    key: tuple[str, ...]

    def describe(self) -> str:
        return " and ".join(limit.describe() for limit in self.limits) + f" by {','.join(self.key)}"


@dataclass(frozen=True)
class SessionStep:
    """A `session` step: where it reads the id, and the store hash layout it reads."""

    cookie: str | None
    bearer: bool
    prefix: str
    optional: bool
    fields: dict[str, str | None]
    """Field -> required value (None: any; a distinct value is written per session)."""


@dataclass(frozen=True)
class Step:
    """One policy of a route's chain, as far as the verdict models it."""

    kind: str  # rate_limit, session, cache, or another policy type (passes everything)
    limiter: Limiter | None = None
    session: SessionStep | None = None


@dataclass
class Target:
    """One route under load: what to send and which steps answer it."""

    route: str
    method: str
    paths: list[str]
    host: str | None
    rate: float
    plan: RoutePlan
    steps: list[Step] = field(default_factory=list)
    key_headers: list[str] = field(default_factory=list)
    key_queries: list[str] = field(default_factory=list)

    @property
    def session(self) -> SessionStep | None:
        return next((s.session for s in self.steps if s.session is not None), None)

    @property
    def cached(self) -> bool:
        return any(step.kind == "cache" for step in self.steps)

    @property
    def limiters(self) -> list[Limiter]:
        return [s.limiter for s in self.steps if s.limiter is not None]


def build_targets(
    loaded: LoadedConfig, plan: Plan, rate: float
) -> tuple[list[Target], dict[str, str]]:
    """(targets, route -> why it is not load-tested). `rate` is shared by weight among the
    routes without a `rate` of their own in the plan."""
    model = loaded.model
    targets: list[Target] = []
    skipped: dict[str, str] = {}
    for index, (route, chain) in enumerate(zip(model.routes, loaded.chains, strict=True)):
        route_plan = plan.for_route(route.name)
        if route_plan.skip:
            skipped[route.name] = "skip: true in the plan"
            continue
        if route.websocket:
            skipped[route.name] = "a WebSocket route"
            continue
        methods = route.match.methods
        method = route_plan.method or ("GET" if not methods or "GET" in methods else methods[0])
        method = method.upper()
        host = route.match.host
        if host is not None and host.startswith("*."):
            host = "loadtest" + host[1:]
        paths = route_plan.paths or [route.match.path]
        wrong = [p for p in paths if _owner(loaded, host, p) != index]
        if wrong:
            owner = _owner(loaded, host, wrong[0])
            taken = f"route {model.routes[owner].name!r}" if owner is not None else "no route"
            skipped[route.name] = f"path {wrong[0]} goes to {taken}: give paths in --plan"
            continue
        target = Target(route.name, method, paths, host, route_plan.rate or 0.0, route_plan)
        target.steps = [_step(spec, route.name) for spec in chain]
        for limiter in target.limiters:
            for spec in limiter.key:
                kind, _, name = spec.partition(".")
                if kind == "header" and name not in route_plan.headers:
                    target.key_headers.append(name)
                elif kind == "query":
                    target.key_queries.append(name)
        targets.append(target)
    shared = [t for t in targets if t.plan.rate is None]
    weights = sum(t.plan.weight for t in shared)
    for target in shared:
        target.rate = rate * target.plan.weight / weights if weights else 0.0
    return targets, skipped


def _owner(loaded: LoadedConfig, host: str | None, path: str) -> int | None:
    """The index of the route that takes `path` on `host` (file order, prefixes by segment)."""
    for index, route in enumerate(loaded.model.routes):
        match = route.match
        wildcard = match.host is not None and match.host.startswith("*.")
        suffix = match.host[1:] if wildcard and match.host else None
        if (
            match.host is not None
            and host != match.host
            and not (suffix and (host or "").endswith(suffix))
        ):
            continue
        if covers(match.path, path):
            return index
    return None


def _step(spec: PolicySpec, route: str) -> Step:
    options: Any = spec.options
    if spec.kind == "rate_limit":
        scope = f"policy:{spec.name}" if spec.name else f"route:{route}"
        entries = options.limits if options.limits is not None else [options]
        limits = tuple(_limit(entry) for entry in entries)
        return Step("rate_limit", limiter=Limiter(scope, limits, tuple(options.key.specs)))
    if spec.kind == "session":
        fields: dict[str, str | None] = dict.fromkeys(options.forward)
        for name, allowed in options.require.items():
            fields[name] = allowed[0]
        prefix = getattr(options, "key_prefix", _DEFAULT_SESSION_PREFIX)
        session = SessionStep(options.cookie, options.bearer, prefix, options.optional, fields)
        return Step("session", session=session)
    return Step(spec.kind)


def _limit(entry: Any) -> Limit:
    if entry.algorithm == "sliding_window":
        return Limit("sliding_window", limit=entry.limit, window=entry.window,
                     approximate=entry.approximate)  # fmt: skip
    return Limit("token_bucket", count=entry.rate.count, period=entry.rate.period,
                 burst=entry.burst, cost=entry.cost)  # fmt: skip


def session_fields(targets: Sequence[Target]) -> dict[str, dict[str, str | None]]:
    """Key prefix -> the fields sessions need there: what session steps forward or require,
    and what limiters count by (`session.FIELD`)."""
    out: dict[str, dict[str, str | None]] = {}
    for target in targets:
        session = target.session
        if session is None:
            continue
        fields = out.setdefault(session.prefix, {})
        for name, value in session.fields.items():
            if fields.get(name) is None:
                fields[name] = value
        for limiter in target.limiters:
            for spec in limiter.key:
                kind, _, name = spec.partition(".")
                if kind == "session":
                    fields.setdefault(name, None)
        if not fields:
            fields["user"] = None  # a hash needs one field
    return out


Record = tuple[str, float, int, str, int, int]
"""(route, send time, status, X-Cache, credential, key number); status 0: no answer;
credential -2 none, -1 an unknown session id, n >= 0 the n-th valid session."""
NO_CREDENTIAL, UNKNOWN_SESSION = -2, -1


def explain(target: Target, status: int, credential: int) -> str | None:
    """Why an answer is wrong for the route's policies (None: it is what they declare)."""
    if status == 0:
        return "no answer"
    session = target.session
    if session is not None and credential == UNKNOWN_SESSION and not session.optional:
        return None if status == 401 else f"an unknown session was answered {status}"
    if credential >= 0 and status in (401, 403):
        return f"a valid session was answered {status}"
    if status == 429 and target.limiters:
        return None
    if status >= 400:
        return f"status {status}"
    return None
