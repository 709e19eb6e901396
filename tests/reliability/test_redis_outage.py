"""A Redis outage, end to end, on `gateway run` with two workers.

While Redis is gone every policy answers as documented, at once: rate_limit lets requests
through (`on_store_error: deny`: 503 `rate_limit_unavailable`), the cache steps aside
(`X-Cache: BYPASS`), sessions are 503 `session_store_unavailable`, `/-/ready` is 503 with the
reason, and the circuit breaker keeps fifty requests well under 5 s even when Redis hangs
instead of refusing. When Redis is back on the same port the gateway is ready again within
10 s and caches, counts and authenticates again, without a restart.
"""

from __future__ import annotations

import os
import signal
import time

from tests.reliability.conftest import Answer, Deploy, Deployment, eventually, metric
from tests.support.redis_server import RedisServer
from tests.support.upstream import Upstream

PATHS = ("/limited/x", "/strict/x", "/cached/x", "/account/x", "/plain/x")


async def fifty_requests(d: Deployment, session_id: str) -> tuple[float, list[tuple[str, Answer]]]:
    """Fifty requests, one after the other, round robin over the routes; (seconds, answers)."""
    answers = []
    started = time.perf_counter()
    for i in range(50):
        path = PATHS[i % len(PATHS)]
        answers.append((path, await d.get(path, headers={"Cookie": f"sid={session_id}"})))
    return time.perf_counter() - started, answers


def assert_documented_outage_answer(path: str, answer: Answer, near_hits: bool) -> None:
    if path.startswith("/limited") or path.startswith("/plain"):
        assert answer.status == 200, (path, answer)
        assert "RateLimit" not in answer.headers  # nothing was counted
    elif path.startswith("/strict"):
        assert answer.status == 503, (path, answer)
        assert answer.headers["Retry-After"] == "1"
        assert answer.json() == {
            "error": "rate_limit_unavailable",
            "request_id": answer.headers["X-Request-ID"],
        }
    elif path.startswith("/cached"):
        assert answer.status == 200, (path, answer)
        allowed = {"BYPASS", "HIT"} if near_hits else {"BYPASS"}
        assert answer.headers.get("X-Cache") in allowed, (path, answer)
    else:
        assert answer.status == 503, (path, answer)
        assert answer.json()["error"] == "session_store_unavailable"


async def healthy_before(d: Deployment) -> str:
    """Every route works on a live Redis; returns a valid session id."""
    assert (await d.admin_get("/-/ready")).status == 200
    session_id = d.login()
    assert (await d.get("/account/x", headers={"Cookie": f"sid={session_id}"})).status == 200
    assert "RateLimit" in (await d.get("/limited/x")).headers
    assert (await d.get("/strict/x")).status == 200
    assert (await d.get("/cached/x")).headers["X-Cache"] == "MISS"

    async def hit() -> bool:
        return (await d.get("/cached/x")).headers["X-Cache"] == "HIT"

    await eventually(hit, timeout=5)
    return session_id


async def assert_outage(
    d: Deployment, session_id: str, reason: str, near_hits: bool = False
) -> None:
    async def not_ready() -> bool:
        return (await d.admin_get("/-/ready")).status == 503

    await eventually(not_ready, timeout=5)
    ready = (await d.admin_get("/-/ready")).json()
    assert ready["status"] == "unavailable"
    assert reason in ready["reason"], ready

    seconds, answers = await fifty_requests(d, session_id)
    for path, answer in answers:
        assert_documented_outage_answer(path, answer, near_hits)
    print(f"50 requests during the outage ({reason}): {seconds:.2f}s")
    assert seconds < 5, f"50 requests took {seconds:.2f}s during the outage"

    text = await d.metrics()
    assert metric(text, "gateway_store_breaker_open") == 1
    assert metric(text, "gateway_store_errors_total") >= 5
    assert 'result="store_error"' in text  # rate_limit and session decisions say why


async def assert_recovered(d: Deployment) -> None:
    async def ready() -> bool:
        return (await d.admin_get("/-/ready")).status == 200

    took = await eventually(ready, timeout=10)
    print(f"ready again {took:.2f}s after Redis came back")
    session_id = d.login("43")  # a restarted Redis kept nothing; a resumed one still has it
    answer = await d.get("/account/x", headers={"Cookie": f"sid={session_id}"})
    assert answer.status == 200
    assert answer.json()["headers"]["X-User-Id"] == "43"
    assert "RateLimit" in (await d.get("/limited/x")).headers
    assert (await d.get("/strict/x")).status == 200

    async def cached_again() -> bool:
        return (await d.get("/cached/again")).headers["X-Cache"] == "HIT"

    await eventually(cached_again, timeout=5)
    assert metric(await d.metrics(), "gateway_store_breaker_open") == 0


async def test_redis_killed_then_restarted_on_the_same_port(
    deploy: Deploy, upstream: Upstream
) -> None:
    d = await deploy(upstream.url)
    session_id = await healthy_before(d)
    before = upstream.hits["/cached/x"]

    d.redis.kill()  # SIGKILL: connections are reset, new ones refused
    await assert_outage(d, session_id, reason="cannot connect to redis")
    assert upstream.hits["/cached/x"] == before + 10  # every cached request went upstream

    d.redis = RedisServer(port=d.redis.port).start()
    await assert_recovered(d)


async def test_redis_hung_then_resumed(deploy: Deploy, upstream: Upstream) -> None:
    d = await deploy(upstream.url)
    session_id = await healthy_before(d)
    assert d.redis.process is not None
    pid = d.redis.process.pid
    os.kill(pid, signal.SIGSTOP)  # accepts connections (the kernel does), answers nothing
    try:
        # A hung server does not close the pub/sub connection: until its idle PING goes
        # unanswered (about a second), a worker's fresh near-cache copy may serve a HIT
        # without any store call. Anything that needs Redis bypasses.
        await assert_outage(d, session_id, reason="did not answer within", near_hits=True)
    finally:
        os.kill(pid, signal.SIGCONT)
    await assert_recovered(d)
