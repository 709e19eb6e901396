"""The `session` policy: authenticate a request by a session the app keeps in the store.

Per request, in this order:
1. the identity headers of `forward` are removed, whatever follows (no spoofing);
2. the session id is taken from `Authorization: Bearer` and/or the cookie, and that
   credential is removed from the upstream request unless `forward_credentials`;
3. an id that is not 16-256 URL-safe characters is refused without asking the store;
4. one store call reads the session (and slides its expiry when due);
5. `require` is checked, the session goes into `request.context["session"]`, the identity
   headers are set, and the rest of the chain runs.
"""

from __future__ import annotations

from typing import Any, ClassVar

from gateway.api import (
    AdminEndpoint,
    Handler,
    HTTPError,
    Policy,
    PolicyContext,
    Request,
    Response,
    StoreUnavailable,
)
from policies.session import admin
from policies.session.config import SessionOptions
from policies.session.ids import challenge, take_bearer, take_cookie, valid_id
from policies.session.lookup import Reader, Reads

RESULTS = ("ok", "missing", "invalid", "forbidden", "store_error")
"""Metric and access-log values: `missing` no credential; `invalid` a malformed id or no such
session (unknown, expired, revoked); `forbidden` a `require` mismatch; `store_error` the store
did not answer in time."""


class Unauthenticated(HTTPError):
    """401: no valid session (the policy adds the `WWW-Authenticate` challenge)."""

    status = 401
    code = "unauthenticated"


class Forbidden(HTTPError):
    """403: a valid session that does not meet `require`."""

    status = 403
    code = "forbidden"


class SessionStoreUnavailable(HTTPError):
    """503: the store could not say whether the session exists; never let such a request in."""

    status = 503
    code = "session_store_unavailable"


class Session(Policy):
    """Authenticates requests by a session id (cookie or bearer token) against a store hash."""

    Options = SessionOptions
    admin_endpoints: ClassVar[dict[str, AdminEndpoint]] = {
        "POST /-/session/create": admin.create,
        "POST /-/session/revoke": admin.revoke,
    }

    def __init__(self, options: SessionOptions, context: PolicyContext) -> None:
        super().__init__(options, context)
        self.options: SessionOptions = options
        # Everything a request needs is decided here, once.
        self._cookie = options.cookie
        self._bearer = options.bearer
        self._keep = options.forward_credentials
        self._optional = options.optional
        self._prefix = options.key_prefix
        self._strip = tuple(options.forward.values())
        self._forward = tuple(options.forward.items())
        self._require = tuple((name, frozenset(values)) for name, values in options.require.items())
        names: list[str] | None = None
        if options.fields is not None:
            names = list(dict.fromkeys([*options.forward, *options.require, *options.fields]))
        reader = Reader(names, options.sliding_ttl or 0.0, options.refresh_interval)
        self._reads = Reads(context.store, reader)
        realm, cookie, bearer = options.realm, options.cookie, options.bearer
        self._challenge = {"WWW-Authenticate": challenge(realm, cookie, bearer, False)}
        self._invalid_token = {"WWW-Authenticate": challenge(realm, cookie, bearer, True)}
        counter = context.metrics.counter(
            "gateway_session_results_total",
            "Session checks by route and result.",
            ["route", "result"],
        )
        self._counter = counter
        self._children: dict[str, dict[str, Any]] = {
            route: {result: counter.labels(route, result) for result in RESULTS}
            for route in context.routes
        }

    def _count(self, request: Request, result: str) -> None:
        request.log["session"] = result
        route = request.route.name
        children = self._children.get(route)
        if children is None:  # a route this instance was not built for (not expected)
            children = self._children[route] = {
                name: self._counter.labels(route, name) for name in RESULTS
            }
        children[result].inc()

    async def __call__(self, request: Request, call_next: Handler) -> Response:
        headers = request.headers
        for name in self._strip:
            headers.popall(name, None)
        session_id = None
        bearer = False
        if self._bearer:
            session_id = take_bearer(headers, self._keep)
            bearer = session_id is not None
        if self._cookie is not None:
            cookie = take_cookie(headers, self._cookie, self._keep)
            if session_id is None:
                session_id = cookie
        if session_id is None:
            self._count(request, "missing")
            if self._optional:
                return await call_next(request)
            raise Unauthenticated(headers=self._challenge)
        session = None
        if valid_id(session_id):
            try:
                session = await self._reads.read(self._prefix + session_id)
            except StoreUnavailable:
                self._count(request, "store_error")
                raise SessionStoreUnavailable() from None
        if session is None:
            self._count(request, "invalid")
            if self._optional:
                return await call_next(request)
            raise Unauthenticated(headers=self._invalid_token if bearer else self._challenge)
        for name, allowed in self._require:
            if session.get(name) not in allowed:
                self._count(request, "forbidden")
                raise Forbidden()
        request.context["session"] = session
        for name, header in self._forward:
            value = session.get(name)
            if value is not None:
                headers[header] = value
        self._count(request, "ok")
        return await call_next(request)

    def describe(self) -> str:
        options = self.options
        sources = [f"cookie {options.cookie}"] if options.cookie else []
        if options.bearer:
            sources.append("bearer")
        line = f"{self.context.name} ({' or '.join(sources)}"
        if options.forward:
            line += "; forwards " + ", ".join(options.forward.values())
        if options.require:
            line += "; requires " + ", ".join(options.require)
        if options.optional:
            line += "; optional"
        return line + ")"
