"""The lean pipelined Redis client against a real redis-server."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from gateway.errors import StoreUnavailable
from gateway.store.resp import ReplyError, RespClient
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer


@pytest.fixture
async def client(redis_url: str, redis_server: RedisServer) -> RespClient:
    resp = RespClient(("127.0.0.1", redis_server.port), timeout=1.0)
    yield resp  # type: ignore[misc]
    await resp.close()


async def test_commands_and_replies(client: RespClient) -> None:
    assert await client.execute("SET", "k", b"v\x00\xff") == b"OK"
    assert await client.execute("GET", "k") == b"v\x00\xff"
    assert await client.execute("GET", "missing") is None
    assert await client.execute("HSET", "h", "a", 1, "b", 2.5) == 2
    assert await client.execute("HMGET", "h", "a", "b", "c") == [b"1", b"2.5", None]


async def test_error_replies_leave_the_connection_usable(client: RespClient) -> None:
    with pytest.raises(ReplyError) as caught:
        await client.execute("EVALSHA", "0" * 40, 0)
    assert caught.value.code == "NOSCRIPT"
    assert await client.execute("PING") == b"PONG"


async def test_concurrent_commands_share_one_round_trip(
    client: RespClient, redis_server: RedisServer
) -> None:
    await client.execute("PING")  # connect
    before = int(redis_server.cli("INFO", "stats").split("total_commands_processed:")[1].split()[0])
    results = await asyncio.gather(*(client.execute("INCR", "counter") for _ in range(500)))
    assert sorted(results) == list(range(1, 501))
    after = int(redis_server.cli("INFO", "stats").split("total_commands_processed:")[1].split()[0])
    assert after - before == 501  # 500 INCR + our INFO; nothing lost, nothing doubled


async def test_a_stalled_server_fails_calls_within_the_timeout(redis_server: RedisServer) -> None:
    client = RespClient(("127.0.0.1", redis_server.port), timeout=0.2)
    await client.execute("PING")
    redis_server.cli("CLIENT", "PAUSE", "1000", "ALL")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await client.execute("GET", "x")
    assert time.monotonic() - started < 0.6
    await client.close()


async def test_unreachable_server_is_store_unavailable() -> None:
    client = RespClient(("127.0.0.1", free_port()), timeout=0.2)
    with pytest.raises(StoreUnavailable):
        await client.execute("PING")
    await client.close()


async def test_reconnects_after_the_server_comes_back() -> None:
    server = RedisServer().start()
    client = RespClient(("127.0.0.1", server.port), timeout=0.5)
    try:
        assert await client.execute("PING") == b"PONG"
        server.kill()
        with pytest.raises(StoreUnavailable):
            await client.execute("PING")
        server.start()  # same port
        assert await client.execute("PING") == b"PONG"
    finally:
        await client.close()
        server.cleanup()


async def test_auth_and_database_selection() -> None:
    server = RedisServer(extra=["--requirepass", "s3cret"]).start()
    try:
        denied = RespClient(("127.0.0.1", server.port), timeout=0.5)
        with pytest.raises(ReplyError):
            await denied.execute("PING")
        await denied.close()
        client = RespClient(("127.0.0.1", server.port), timeout=0.5, password="s3cret", db=3)
        assert await client.execute("SET", "k", "v") == b"OK"
        assert server.cli("-a", "s3cret", "-n", "3", "GET", "k").endswith("v")
        await client.close()
    finally:
        server.cleanup()


async def test_a_connect_that_hangs_fails_the_call_within_the_timeout() -> None:
    # A listener whose accept queue is full drops SYNs, as a partitioned host does: the TCP
    # connect itself hangs. The call must not wait for the (longer) connect timeout.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    client = RespClient(("127.0.0.1", port), timeout=0.2, connect_timeout=5.0)
    try:
        for _ in range(2):  # the second caller joins the attempt still going on
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=r"within 0\.2s"):
                await client.execute("PING")
            assert time.monotonic() - started < 0.6
    finally:
        await client.close()
        filler.close()
        listener.close()


async def test_readonly_retires_every_connection_and_the_address_is_asked_again() -> None:
    # What a demoted master does to clients the Sentinels did not reach: its connections
    # stay open and writes get READONLY. The address callable stands for the Sentinels.
    first = RedisServer(extra=["--repl-diskless-sync-delay", "0"]).start()
    second = RedisServer(extra=["--replicaof", "127.0.0.1", str(first.port)]).start()
    named = [first.port]

    async def address() -> tuple[str, int]:
        return "127.0.0.1", named[0]

    client = RespClient(address, timeout=0.5, connections=2)
    try:
        for _ in range(2):  # both connections open, to the first server
            assert await client.execute("SET", "k", "before") == b"OK"
        second.cli("REPLICAOF", "NO", "ONE")
        first.cli("REPLICAOF", "127.0.0.1", str(second.port))
        named[0] = second.port
        with pytest.raises(StoreUnavailable, match="READONLY"):
            await client.execute("SET", "k", "refused")
        # Not only the connection that was told: the other one goes too, to the new master.
        assert await client.execute("SET", "k", "after") == b"OK"
        assert await client.execute("SET", "k", "again") == b"OK"
        assert second.cli("GET", "k") == "again"
    finally:
        await client.close()
        second.cleanup()
        first.cleanup()


async def test_require_master_refuses_a_replica(redis_server: RedisServer) -> None:
    replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(redis_server.port)]).start()
    client = RespClient(("127.0.0.1", replica.port), timeout=0.5, require_master=True)
    try:
        with pytest.raises(StoreUnavailable, match="is a slave, not the master"):
            await client.execute("GET", "k")
        # The same server is usable by a client that does not care (a read-only replica).
        plain = RespClient(("127.0.0.1", replica.port), timeout=0.5)
        assert await plain.execute("GET", "k") is None
        await plain.close()
    finally:
        await client.close()
        replica.cleanup()
