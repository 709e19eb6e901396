"""The session policy through a real gateway, on the memory store and on real Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gateway.store import Store
from tests.conftest import GatewayFactory
from tests.policies.session.conftest import header_values, login
from tests.support.harness import InProcessGateway
from tests.support.upstream import Upstream

CONFIG = """
upstreams:
  backend: {targets: [UPSTREAM_URL]}
routes:
  - name: account
    match: {path: /account}
    upstream: backend
    policies:
      - session: {cookie: sid, bearer: true, forward: {user_id: X-User-Id, role: X-User-Role}}
  - name: admin
    match: {path: /admin}
    upstream: backend
    policies:
      - session: {cookie: sid, require: {role: [admin, ops]}, forward: {user_id: X-User-Id}}
  - name: public
    match: {path: /public}
    upstream: backend
    policies:
      - session: {cookie: sid, optional: true, forward: {user_id: X-User-Id}}
  - name: keep
    match: {path: /keep}
    upstream: backend
    policies:
      - session:
          cookie: sid
          bearer: true
          forward_credentials: true
          forward: {user_id: X-User-Id}
"""


async def _get(gw: InProcessGateway, path: str, headers: Any = None) -> tuple[int, Any, Any]:
    async with gw.request("GET", path, headers=headers) as response:
        return response.status, response.headers, await response.json()


async def test_cookie_session_forwards_identity_and_replaces_a_spoofed_one(
    make_gateway: GatewayFactory, store: Store, upstream: Upstream
) -> None:
    gw = await make_gateway(CONFIG, store=store)
    sid = await login(store, user_id=42, role="admin")
    spoofed = [("Cookie", f"sid={sid}"), ("X-User-Id", "1"), ("x-user-id", "2")]
    status, _, echo = await _get(gw, "/account/me", spoofed)
    assert status == 200
    assert header_values(echo, "X-User-Id") == ["42"]
    assert header_values(echo, "X-User-Role") == ["admin"]
    assert upstream.hits["/account/me"] == 1


async def test_bearer_session_forwards_identity_and_drops_the_token(
    make_gateway: GatewayFactory, store: Store
) -> None:
    gw = await make_gateway(CONFIG, store=store)
    sid = await login(store, user_id=7, role="user")
    headers = {"Authorization": f"Bearer {sid}", "X-User-Role": "admin"}
    status, _, echo = await _get(gw, "/account", headers)
    assert status == 200
    assert header_values(echo, "X-User-Id") == ["7"]
    assert header_values(echo, "X-User-Role") == ["user"]
    assert header_values(echo, "Authorization") == []


async def test_no_unknown_expired_or_deleted_session_is_401(
    make_gateway: GatewayFactory, store: Store, upstream: Upstream
) -> None:
    gw = await make_gateway(CONFIG, store=store)
    status, headers, body = await _get(gw, "/account")
    assert status == 401
    assert headers["WWW-Authenticate"] == (
        'Bearer realm="gateway", Cookie realm="gateway", cookie-name="sid"'
    )
    assert body == {"error": "unauthenticated", "request_id": headers["X-Request-ID"]}

    unknown = "u" * 43
    status, headers, body = await _get(gw, "/account", {"Cookie": f"sid={unknown}"})
    assert (status, body["error"]) == (401, "unauthenticated")

    sid = await login(store, user_id=1)
    assert (await _get(gw, "/account", {"Cookie": f"sid={sid}"}))[0] == 200
    await store.delete(f"session:{sid}")
    status, _, body = await _get(gw, "/account", {"Cookie": f"sid={sid}"})
    assert (status, body["error"]) == (401, "unauthenticated")

    short_lived = await login(store, ttl=0.02, user_id=1)
    await asyncio.sleep(0.05)  # let the store's expiry pass; nothing to synchronise with
    status, _, body = await _get(gw, "/account", {"Cookie": f"sid={short_lived}"})
    assert (status, body["error"]) == (401, "unauthenticated")
    assert upstream.hits["/account"] == 1


async def test_refused_bearer_token_is_named_in_the_challenge(
    make_gateway: GatewayFactory, store: Store
) -> None:
    gw = await make_gateway(CONFIG, store=store)
    status, headers, _ = await _get(gw, "/account", {"Authorization": "Bearer " + "x" * 30})
    assert status == 401
    assert headers["WWW-Authenticate"].startswith('Bearer realm="gateway", error="invalid_token"')
    status, headers, _ = await _get(gw, "/admin", {"Authorization": "Bearer " + "x" * 30})
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Cookie realm="gateway", cookie-name="sid"'


async def test_require_mismatch_is_403_and_a_list_means_any_of(
    make_gateway: GatewayFactory, store: Store, upstream: Upstream
) -> None:
    gw = await make_gateway(CONFIG, store=store)
    user = await login(store, user_id=1, role="user")
    no_role = await login(store, user_id=2)
    ops = await login(store, user_id=3, role="ops")
    admin = await login(store, user_id=4, role="admin")
    for sid in (user, no_role):
        status, headers, body = await _get(gw, "/admin", {"Cookie": f"sid={sid}"})
        assert status == 403
        assert body == {"error": "forbidden", "request_id": headers["X-Request-ID"]}
    for sid, user_id in ((ops, "3"), (admin, "4")):
        status, _, echo = await _get(gw, "/admin", {"Cookie": f"sid={sid}"})
        assert status == 200
        assert header_values(echo, "X-User-Id") == [user_id]
    assert upstream.hits["/admin"] == 2


async def test_optional_route_passes_anonymous_requests_without_spoofed_identity(
    make_gateway: GatewayFactory, store: Store
) -> None:
    gw = await make_gateway(CONFIG, store=store)
    spoof = {"X-User-Id": "1"}
    for cookie in (None, "sid=" + "n" * 40, "sid=../../etc/passwd"):
        headers = dict(spoof, Cookie=cookie) if cookie else spoof
        status, _, echo = await _get(gw, "/public", headers)
        assert status == 200
        assert header_values(echo, "X-User-Id") == []
        assert header_values(echo, "Cookie") == []
    sid = await login(store, user_id=9)
    status, _, echo = await _get(gw, "/public", dict(spoof, Cookie=f"sid={sid}"))
    assert status == 200
    assert header_values(echo, "X-User-Id") == ["9"]


async def test_credentials_are_stripped_and_other_cookies_kept(
    make_gateway: GatewayFactory, store: Store
) -> None:
    gw = await make_gateway(CONFIG, store=store)
    sid = await login(store, user_id=5)
    cookies = {"Cookie": f"theme=dark; sid={sid}; lang=fr"}
    status, _, echo = await _get(gw, "/account", cookies)
    assert status == 200
    assert header_values(echo, "Cookie") == ["theme=dark; lang=fr"]

    both = {"Cookie": f"sid={sid}; lang=fr", "Authorization": f"Bearer {sid}"}
    status, _, echo = await _get(gw, "/account", both)
    assert status == 200
    assert header_values(echo, "Cookie") == ["lang=fr"]
    assert header_values(echo, "Authorization") == []

    basic = {"Cookie": f"sid={sid}", "Authorization": "Basic dXNlcjpwYXNz"}
    status, _, echo = await _get(gw, "/account", basic)
    assert status == 200
    assert header_values(echo, "Authorization") == ["Basic dXNlcjpwYXNz"]  # not ours


async def test_forward_credentials_keeps_cookie_and_token(
    make_gateway: GatewayFactory, store: Store
) -> None:
    gw = await make_gateway(CONFIG, store=store)
    sid = await login(store, user_id=6)
    headers = {"Cookie": f"theme=dark; sid={sid}", "Authorization": f"Bearer {sid}"}
    status, _, echo = await _get(gw, "/keep", headers)
    assert status == 200
    assert header_values(echo, "Cookie") == [f"theme=dark; sid={sid}"]
    assert header_values(echo, "Authorization") == [f"Bearer {sid}"]
    assert header_values(echo, "X-User-Id") == ["6"]


async def test_results_are_counted_by_route_and_logged_without_the_id(
    make_gateway: GatewayFactory, store: Store
) -> None:
    gw = await make_gateway(CONFIG, store=store)
    sid = await login(store, user_id=1, role="user")
    await _get(gw, "/account", {"Cookie": f"sid={sid}"})
    await _get(gw, "/account", {"Authorization": f"Bearer {sid}"})
    await _get(gw, "/account")
    await _get(gw, "/account", {"Cookie": "sid=short"})
    await _get(gw, "/admin", {"Cookie": f"sid={sid}"})
    await _get(gw, "/public")
    async with gw.admin("GET", "/metrics") as response:
        metrics = await response.text()
    for route, result, count in [
        ("account", "ok", 2),
        ("account", "missing", 1),
        ("account", "invalid", 1),
        ("admin", "forbidden", 1),
        ("public", "missing", 1),
    ]:
        line = f'gateway_session_results_total{{result="{result}",route="{route}"}} {count}.0'
        assert line in metrics
    lines = gw.access_lines()
    assert [line["session"] for line in lines] == [
        "ok",
        "ok",
        "missing",
        "invalid",
        "forbidden",
        "missing",
    ]
    written = Path(gw.log_file.name).read_bytes()  # noqa: ASYNC240 - a small local file
    assert written
    assert sid.encode() not in written


async def test_a_named_definition_serves_several_routes(
    make_gateway: GatewayFactory, store: Store
) -> None:
    config = """
upstreams:
  backend: {targets: [UPSTREAM_URL]}
policies:
  login:
    session: {cookie: sid, forward: {user_id: X-User-Id}}
routes:
  - {name: a, match: {path: /a}, upstream: backend, policies: [login]}
  - {name: b, match: {path: /b}, upstream: backend, policies: [login]}
"""
    gw = await make_gateway(config, store=store)
    sid = await login(store, user_id=3)
    for path in ("/a", "/b"):
        status, _, echo = await _get(gw, path, {"Cookie": f"sid={sid}", "X-User-Id": "0"})
        assert (status, header_values(echo, "X-User-Id")) == (200, ["3"])
    async with gw.admin("GET", "/metrics") as response:
        metrics = await response.text()
    assert 'gateway_session_results_total{result="ok",route="a"} 1.0' in metrics
    assert 'gateway_session_results_total{result="ok",route="b"} 1.0' in metrics
