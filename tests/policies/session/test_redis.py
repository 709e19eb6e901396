"""What only real Redis can show: the commands a request costs, sliding expiry, outages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from multidict import CIMultiDict

from gateway.errors import HTTPError, StoreUnavailable
from gateway.http.messages import Request
from gateway.store.redis import RedisStore
from policies.session.lookup import Reader, Reads
from tests.conftest import GatewayFactory
from tests.policies.session.conftest import command_calls, header_values, login
from tests.support.harness import InProcessGateway
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer

CONFIG = """
upstreams:
  backend: {targets: [UPSTREAM_URL]}
routes:
  - name: account
    match: {path: /account}
    upstream: backend
    policies:
      - session: {cookie: sid, bearer: true, forward: {user_id: X-User-Id}}
  - name: public
    match: {path: /public}
    upstream: backend
    policies:
      - session: {cookie: sid, optional: true, forward: {user_id: X-User-Id}}
  - name: sliding
    match: {path: /sliding}
    upstream: backend
    policies:
      - session: {cookie: sid, sliding_ttl: 30m, refresh_every: 1m, forward: {user_id: X-User-Id}}
"""
MALFORMED = [
    "../../etc/passwd",  # path tricks
    "session:*{tag}abcdefghijkl",  # key tricks
    "a" * 300,  # too long
    "abcdefgh ijklmnop qrst",  # spaces
    "abcdefgh\tijklmnop",  # a control character that HTTP lets through
    "abc",  # too short
]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_url, timeout=1.0)
    yield store
    await store.close()


async def _get(gw: InProcessGateway, path: str, headers: Any = None) -> tuple[int, Any, Any]:
    async with gw.request("GET", path, headers=headers) as response:
        return response.status, response.headers, await response.json()


async def test_malformed_ids_are_401_without_any_redis_command(
    make_gateway: GatewayFactory, redis: RedisStore, redis_server: RedisServer
) -> None:
    gw = await make_gateway(CONFIG, store=redis)
    sid = await login(redis, user_id=1)
    assert (await _get(gw, "/account", {"Cookie": f"sid={sid}"}))[0] == 200  # script loaded

    before = command_calls(redis_server)
    for value in MALFORMED:
        for headers in ({"Cookie": f"sid={value}"}, {"Authorization": f"Bearer {value}"}):
            status, _, body = await _get(gw, "/account", headers)
            assert (status, body["error"]) == (401, "unauthenticated"), value
    assert command_calls(redis_server) == before

    # The measurement does see the gateway: a well-formed unknown id costs one script call.
    status, _, _ = await _get(gw, "/account", {"Cookie": "sid=" + "z" * 43})
    assert status == 401
    spent = command_calls(redis_server) - before
    assert spent["evalsha"] == 1
    assert set(spent) == {"evalsha", "hgetall"}  # the script and the one read inside it


async def test_nul_in_an_id_never_reaches_redis(
    make_gateway: GatewayFactory, redis: RedisStore, redis_server: RedisServer
) -> None:
    gw = await make_gateway(CONFIG, store=redis)
    before = command_calls(redis_server)
    # Over HTTP/1.1 the server's parser already refuses a NUL in a header (400).
    port = urlsplit(gw.url).port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /account HTTP/1.1\r\nHost: a\r\nCookie: sid=abcdefghijklmnop\x00q\r\n"
        b"Connection: close\r\n\r\n"
    )
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.")
    assert b" 400 " in answer.split(b"\r\n", 1)[0]
    # Whatever lets one through (another front end), the policy refuses it: 401, no store call.
    route = gw.runtime.routes[0]
    for header in ("Cookie", "Authorization"):
        value = "sid=abcdefghijklmnop\x00q" if header == "Cookie" else "Bearer abcdefghijkl\x00mnop"
        request = Request(
            method="GET",
            path="/account",
            query_string="",
            headers=CIMultiDict({header: value}),
            client_ip="127.0.0.1",
            host="a",
            scheme="http",
            request_id="r",
            route=route,
            body=None,
        )
        with pytest.raises(HTTPError) as caught:
            await route.handler(request)
        assert (caught.value.status, caught.value.code) == (401, "unauthenticated")
        assert "WWW-Authenticate" in caught.value.headers
    assert command_calls(redis_server) == before


async def test_ttl_grows_on_use_at_most_once_per_refresh_every(
    make_gateway: GatewayFactory, redis: RedisStore, redis_server: RedisServer
) -> None:
    gw = await make_gateway(CONFIG, store=redis)
    sid = "Ab3_-" * 8
    key = f"session:{sid}"
    # Exactly as the app writes it.
    redis_server.cli("HSET", key, "user_id", "42", "role", "admin")
    redis_server.cli("EXPIRE", key, "600")
    cookie = {"Cookie": f"sid={sid}"}
    before = command_calls(redis_server)

    for _ in range(20):
        status, _, echo = await _get(gw, "/sliding", cookie)
        assert (status, header_values(echo, "X-User-Id")) == (200, ["42"])
    pttl = int(redis_server.cli("PTTL", key))
    assert 1_740_000 < pttl <= 1_800_000  # grew from 10 minutes to the sliding 30
    assert (command_calls(redis_server) - before)["pexpire"] == 1  # once, not 20 times

    # 50 s after the refresh (the key's TTL says so): not due yet, untouched.
    redis_server.cli("PEXPIRE", key, "1750000")
    await _get(gw, "/sliding", cookie)
    assert int(redis_server.cli("PTTL", key)) <= 1_750_000
    # 100 s after: due (more than refresh_every has passed), extended again, once.
    redis_server.cli("PEXPIRE", key, "1700000")
    for _ in range(5):
        await _get(gw, "/sliding", cookie)
    assert int(redis_server.cli("PTTL", key)) > 1_790_000
    # Our own two PEXPIREs plus the gateway's two refreshes over 26 requests.
    assert (command_calls(redis_server) - before)["pexpire"] == 4

    # A session the app made permanent stays permanent.
    redis_server.cli("PERSIST", key)
    await _get(gw, "/sliding", cookie)
    assert redis_server.cli("PTTL", key) == "-1"


async def test_redis_unreachable_is_503_at_once(
    make_gateway: GatewayFactory, upstream: Any
) -> None:
    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.25)
    try:
        gw = await make_gateway(CONFIG, store=dead)
        cookie = {"Cookie": "sid=" + "d" * 43}
        for path in ("/account", "/public"):
            started = time.perf_counter()
            status, headers, body = await _get(gw, path, cookie)
            assert time.perf_counter() - started < 1.0
            assert status == 503
            assert body == {
                "error": "session_store_unavailable",
                "request_id": headers["X-Request-ID"],
            }
        # Requests that need no store are answered as usual.
        assert (await _get(gw, "/account"))[0] == 401
        assert (await _get(gw, "/public"))[0] == 200
        assert upstream.hits["/public"] == 1
        async with gw.admin("GET", "/metrics") as response:
            metrics = await response.text()
        assert 'gateway_session_results_total{result="store_error",route="account"} 1.0' in metrics
        assert [line.get("session") for line in gw.access_lines()][:2] == [
            "store_error",
            "store_error",
        ]
    finally:
        await dead.close()


async def test_redis_too_slow_is_503_within_the_store_timeout(
    make_gateway: GatewayFactory, redis_url: str, redis_server: RedisServer
) -> None:
    store = RedisStore(redis_url, timeout=0.2)
    try:
        gw = await make_gateway(CONFIG, store=store)
        sid = await login(store, user_id=8)
        cookie = {"Cookie": f"sid={sid}"}
        assert (await _get(gw, "/account", cookie))[0] == 200
        # Real Redis, stalled: writes (and scripts, which may write) wait; INFO does not.
        redis_server.cli("CLIENT", "PAUSE", "3000", "WRITE")
        try:
            started = time.perf_counter()
            status, _, body = await _get(gw, "/account", cookie)
            elapsed = time.perf_counter() - started
        finally:
            redis_server.cli("CLIENT", "UNPAUSE")
        assert (status, body["error"]) == (503, "session_store_unavailable")
        assert 0.15 < elapsed < 1.0
        status, _, echo = await _get(gw, "/account", cookie)
        assert (status, header_values(echo, "X-User-Id")) == (200, ["8"])
    finally:
        await store.close()


async def test_reads_of_one_session_in_one_loop_turn_share_one_call(
    redis: RedisStore, redis_server: RedisServer
) -> None:
    session_id = await login(redis, user_id=7)
    other = await login(redis, user_id=8)
    reads = Reads(redis, Reader(["user_id"], 0.0, 0.0))
    before = command_calls(redis_server)["evalsha"] + command_calls(redis_server)["eval"]
    replies = await asyncio.gather(
        *(reads.read("session:" + session_id) for _ in range(20)), reads.read("session:" + other)
    )
    after = command_calls(redis_server)["evalsha"] + command_calls(redis_server)["eval"]
    assert replies == [{"user_id": "7"}] * 20 + [{"user_id": "8"}]
    assert len({id(reply) for reply in replies}) == 21  # each request its own dict
    assert after - before == 2  # one per session, not one per request

    # The next turn asks again: a session deleted meanwhile is gone for the next request.
    await redis.delete("session:" + session_id)
    assert await reads.read("session:" + session_id) is None


async def test_a_shared_read_that_fails_fails_every_request_of_the_turn(
    redis_server: RedisServer,
) -> None:
    down = RedisStore(f"redis://127.0.0.1:{free_port()}", timeout=0.2)
    reads = Reads(down, Reader(["user_id"], 0.0, 0.0))
    results = await asyncio.gather(
        *(reads.read("session:" + "k" * 20) for _ in range(5)), return_exceptions=True
    )
    await down.close()
    assert all(isinstance(result, StoreUnavailable) for result in results)
