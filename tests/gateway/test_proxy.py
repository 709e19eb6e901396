"""The proxy through the real app: header hygiene, streaming, errors, retries, targets."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import GatewayFactory
from tests.support.ports import free_port
from tests.support.upstream import Upstream, pattern

BASIC = """
upstreams:
  backend: {targets: [UPSTREAM_URL], timeouts: {connect: 1s, read: 1s}}
routes:
  - {name: api, match: {path: /api}, upstream: backend, strip_prefix: /api}
  - {name: only-get, match: {path: /readonly, methods: [GET, HEAD]}, upstream: backend}
  - {name: ws, match: {path: /ws}, upstream: backend, websocket: true}
  - {name: small, match: {path: /small}, upstream: backend, max_request_body: 1KiB}
  - {name: rest, match: {path: /}, upstream: backend}
"""


async def test_hop_by_hop_headers_are_not_forwarded(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = await make_gateway(BASIC)
    headers = {
        "Connection": "X-Private, keep-alive",
        "X-Private": "secret",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic eA==",
        "Upgrade": "h2c",
        "X-Kept": "yes",
    }
    async with gw.request("GET", "/echo", headers=headers) as response:
        seen = {k.lower() for k, _ in (await response.json())["header_list"]}
    assert "x-kept" in seen
    for gone in ("x-private", "keep-alive", "te", "proxy-authorization", "upgrade"):
        assert gone not in seen


async def test_hop_by_hop_response_headers_are_dropped(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            text="ok",
            headers={
                "Connection": "X-Internal",
                "X-Internal": "1",
                "Proxy-Authenticate": "x",
                "X-Public": "1",
            },
        )

    upstream.route("/hop", handler)
    gw = await make_gateway(BASIC)
    async with gw.request("GET", "/hop") as response:
        assert response.headers["X-Public"] == "1"
        assert "X-Internal" not in response.headers
        assert "Proxy-Authenticate" not in response.headers


async def test_forwarded_headers_from_untrusted_peer_are_replaced(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(BASIC)
    spoof = {"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil"}
    async with gw.request("GET", "/echo", headers=spoof) as response:
        seen = (await response.json())["headers"]
    assert seen["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Forwarded-Proto"] == "http"
    assert seen["X-Forwarded-Host"] == gw.url.removeprefix("http://")
    assert seen["Via"] == "1.1 gateway"
    assert gw.access_lines()[-1]["client_ip"] == "127.0.0.1"


async def test_trusted_proxy_may_supply_forwarded_for(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(BASIC + "trusted_proxies: [127.0.0.0/8, 10.0.0.0/8]\n")
    headers = {"X-Forwarded-For": "203.0.113.7, 10.1.1.1", "Via": "1.1 edge"}
    async with gw.request("GET", "/echo", headers=headers) as response:
        seen = (await response.json())["headers"]
    assert seen["X-Forwarded-For"] == "203.0.113.7, 10.1.1.1, 127.0.0.1"
    assert seen["Via"] == "1.1 edge, 1.1 gateway"
    # The client is the first untrusted address from the right, not whatever comes first.
    assert gw.access_lines()[-1]["client_ip"] == "203.0.113.7"


async def test_request_id_is_kept_or_made_and_returned(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(BASIC)
    async with gw.request("GET", "/echo", headers={"X-Request-ID": "abc-123"}) as response:
        assert response.headers["X-Request-ID"] == "abc-123"
        assert (await response.json())["headers"]["X-Request-ID"] == "abc-123"
    async with gw.request("GET", "/echo", headers={"X-Request-ID": "bad id <script>"}) as response:
        made = response.headers["X-Request-ID"]
        assert len(made) == 32
        assert (await response.json())["headers"]["X-Request-ID"] == made


async def test_strip_prefix_and_query_are_forwarded_verbatim(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(BASIC)
    async with gw.request("GET", "/api/items/7?b=2&a=1&a=%20") as response:
        assert (await response.json())["path"] == "/items/7?b=2&a=1&a=%20"
    async with gw.request("GET", "/api") as response:
        assert (await response.json())["path"] == "/"


async def test_chunked_upload_arrives_intact(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(BASIC)
    body = pattern(3 * 1024 * 1024 + 17)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 100_000):
            yield body[start : start + 100_000]

    async with gw.request("PUT", "/upload", data=chunks()) as response:
        seen = await response.json()
    assert seen["headers"].get("Transfer-Encoding") == "chunked"
    assert seen["body_bytes"] == len(body)
    assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()


async def test_no_route_is_404_json(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        BASIC.replace("  - {name: rest, match: {path: /}, upstream: backend}\n", "")
    )
    async with gw.request("GET", "/nowhere") as response:
        assert response.status == 404
        body = await response.json()
    assert body == {"error": "no_route", "request_id": response.headers["X-Request-ID"]}


async def test_method_not_allowed_is_405_with_allow(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        BASIC.replace("  - {name: rest, match: {path: /}, upstream: backend}\n", "")
    )
    async with gw.request("DELETE", "/readonly/x") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "GET, HEAD"
        assert (await response.json())["error"] == "method_not_allowed"


async def test_a_method_restricted_route_is_not_bypassed_through_a_later_route(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    # Issue 21.1: `DELETE /admin/users` used to reach the upstream through the catch-all,
    # skipping the admin route's session check.
    gw = await make_gateway(
        """
upstreams:
  backend: {targets: [UPSTREAM_URL]}
routes:
  - name: admin
    match: {path: /admin, methods: [GET]}
    upstream: backend
    policies: [{session: {bearer: true, require: {role: admin}}}]
  - {name: rest, match: {path: /}, upstream: backend}
"""
    )
    async with gw.request("GET", "/admin/users") as response:
        assert response.status == 401
    for method in ("DELETE", "POST", "PUT"):
        async with gw.request(method, "/admin/users") as response:
            assert response.status == 405
            assert response.headers["Allow"] == "GET"
    async with gw.request("DELETE", "/other") as response:
        assert response.status == 200
    assert [(r["method"], r["path"]) for r in upstream.requests] == [("DELETE", "/other")]


async def test_refused_upstream_is_502_json(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(BASIC.replace("UPSTREAM_URL", f"http://127.0.0.1:{free_port()}"))
    async with gw.request("GET", "/api/x") as response:
        assert response.status == 502
        body = await response.json()
    assert body == {"error": "bad_gateway", "request_id": response.headers["X-Request-ID"]}


async def test_slow_upstream_is_504_json(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(BASIC)
    async with gw.request("GET", "/slow/3") as response:
        assert response.status == 504
        assert (await response.json())["error"] == "gateway_timeout"


async def test_upstream_reset_is_502(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        return web.Response()

    upstream.route("/reset", handler)
    gw = await make_gateway(BASIC)
    async with gw.request("GET", "/reset") as response:
        assert response.status == 502


async def test_request_body_over_the_limit_is_413(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(BASIC)
    async with gw.request("POST", "/small", data=b"x" * 2000) as response:
        assert response.status == 413
        assert (await response.json())["error"] == "payload_too_large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * 600

    async with gw.request("POST", "/small", data=chunks()) as response:
        assert response.status == 413


async def test_bad_paths_are_refused_or_normalised(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(BASIC)
    for path in ("/api/..%2f..%2fetc", "/a/%00", "/a%zz"):
        async with gw.request("GET", path) as response:
            assert response.status == 400, path
            assert (await response.json())["error"] == "bad_request"
    async with gw.request("GET", "/x/../api//items/./7") as response:
        body = await response.json()
    assert body["path"] == "/items/7"


async def test_websocket_echo(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(BASIC)
    assert gw.session is not None
    async with gw.session.ws_connect(gw.url + "/ws", protocols=("chat",)) as ws:
        assert ws.protocol == "chat"
        await ws.send_str("hello")
        assert (await ws.receive()).data == "echo: hello"
        await ws.send_bytes(b"\x00\x01")
        assert (await ws.receive()).data == b"\x00\x01"


async def test_upgrade_is_refused_on_routes_without_websocket(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(BASIC)
    assert gw.session is not None
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await gw.session.ws_connect(gw.url + "/api/ws")


async def test_targets_round_robin_and_a_refusing_one_is_skipped(
    make_gateway: GatewayFactory, aiohttp_server: object
) -> None:
    seen: list[str] = []

    def app(name: str) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            seen.append(name)
            return web.Response(text=name)

        application = web.Application()
        application.router.add_get("/{tail:.*}", handle)
        return application

    one = await aiohttp_server(app("one"))  # type: ignore[operator]
    two = await aiohttp_server(app("two"))  # type: ignore[operator]
    dead = f"http://127.0.0.1:{free_port()}"
    targets = f"[{one.make_url('')}, {dead}, {two.make_url('')}]".replace("/]", "]").replace(
        "/,", ","
    )
    gw = await make_gateway(
        f"""
upstreams:
  pool: {{targets: {targets}, fail_timeout: 60s}}
routes:
  - {{name: all, match: {{path: /}}, upstream: pool}}
"""
    )
    statuses = []
    for _ in range(6):
        async with gw.request("GET", "/x") as response:
            statuses.append(response.status)
    assert statuses == [200] * 6
    assert seen.count("one") == 3
    assert seen.count("two") == 3


async def test_stale_pooled_connection_is_retried_for_idempotent_requests(
    make_gateway: GatewayFactory,
) -> None:
    # An upstream that answers the first request of a connection, then closes the connection
    # on the second one without answering: what a server does when its idle timeout fires just
    # as the request is sent.
    requests_seen = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests_seen
        first = True
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            requests_seen += 1
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if not first:
                writer.close()
                return
            first = False
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gw = await make_gateway(BASIC.replace("UPSTREAM_URL", f"http://127.0.0.1:{port}"))
    async with gw.request("GET", "/a") as response:
        assert response.status == 200
    async with gw.request("GET", "/b") as response:
        assert response.status == 200  # retried once on a fresh connection
    assert requests_seen == 3
    async with gw.request("POST", "/c", data=b"body") as response:
        assert response.status == 502  # a POST is never replayed...
    assert requests_seen == 4  # ...so it reached the upstream exactly once
    server.close()


async def test_access_log_line_has_the_documented_fields_and_no_secrets(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(BASIC)
    headers = {"Authorization": "Bearer sekret-token", "Cookie": "sid=sekret-cookie"}
    async with gw.request("GET", "/api/items?token=sekret-query", headers=headers) as response:
        assert response.status == 200
    line = gw.access_lines()[-1]
    assert set(line) >= {
        "ts",
        "request_id",
        "route",
        "method",
        "path",
        "status",
        "bytes",
        "duration_ms",
        "upstream_ms",
        "client_ip",
    }
    assert line["route"] == "api"
    assert line["path"] == "/api/items"
    assert line["status"] == 200
    assert line["upstream_ms"] > 0
    assert "sekret" not in json.dumps(line)
