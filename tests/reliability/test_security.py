"""Claims of docs/security.md that no other test held: the admin token on every endpoint,
the X-Forwarded-For walk, line breaks never forwarded, a bug answered without its traceback,
the default body limit."""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config.loader import parse_config
from gateway.http.headers import Forwarding
from gateway.http.messages import Handler, Request, Response
from gateway.policy import Policy
from gateway.registry import Registry
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from tests.conftest import GatewayFactory
from tests.support.harness import InProcessGateway
from tests.support.upstream import Upstream

TOKEN = "s3cret-admin-token"
ADMIN_CONFIG = f"""
admin: {{token: '{TOKEN}'}}
upstreams:
  backend: {{targets: [UPSTREAM_URL]}}
routes:
  - name: site
    match: {{path: /}}
    upstream: backend
    policies:
      - cache: {{ttl: 10s}}
      - session: {{cookie: sid, optional: true}}
"""
ADMIN_CALLS = [
    ("GET", "/-/ready", None),
    ("GET", "/metrics", None),
    ("GET", "/-/routes", None),
    ("GET", "/-/stats", None),
    ("GET", "/-/top?route=site", None),
    ("POST", "/-/reload", None),
    ("POST", "/-/cache/purge", {"route": "site"}),
    ("POST", "/-/session/create", {"fields": {"user_id": "1"}, "ttl": "1m"}),
    ("POST", "/-/session/revoke", {"id": "x" * 20}),
]


async def test_every_admin_endpoint_but_health_needs_the_token(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return real(given, expected)

    monkeypatch.setattr("gateway.admin.endpoints.hmac.compare_digest", spy)
    gw = await make_gateway(ADMIN_CONFIG)
    async with gw.admin("GET", "/-/health") as response:
        assert response.status == 200  # liveness: open, so orchestrators need no secret
    assert not compared
    wrong = "x" * len(TOKEN)  # same length: only the bytes differ
    refusals = (
        {},
        {"Authorization": f"Bearer {wrong}"},
        {"Authorization": TOKEN},
        {"Authorization": f"bearer {TOKEN}"},
    )
    for method, path, body in ADMIN_CALLS:
        for headers in refusals:
            async with gw.admin(method, path, json=body, headers=headers) as response:
                assert response.status == 401, (method, path, headers)
                assert await response.json() == {"error": "unauthorized"}
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with gw.admin(method, path, json=body, headers=auth) as response:
            assert response.status != 401, (method, path)
    # Every check went through the constant-time comparison, never `==`.
    assert len(compared) == len(ADMIN_CALLS) * (len(refusals) + 1)
    assert all(expected == f"Bearer {TOKEN}".encode() for _, expected in compared)


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),  # an untrusted peer's header is ignored
        ("10.0.0.2", "1.2.3.4", "1.2.3.4"),
        ("10.0.0.2", "1.2.3.4, 10.0.0.7", "1.2.3.4"),  # trusted hops are skipped from the right
        ("10.0.0.2", "6.6.6.6, 1.2.3.4", "1.2.3.4"),  # the client's own prefix is not believed
        ("10.0.0.2", "10.0.0.5, 10.0.0.7", "10.0.0.2"),  # only proxies: the peer
        ("10.0.0.2", "not-an-ip, 10.0.0.7", "10.0.0.2"),  # garbage never becomes the key
        ("10.0.0.2", "1.2.3.4,, ,10.0.0.7", "1.2.3.4"),
        ("10.0.0.2", "", "10.0.0.2"),
    ],
)
def test_x_forwarded_for_is_walked_from_the_right_up_to_the_first_untrusted_hop(
    peer: str, forwarded_for: str, client: str
) -> None:
    forwarding = Forwarding(parse_config(_TRUSTED, "c.yaml", env={}).model.trusted_proxies)
    assert forwarding.client_ip(peer, forwarded_for) == client


_TRUSTED = """
trusted_proxies: [10.0.0.0/8]
upstreams: {b: {targets: ['http://127.0.0.1:1']}}
routes: [{name: r, upstream: b}]
"""


async def test_line_breaks_in_forwarded_identity_never_reach_the_upstream(
    make_gateway: GatewayFactory, redis_store: RedisStore, upstream: Upstream
) -> None:
    config = """
upstreams:
  backend: {targets: [UPSTREAM_URL]}
routes:
  - name: account
    match: {path: /}
    upstream: backend
    policies:
      - session: {cookie: sid, forward: {user_id: X-User-Id, role: X-Role}}
"""
    sid = "s" * 32
    # What an app might store from a sign-up form: a value with a header in it.
    await redis_store.hset(
        f"session:{sid}", {"user_id": "42\r\nX-Admin: yes", "role": "user"}, ttl=60
    )
    gw = await make_gateway(config, store=redis_store)
    async with gw.request("GET", "/me", headers={"Cookie": f"sid={sid}"}) as response:
        assert response.status == 200
        seen = await response.json()
    names = [name.lower() for name, _ in seen["header_list"]]
    assert "x-admin" not in names
    assert "x-user-id" not in names  # the broken header is dropped whole
    assert seen["headers"]["X-Role"] == "user"  # the rest still goes


class _Buggy(Policy):
    """A third-party policy with a bug."""

    async def __call__(self, request: Request, call_next: Handler) -> Response:
        raise KeyError("secret-detail-" + request.headers.get("X-Secret", ""))


@pytest.fixture
async def buggy(upstream: Upstream) -> AsyncIterator[InProcessGateway]:
    text = f"""
upstreams:
  backend: {{targets: [{upstream.url}]}}
routes:
  - name: r
    match: {{path: /}}
    upstream: backend
    policies: [{{buggy: {{}}}}]
"""
    registry = Registry({"buggy": _Buggy})
    loaded = parse_config(text, "c.yaml", env={}, registry=registry)
    gateway = await InProcessGateway(loaded, MemoryStore(), registry).start()
    yield gateway
    await gateway.close()


async def test_a_bug_is_a_json_500_and_its_traceback_stays_in_the_log(
    buggy: InProcessGateway, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="gateway.app"):
        async with buggy.request("GET", "/x", headers={"X-Secret": "hunter2"}) as response:
            assert response.status == 500
            text = await response.text()
    payload: dict[str, Any] = json.loads(text)
    assert payload == {"error": "internal_error", "request_id": response.headers["X-Request-ID"]}
    assert "Traceback" not in text
    assert "hunter2" not in text
    assert not upstream.hits
    [record] = [r for r in caplog.records if r.exc_info]
    assert payload["request_id"] in record.getMessage()  # the operator can find it


async def test_eleven_mib_over_the_default_limit_is_413_declared_or_streamed(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    config = """
upstreams:
  backend: {targets: [UPSTREAM_URL]}
routes:
  - {name: all, match: {path: /}, upstream: backend}
"""
    gw = await make_gateway(config)  # max_request_body: 10MiB, the default
    body = b"x" * (11 * 1024 * 1024)
    async with gw.request("POST", "/upload", data=body) as response:
        assert response.status == 413
        assert (await response.json())["error"] == "payload_too_large"
    assert not upstream.hits  # refused from Content-Length, before anything was forwarded

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(11):
            yield b"y" * (1024 * 1024)

    try:
        async with gw.request("POST", "/stream", data=chunks()) as response:
            assert response.status == 413
    except aiohttp.ClientOSError:
        pass  # the gateway may close while the client is still sending: also a refusal
    async with gw.request("POST", "/fits", data=b"z" * (9 * 1024 * 1024)) as response:
        assert response.status == 200
        assert (await response.json())["body_bytes"] == 9 * 1024 * 1024


async def test_no_spelling_of_a_path_reaches_a_protected_route_unprotected(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    config = """
upstreams:
  backend: {targets: [UPSTREAM_URL]}
routes:
  - name: admin
    match: {path: /admin}
    upstream: backend
    policies: [{session: {cookie: sid}}]
  - {name: public, match: {path: /}, upstream: backend}
"""
    gw = await make_gateway(config)
    spellings = [
        "/public/../admin/users",
        "/%61dmin/users",
        "//admin/users",
        "/./admin/users",
        "/public/..%2Fadmin/users",
        "/public/..%2fadmin/users",
        "/public/..%5cadmin/users",
        "/public/..\\admin/users",
        "/public/%2e%2e/admin/users",
        "/admin%2Fusers",
        "/admin;jsessionid=x/users",
        "/admin;/users",
        "/admin/users%00",
    ]
    for path in spellings:
        async with gw.request("GET", path) as response:
            assert response.status in (400, 401), (path, response.status)
            if response.status == 401:  # it is the admin route, with its session check
                assert "WWW-Authenticate" in response.headers
    # What the public route forwarded is exactly what it matched: never an admin path.
    assert not [p for p in upstream.hits if "admin" in p.lower()], upstream.hits
    # Within one route an encoded slash or a segment parameter is data, forwarded as sent.
    for path in ("/repos/group%2Fproject", "/items;v=2/7"):
        async with gw.request("GET", path) as response:
            assert response.status == 200
            assert (await response.json())["path"] == path


def test_every_claim_in_the_security_notes_points_at_an_existing_test() -> None:
    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "security.md").read_text(encoding="utf-8")
    refs = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", text)
    assert len(refs) > 30
    for path, name in refs:
        source = root / path
        assert source.is_file(), path
        if name:
            assert re.search(rf"def {name}\(", source.read_text()), f"{path}::{name}"
