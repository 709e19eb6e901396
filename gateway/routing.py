"""Route matching: first match in file order; host, segment-aware path prefix, methods."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.config.models import RouteConfig
from gateway.http.paths import BadPath

if TYPE_CHECKING:
    from gateway.http.messages import Handler
    from gateway.policy import Policy
    from gateway.upstream.pool import Upstream


@dataclass(eq=False)
class Route:
    """A route as served: its matcher, its composed chain and where it forwards."""

    config: RouteConfig
    upstream: Upstream
    handler: Handler
    """The composed chain: policies outermost first, then the proxy."""
    policies: list[Policy]
    max_request_body: int
    name: str = field(init=False)
    _prefix: str = field(init=False)
    _host: str | None = field(init=False)
    _wildcard: str | None = field(init=False)
    methods: frozenset[str] | None = field(init=False)
    siblings: list[Route] = field(init=False, default_factory=list)
    """Later routes with the same host and path: they take the methods this one lacks."""

    def __post_init__(self) -> None:
        match = self.config.match
        self.name = self.config.name
        self._prefix = "" if match.path == "/" else match.path
        host = match.host
        self._wildcard = host[1:] if host and host.startswith("*.") else None
        self._host = None if self._wildcard else host
        self.methods = frozenset(match.methods) if match.methods else None

    def takes(self, host: str, path: str) -> bool:
        """Whether host and path match (methods aside)."""
        prefix = self._prefix
        if prefix and not (
            path.startswith(prefix) and (len(path) == len(prefix) or path[len(prefix)] == "/")
        ):
            return False
        if self._host is not None:
            return host == self._host or _without_port(host) == self._host
        if self._wildcard is not None:
            return _without_port(host).endswith(self._wildcard)
        return True

    def rewrite(self, path: str) -> str:
        """The path sent upstream, after `strip_prefix`."""
        strip = self.config.strip_prefix
        if not strip or strip == "/":
            return path
        return path[len(strip) :] or "/"


def _same_match(a: Route, b: Route) -> bool:
    return a._prefix == b._prefix and a.config.match.host == b.config.match.host


def _first_segment(path: str) -> str:
    return path[1:].partition("/")[0]


def _without_port(host: str) -> str:
    if host.endswith("]"):
        return host
    return host.rsplit(":", 1)[0] if ":" in host else host


class NotAllowed:
    """Some route takes the path, but not with this method."""

    __slots__ = ("allow",)

    def __init__(self, allow: set[str]) -> None:
        self.allow = ", ".join(sorted(allow))


ANY_METHOD = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})
"""What `Allow` names for a route that takes any method (CONNECT excepted)."""

_SEPARATOR = re.compile(r"%2F|%5C|\\")
_SLASHES = re.compile(r"/{2,}")
_SEGMENT_PARAMS = re.compile(r";[^/]*")


class Router:
    """Finds the route for a request."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes
        for index, route in enumerate(routes):
            route.siblings = [later for later in routes[index + 1 :] if _same_match(route, later)]
        # Routes that can take a path, by the path's first segment (file order kept): a
        # prefix's own first segment, and every route whose prefix is `/`.
        self._catch_all = [route for route in routes if not route._prefix]
        self._by_segment: dict[str, list[Route]] = {}
        for route in routes:
            if route._prefix:
                self._by_segment.setdefault(_first_segment(route._prefix), [])
        for segment, candidates in self._by_segment.items():
            candidates.extend(
                route
                for route in routes
                if not route._prefix or _first_segment(route._prefix) == segment
            )

    def match(self, host: str, path: str, method: str) -> Route | NotAllowed | None:
        """The route for a normalised `path` (see `gateway.http.paths`); `BadPath` when the path
        would belong to another route for an upstream that decodes encoded separators.

        The first route whose host and path match owns the request. A method it does not
        list is 405, unless a sibling (a later route with the same host and path) lists it:
        `methods` restricts a route, it never lets a request fall through to a wider route
        that would skip the owner's policies."""
        if "%2F" in path or "%5C" in path or "\\" in path or ";" in path:
            self._refuse_ambiguous(host, path)
        owner = self._taker(host, path, self._by_segment.get(_first_segment(path), self._catch_all))
        if owner is None:
            return None
        # A reverse proxy opens no tunnels: the bytes after a CONNECT head are no body, and
        # forwarding them framed as one would let a client smuggle requests to the upstream.
        if method != "CONNECT":
            if owner.methods is None or method in owner.methods:
                return owner
            for sibling in owner.siblings:
                if sibling.methods is None or method in sibling.methods:
                    return sibling
        allowed = set(owner.methods or ANY_METHOD)
        for sibling in owner.siblings:
            allowed |= sibling.methods or ANY_METHOD
        return NotAllowed(allowed)

    def _refuse_ambiguous(self, host: str, path: str) -> None:
        # WSGI's PATH_INFO (Flask, Django), aiohttp's request.path and others decode %2F into
        # a separator, some treat a backslash as one, servlet containers drop `;params` from
        # segments: `/admin%2Fusers` or `/admin;x/users` routed as a public path would be
        # `/admin/users` upstream, past the admin route's policies. Within one route such a
        # spelling is data (`/repos/group%2Fproject`) and passes.
        other = _SLASHES.sub("/", _SEPARATOR.sub("/", _SEGMENT_PARAMS.sub("", path)))
        if self._taker(host, other, self.routes) is not self._taker(host, path, self.routes):
            raise BadPath("an encoded slash, backslash or ';' in the path changes its route")

    @staticmethod
    def _taker(host: str, path: str, candidates: list[Route]) -> Route | None:
        for route in candidates:
            if route.takes(host, path):
                return route
        return None
