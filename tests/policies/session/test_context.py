"""The session's fields reach later policies through `request.context`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.config.loader import parse_config
from gateway.http.messages import Handler, Request, Response
from gateway.policy import Policy
from gateway.registry import Registry
from gateway.store import Store
from tests.policies.session.conftest import header_values, login
from tests.support.harness import InProcessGateway
from tests.support.upstream import Upstream


class Observe(Policy):
    """Test-only: tells the upstream what the context held when this policy ran."""

    async def __call__(self, request: Request, call_next: Handler) -> Response:
        request.headers["X-Seen-Session"] = json.dumps(request.context.get("session"))
        request.headers["X-Seen-Has-Session"] = str("session" in request.context)
        return await call_next(request)


CONFIG = """
upstreams:
  backend: {targets: [UPSTREAM_URL]}
routes:
  - name: whole
    match: {path: /whole}
    upstream: backend
    policies:
      - session: {cookie: sid, forward: {user_id: X-User-Id}}
      - observe: {}
  - name: some
    match: {path: /some}
    upstream: backend
    policies:
      - session: {cookie: sid, forward: {user_id: X-User-Id}, require: {role: [admin, user]},
                  fields: [plan]}
      - observe: {}
  - name: optional
    match: {path: /optional}
    upstream: backend
    policies:
      - session: {cookie: sid, optional: true}
      - observe: {}
"""

Start = Callable[[str, Store], Awaitable[InProcessGateway]]


@pytest.fixture
async def start(upstream: Upstream) -> AsyncIterator[Start]:
    """A gateway whose registry also knows the test-only `observe` policy."""
    registry = Registry({"session": Registry.discover()["session"], "observe": Observe})
    started: list[InProcessGateway] = []

    async def make(text: str, store: Store) -> InProcessGateway:
        loaded = parse_config(
            text.replace("UPSTREAM_URL", upstream.url), "test.yaml", env={}, registry=registry
        )
        gateway = await InProcessGateway(loaded, store, registry).start()
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        await gateway.close()


async def _seen(gw: InProcessGateway, path: str, cookie: str | None) -> tuple[object, list[str]]:
    headers = {"Cookie": cookie} if cookie else {}
    async with gw.request("GET", path, headers=headers) as response:
        assert response.status == 200
        echo = await response.json()
    seen = json.loads(header_values(echo, "X-Seen-Session")[0])
    return seen, header_values(echo, "X-Seen-Has-Session")


async def test_the_whole_session_is_in_the_context_by_default(start: Start, store: Store) -> None:
    gw = await start(CONFIG, store)
    sid = await login(store, user_id=42, role="admin", plan="pro")
    seen, has = await _seen(gw, "/whole", f"sid={sid}")
    assert seen == {"user_id": "42", "role": "admin", "plan": "pro"}
    assert has == ["True"]


async def test_fields_limits_the_context_to_what_is_named(start: Start, store: Store) -> None:
    gw = await start(CONFIG, store)
    sid = await login(store, user_id=42, role="admin", plan="pro", secret="s")
    seen, _ = await _seen(gw, "/some", f"sid={sid}")
    assert seen == {"user_id": "42", "role": "admin", "plan": "pro"}


async def test_anonymous_requests_have_no_session_in_the_context(
    start: Start, store: Store
) -> None:
    gw = await start(CONFIG, store)
    for cookie in (None, "sid=" + "q" * 40):
        seen, has = await _seen(gw, "/optional", cookie)
        assert (seen, has) == (None, ["False"])
    sid = await login(store, user_id=1)
    seen, has = await _seen(gw, "/optional", f"sid={sid}")
    assert (seen, has) == ({"user_id": "1"}, ["True"])
