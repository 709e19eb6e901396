"""Warnings about the route table: routes that can never match, and `methods` that an
operator may read as a fall-through (`gateway.routing` holds the rule they describe)."""

from __future__ import annotations

from gateway.config.models import GatewayConfig, RouteConfig
from gateway.config.source import Positions


def covers(prefix: str, path: str) -> bool:
    """Whether the segment-aware `prefix` takes every path that starts with `path`."""
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def route_warnings(model: GatewayConfig, positions: Positions) -> list[str]:
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
    if not (host_ok and covers(a.path, b.path)):
        return False
    if not methods or not _same_match(earlier, later):
        return True
    return a.methods is None or (b.methods is not None and set(b.methods) <= set(a.methods))
