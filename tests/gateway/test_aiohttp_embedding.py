"""`gateway.aiohttp.Policies`: the gateway's policies inside an aiohttp app (issue 16).

Apps run under pytest-aiohttp's `aiohttp_client` on a real socket, on `memory://` or the
suite's redis-server; answers are checked against the gateway's own (JSON errors, RateLimit
fields, X-Cache, Age, 401/403).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.aiohttp import Policies
from gateway.config.loader import parse_config
from gateway.errors import ConfigError
from tests.support.ports import free_port

Client = Callable[..., Awaitable[Any]]

LIMITS = """
redis: {url: "STORE"}
policies:
  per-client:
    rate_limit: {algorithm: sliding_window, limit: 3, window: 1m, key: client_ip}
"""


def config_file(tmp_path: Path, text: str, store: str = "memory://") -> str:
    path = tmp_path / "gateway.yaml"
    path.write_text(text.replace("STORE", store))
    return str(path)


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_decorator_limits_with_the_gateways_answers(
    aiohttp_client: Client, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    store = "memory://" if backend == "memory" else request.getfixturevalue("redis_url")
    policies = Policies.from_config(config_file(tmp_path, LIMITS, store))
    runs = []

    @policies.chain("orders", "per-client")
    async def orders(req: web.Request) -> web.Response:
        runs.append(req.headers.get("X-Request-ID"))
        return web.json_response({"ok": True})

    app = web.Application()
    app.cleanup_ctx.append(policies.cleanup_ctx)
    app.router.add_get("/orders", orders)
    client = await aiohttp_client(app)

    remaining = []
    for _ in range(3):
        response = await client.get("/orders")
        assert response.status == 200
        assert response.headers["RateLimit-Policy"] == '"per-client";q=3;w=60'
        remaining.append(response.headers["RateLimit"].split(";")[1])
    assert remaining == ["r=2", "r=1", "r=0"]
    refused = await client.get("/orders", headers={"X-Request-ID": "trace-7"})
    assert refused.status == 429
    body = await refused.json()
    assert body["error"] == "rate_limited"
    assert body["request_id"] == "trace-7" == refused.headers["X-Request-ID"]
    assert int(refused.headers["Retry-After"]) == body["retry_after"] > 0
    assert refused.headers["RateLimit"].startswith('"per-client";r=0')
    assert len(runs) == 3  # the handler saw the request id the gateway keeps or makes
    assert all(runs)


async def test_middleware_applies_chains_by_route_name(
    aiohttp_client: Client, tmp_path: Path
) -> None:
    policies = Policies.from_config(config_file(tmp_path, LIMITS))
    app = web.Application(middlewares=[policies.middleware(routes={"orders": ["per-client"]})])
    app.cleanup_ctx.append(policies.cleanup_ctx)
    app.router.add_get("/orders", ok, name="orders")
    app.router.add_get("/other", ok, name="other")
    app.router.add_get("/unnamed", ok)
    client = await aiohttp_client(app)

    for _ in range(3):
        assert (await client.get("/orders")).status == 200
    assert (await client.get("/orders")).status == 429
    for path in ("/other", "/unnamed"):  # not listed: untouched
        response = await client.get(path)
        assert response.status == 200
        assert "RateLimit" not in response.headers


async def test_a_cached_handler_runs_once_for_two_gets(
    aiohttp_client: Client, redis_url: str
) -> None:
    policies = Policies(redis_url)
    runs = []

    @policies.chain("catalog", {"cache": {"ttl": "30s"}})
    async def catalog(request: web.Request) -> web.Response:
        runs.append(1)
        return web.json_response({"items": [1, 2, 3]}, headers={"ETag": '"v1"'})

    app = web.Application()
    app.cleanup_ctx.append(policies.cleanup_ctx)
    app.router.add_get("/catalog", catalog)
    client = await aiohttp_client(app)

    first = await client.get("/catalog")
    second = await client.get("/catalog")
    assert (first.status, second.status) == (200, 200)
    assert await first.json() == await second.json() == {"items": [1, 2, 3]}
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert int(second.headers["Age"]) >= 0
    revalidated = await client.get("/catalog", headers={"If-None-Match": '"v1"'})
    assert (revalidated.status, await revalidated.read()) == (304, b"")
    assert revalidated.headers["X-Cache"] == "HIT"
    assert len(runs) == 1


async def test_session_forwarding_and_spoofed_headers_stripped(
    aiohttp_client: Client, redis_url: str
) -> None:
    session = {
        "cookie": "sid",
        "bearer": True,
        "forward": {"user_id": "X-User-Id", "role": "X-Role"},
    }
    policies = Policies(redis_url, {"login": {"session": session}})
    seen: list[dict[str, Any]] = []

    @policies.chain("account", "login")
    async def account(request: web.Request) -> web.Response:
        seen.append(
            {
                "user": request.headers.get("X-User-Id"),
                "role": request.headers.get("X-Role"),
                "session": request["session"],
                "cookie": request.cookies.get("sid"),
            }
        )
        return web.json_response({"ok": True})

    @policies.chain("admin", {"session": {"bearer": True, "require": {"role": "admin"}}})
    async def admin(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.cleanup_ctx.append(policies.cleanup_ctx)
    app.router.add_get("/account", account)
    app.router.add_get("/admin", admin)
    client = await aiohttp_client(app)
    store = client.app[policies.store_key]
    sid = "s" * 24
    await store.hset(f"session:{sid}", {"user_id": "42", "role": "viewer"}, ttl=60)

    spoofed = {"X-User-Id": "1", "X-Role": "admin"}
    response = await client.get("/account", headers={**spoofed, "Cookie": f"sid={sid}"})
    assert response.status == 200
    assert seen == [
        {
            "user": "42",
            "role": "viewer",
            "session": {"user_id": "42", "role": "viewer"},
            "cookie": None,
        }
    ]

    anonymous = await client.get("/account", headers=spoofed)
    assert anonymous.status == 401
    assert (await anonymous.json())["error"] == "unauthenticated"
    assert "WWW-Authenticate" in anonymous.headers
    assert len(seen) == 1  # the handler never ran with the spoofed identity

    forbidden = await client.get("/admin", headers={"Authorization": f"Bearer {sid}"})
    assert forbidden.status == 403
    assert (await forbidden.json())["error"] == "forbidden"


async def test_a_store_outage_follows_on_store_error(aiohttp_client: Client) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # a store that refuses every connection
    limit = {"algorithm": "sliding_window", "limit": 5, "window": "1m", "key": "client_ip"}
    policies = Policies(
        nobody,
        {
            "strict": {"rate_limit": {**limit, "on_store_error": "deny"}},
            "lenient": {"rate_limit": {**limit, "on_store_error": "allow"}},
        },
        redis={"timeout": "100ms"},
    )
    runs = []

    @policies.chain("strict", "strict")
    async def strict(request: web.Request) -> web.Response:
        runs.append("strict")
        return web.json_response({"ok": True})

    @policies.chain("lenient", "lenient")
    async def lenient(request: web.Request) -> web.Response:
        runs.append("lenient")
        return web.json_response({"ok": True})

    app = web.Application()
    app.cleanup_ctx.append(policies.cleanup_ctx)
    app.router.add_get("/strict", strict)
    app.router.add_get("/lenient", lenient)
    client = await aiohttp_client(app)

    denied = await client.get("/strict")
    assert denied.status == 503
    assert (await denied.json())["error"] == "rate_limit_unavailable"
    assert denied.headers["Retry-After"] == "1"
    allowed = await client.get("/lenient")
    assert allowed.status == 200
    assert runs == ["lenient"]


def test_a_bad_config_raises_config_error_with_the_path(tmp_path: Path) -> None:
    text = LIMITS.replace("window: 1m", "window: ten seconds")
    path = config_file(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        Policies.from_config(path)
    assert str(caught.value) == (
        f"{path}:5: policies.per-client.rate_limit.window: invalid duration 'ten seconds'"
    )
    with pytest.raises(ConfigError, match=f"^{tmp_path / 'missing.yaml'}: cannot read"):
        Policies.from_config(str(tmp_path / "missing.yaml"))


def test_routes_and_upstreams_are_optional_only_when_embedding(tmp_path: Path) -> None:
    path = config_file(tmp_path, LIMITS)
    assert list(Policies.from_config(path).loaded.named) == ["per-client"]
    with pytest.raises(ConfigError) as caught:  # `gateway run` still needs them
        parse_config(Path(path).read_text(), path)
    assert [p.path for p in caught.value.problems] == ["routes", "upstreams"]


def test_declarations_in_code_are_checked_where_they_are_written(tmp_path: Path) -> None:
    policies = Policies.from_config(config_file(tmp_path, LIMITS))
    line = inspect.currentframe().f_lineno + 2  # type: ignore[union-attr]
    with pytest.raises(ConfigError) as caught:
        policies.chain("orders", "per-clinet", {"cache": {"ttl": "soon"}})
    assert str(caught.value).splitlines() == [
        f"{__file__}:{line}: chain('orders')[0]: no policy named 'per-clinet' (defined: per-client)",
        f"{__file__}:{line}: chain('orders')[1].cache.ttl: invalid duration 'soon'",
    ]
    policies.chain("login", "per-client")
    with pytest.raises(ConfigError, match="'login' already has a chain"):
        policies.middleware(routes={"login": ["per-client"]})
    with pytest.raises(ConfigError, match=re.escape(__file__) + r":\d+: policies\.x\.rate_limit"):
        Policies(policies={"x": {"rate_limit": {"algorithm": "sliding_window", "limit": 0}}})


async def test_streamed_and_file_answers_pass_through_and_are_never_stored(
    aiohttp_client: Client, tmp_path: Path
) -> None:
    policies = Policies.from_config(config_file(tmp_path, LIMITS))
    runs = []
    document = tmp_path / "doc.txt"
    document.write_bytes(b"a file\n")
    limit = {"algorithm": "sliding_window", "limit": 2, "window": "1m", "key": "client_ip"}
    # Inline declarations: one bucket per route (`route:<name>` keys).
    declarations = ({"rate_limit": limit}, {"cache": {"ttl": "30s"}})

    @policies.chain("stream", *declarations)
    async def stream(request: web.Request) -> web.StreamResponse:
        runs.append("stream")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)  # sent before the policies see it
        await response.write(b"chunk 1\n")
        await response.write(b"chunk 2\n")
        return response

    @policies.chain("file", *declarations)
    async def file(request: web.Request) -> web.StreamResponse:
        runs.append("file")
        return web.FileResponse(document)

    app = web.Application()
    app.cleanup_ctx.append(policies.cleanup_ctx)
    app.router.add_get("/stream", stream)
    app.router.add_get("/file", file)
    client = await aiohttp_client(app)

    for _ in range(2):
        streamed = await client.get("/stream")
        assert (streamed.status, await streamed.read()) == (200, b"chunk 1\nchunk 2\n")
        served = await client.get("/file")
        assert (served.status, await served.read()) == (200, b"a file\n")
        # Not yet sent when the chain finished: it carries what the policies added.
        assert served.headers["RateLimit-Policy"] == '"rate_limit";q=2;w=60'
        assert "no-store" not in served.headers.get("Cache-Control", "")
    assert runs == ["stream", "file", "stream", "file"]  # nothing was served from the cache
    assert (await client.get("/file")).status == 429


async def test_the_handlers_own_errors_go_through_the_chain(
    aiohttp_client: Client, tmp_path: Path
) -> None:
    policies = Policies.from_config(config_file(tmp_path, LIMITS))

    @policies.chain("missing", "per-client")
    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound(text="no such order")

    app = web.Application()
    app.cleanup_ctx.append(policies.cleanup_ctx)
    app.router.add_get("/missing", missing)
    client = await aiohttp_client(app)
    response = await client.get("/missing")
    assert (response.status, await response.text()) == (404, "no such order")
    assert response.headers["RateLimit"].startswith('"per-client";r=2')


async def test_without_cleanup_ctx_the_error_says_what_is_missing(
    aiohttp_client: Client, tmp_path: Path
) -> None:
    policies = Policies.from_config(config_file(tmp_path, LIMITS))
    app = web.Application()
    app.router.add_get("/orders", policies.chain("orders", "per-client")(ok))
    client = await aiohttp_client(app)
    response = await client.get("/orders")
    assert response.status == 500
