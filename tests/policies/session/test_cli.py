"""`gateway session create | revoke`, on Redis directly and on memory:// through the admin API."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from gateway.cli import main
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from policies.session.ids import valid_id
from tests.conftest import GatewayFactory
from tests.policies.session.conftest import command_calls, header_values
from tests.support.harness import InProcessGateway
from tests.support.redis_server import RedisServer
from tests.support.upstream import Upstream

CONFIG = """
admin: {listen: "ADMIN_LISTEN", token: ADMIN_TOKEN}
redis: {url: "REDIS_URL"}
upstreams:
  backend: {targets: [UPSTREAM_URL]}
routes:
  - name: account
    match: {path: /account}
    upstream: backend
    policies:
      - session: {cookie: sid, key_prefix: "PREFIX", forward: {user_id: X-User-Id}}
"""


def _config(
    upstream: str,
    redis: str = "memory://",
    prefix: str = "session:",
    admin: str = "127.0.0.1:9901",
    token: str = "''",
) -> str:
    replaced = CONFIG.replace("REDIS_URL", redis).replace("PREFIX", prefix)
    replaced = replaced.replace("ADMIN_LISTEN", admin).replace("ADMIN_TOKEN", token)
    return replaced.replace("UPSTREAM_URL", upstream)


async def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    # The CLI runs its own event loop (asyncio.run), so it gets a thread of its own.
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


async def _status(gw: InProcessGateway, sid: str) -> tuple[int, Any]:
    async with gw.request("GET", "/account", headers={"Cookie": f"sid={sid}"}) as response:
        return response.status, await response.json()


async def test_create_use_and_revoke_on_redis(
    tmp_path: Path,
    make_gateway: GatewayFactory,
    upstream: Upstream,
    redis_url: str,
    redis_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _config(upstream.url, redis=redis_url)
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    code, sid, _ = await _cli(
        capsys, "session", "create", "--field", "user_id=42", "--field", "role=admin",
        "--ttl", "1h", "-c", str(path),
    )  # fmt: skip
    assert code == 0
    assert valid_id(sid)
    assert redis_server.cli("HGET", f"session:{sid}", "role") == "admin"
    assert 3590 < int(redis_server.cli("TTL", f"session:{sid}")) <= 3600

    store = RedisStore(redis_url, timeout=1.0)
    try:
        gw = await make_gateway(text, store=store)
        status, echo = await _status(gw, sid)
        assert (status, header_values(echo, "X-User-Id")) == (200, ["42"])

        assert await _cli(capsys, "session", "revoke", sid, "-c", str(path)) == (0, "revoked", "")
        assert (await _status(gw, sid))[0] == 401
        code, _, err = await _cli(capsys, "session", "revoke", sid, "-c", str(path))
        assert code == 1
        assert "no such session" in err
    finally:
        await store.close()


async def test_revoke_refuses_a_malformed_id_without_touching_redis(
    tmp_path: Path,
    upstream: Upstream,
    redis_url: str,
    redis_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(_config(upstream.url, redis=redis_url))
    before = command_calls(redis_server)
    code, _, err = await _cli(capsys, "session", "revoke", "*", "-c", str(path))
    assert code == 2
    assert "not a session id" in err
    assert command_calls(redis_server) == before


async def test_prefix_comes_from_the_config_and_bad_input_is_refused(
    tmp_path: Path,
    upstream: Upstream,
    redis_url: str,
    redis_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(_config(upstream.url, redis=redis_url, prefix="sess:"))
    code, sid, _ = await _cli(capsys, "session", "create", "--field", "u=1", "-c", str(path))
    assert code == 0
    assert redis_server.cli("HGET", f"sess:{sid}", "u") == "1"
    assert 3590 < int(redis_server.cli("TTL", f"sess:{sid}")) <= 3600  # default --ttl 1h

    code, _, err = await _cli(capsys, "session", "create", "--field", "novalue", "-c", str(path))
    assert (code, "expected NAME=VALUE" in err) == (2, True)
    code, _, err = await _cli(
        capsys, "session", "create", "--field", "a=1", "--ttl", "soon", "-c", str(path)
    )
    assert (code, "invalid duration" in err) == (2, True)
    code, _, err = await _cli(
        capsys, "session", "create", "--field", "a=1", "-c", str(tmp_path / "missing.yaml")
    )
    assert (code, "cannot read" in err) == (2, True)


async def test_real_command_with_gateway_config_from_the_environment(
    tmp_path: Path, upstream: Upstream, redis_url: str, redis_server: RedisServer
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(_config(upstream.url, redis=redis_url))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "session", "create", "--field", "user_id=5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, GATEWAY_CONFIG=str(path)),
        cwd=tmp_path,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    sid = out.decode().strip()
    assert valid_id(sid)
    assert redis_server.cli("HGET", f"session:{sid}", "user_id") == "5"


async def test_memory_store_goes_through_the_admin_listener(
    tmp_path: Path,
    make_gateway: GatewayFactory,
    upstream: Upstream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gw = await make_gateway(_config(upstream.url, token="s3cret"), store=MemoryStore())
    # The CLI finds the admin listener through the config, as an operator's would.
    admin = urlsplit(gw.admin_url).netloc
    path = tmp_path / "gateway.yaml"
    path.write_text(_config(upstream.url, admin=admin, token="s3cret"))

    code, sid, err = await _cli(
        capsys, "session", "create", "--field", "user_id=77", "-c", str(path)
    )
    assert code == 0, err
    assert valid_id(sid)
    status, echo = await _status(gw, sid)
    assert (status, header_values(echo, "X-User-Id")) == (200, ["77"])

    assert await _cli(capsys, "session", "revoke", sid, "-c", str(path)) == (0, "revoked", "")
    assert (await _status(gw, sid))[0] == 401
    assert (await _cli(capsys, "session", "revoke", sid, "-c", str(path)))[0] == 1

    # --admin points the CLI elsewhere; a wrong token is refused by the admin listener.
    other = tmp_path / "other.yaml"
    other.write_text(_config(upstream.url, token="wrong"))
    code, _, err = await _cli(
        capsys, "session", "create", "--field", "a=1", "-c", str(other), "--admin", gw.admin_url
    )
    assert code == 1
    assert "answered 401" in err


async def test_admin_endpoints_refuse_bad_requests(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = await make_gateway(_config(upstream.url, prefix="app:"), store=MemoryStore())
    cases: list[tuple[str, Any, int, str]] = [
        ("/-/session/create", {"fields": {}}, 400, "fields"),
        ("/-/session/create", {"fields": {"a": True}}, 400, "fields"),
        ("/-/session/create", {"fields": {"a": "1"}, "ttl": "soon"}, 400, "invalid duration"),
        ("/-/session/create", {"fields": {"a": "1"}, "prefix": "cache:"}, 400, "not used"),
        ("/-/session/revoke", {"id": "../x"}, 400, "not a session id"),
        ("/-/session/revoke", {}, 400, "id"),
    ]
    for path, body, status, reason in cases:
        async with gw.admin("POST", path, json=body) as response:
            assert response.status == status
            answer = await response.json()
        assert answer["error"] == "invalid_request"
        assert reason in answer["reason"]
    async with gw.admin("POST", "/-/session/create", json={"fields": {"a": 1}}) as response:
        assert response.status == 201
        created = await response.json()
    assert await gw.store.hmget(f"app:{created['id']}", ["a"]) == [b"1"]
