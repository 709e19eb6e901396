"""The judged scenarios, black-box through two gateways sharing one Redis."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from aiohttp import web

from policies.cache.store import uri_key
from tests.policies.cache.conftest import HOST, PROPAGATION, Pair, config, eventually, fetch
from tests.support.upstream import Upstream, pattern


def versions(
    upstream: Upstream, path: str, *, delay: float = 0.0, headers: dict[str, str] | None = None
) -> None:
    """`path` answers "v1", "v2", ... (each request a new version), after `delay` seconds
    from the second request on."""
    counter = itertools.count(1)

    async def handler(_: web.Request) -> web.Response:
        n = next(counter)
        if n > 1 and delay:
            await asyncio.sleep(delay)
        return web.Response(text=f"v{n}", headers=headers or {})

    upstream.route(path, handler)


async def test_miss_then_hit_on_the_other_gateway_with_age(pair: Pair, upstream: Upstream) -> None:
    versions(upstream, "/item", headers={"Cache-Control": "max-age=60"})
    a, b = await pair(config("ttl: 1s"))
    first = await fetch(a, "/item")
    assert (first.status, first.cache, first.text) == (200, "MISS", "v1")
    assert "Age" not in first.headers  # the upstream's answer, as sent
    await asyncio.sleep(1.1)  # Age counts whole seconds: let one pass
    second = await fetch(b, "/item")
    assert (second.status, second.cache, second.text) == (200, "HIT", "v1")
    assert int(second.headers["Age"]) >= 1
    assert second.headers["Cache-Control"] == "max-age=60"
    assert second.headers["Date"] == first.headers["Date"]  # replayed, not regenerated
    assert upstream.hits["/item"] == 1
    logged = [line for line in b.access_lines() if line["path"] == "/item"]
    assert logged[-1]["cache"] == "HIT"


async def test_stale_after_ttl_with_one_refresh_for_40_concurrent_requests(
    pair: Pair, upstream: Upstream
) -> None:
    versions(upstream, "/feed", delay=0.3)
    a, b = await pair(config("ttl: 1s, stale_while_revalidate: 30s"))
    assert (await fetch(a, "/feed")).cache == "MISS"
    await asyncio.sleep(1.1)
    answers = await asyncio.gather(*(fetch((a, b)[n % 2], "/feed") for n in range(40)))
    assert {(x.status, x.cache, x.text) for x in answers} == {(200, "STALE", "v1")}

    async def refreshed() -> bool:
        return (await fetch(b, "/feed")).text == "v2"

    await eventually(refreshed)
    fresh = await fetch(a, "/feed")
    assert (fresh.cache, fresh.text) == ("HIT", "v2")
    await asyncio.sleep(0.4)  # a second refresh would have reached the upstream by now
    assert upstream.hits["/feed"] == 2


async def test_50_concurrent_misses_on_two_gateways_make_one_upstream_request(
    pair: Pair, upstream: Upstream
) -> None:
    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(text="the one answer", headers={"Cache-Control": "max-age=60"})

    upstream.route("/hot", slow)
    a, b = await pair(config("ttl: 1s"))
    answers = await asyncio.gather(*(fetch((a, b)[n % 2], "/hot") for n in range(50)))
    assert {(x.status, x.text) for x in answers} == {(200, "the one answer")}
    assert sorted(x.cache or "" for x in answers) == ["HIT"] * 49 + ["MISS"]
    assert upstream.hits["/hot"] == 1


async def test_collapsed_misses_go_upstream_themselves_when_the_answer_is_not_storable(
    pair: Pair, upstream: Upstream
) -> None:
    async def private(_: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return web.Response(text="yours", headers={"Cache-Control": "private, max-age=60"})

    upstream.route("/me", private)
    a, b = await pair(config("ttl: 1s"))
    answers = await asyncio.gather(*(fetch((a, b)[n % 2], "/me") for n in range(6)))
    assert {(x.status, x.cache, x.text) for x in answers} == {(200, "MISS", "yours")}
    assert upstream.hits["/me"] == 6


@pytest.mark.parametrize(
    ("response_headers", "request_headers", "status"),
    [
        ({"Cache-Control": "no-store"}, {}, 200),
        ({"Cache-Control": "private"}, {}, 200),
        ({"Cache-Control": "max-age=60", "Set-Cookie": "sid=1"}, {}, 200),
        ({"Cache-Control": "max-age=60"}, {"Authorization": "Basic dTpw"}, 200),
        ({}, {}, 500),
    ],
    ids=["no-store", "private", "set-cookie", "authorization", "500"],
)
async def test_nothing_is_stored_for(
    pair: Pair,
    upstream: Upstream,
    response_headers: dict[str, str],
    request_headers: dict[str, str],
    status: int,
) -> None:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(status=status, text="x", headers=response_headers)

    upstream.route("/thing", handler)
    a, b = await pair(config("ttl: 60s"))
    first = await fetch(a, "/thing", headers=request_headers)
    second = await fetch(b, "/thing", headers=request_headers)
    third = await fetch(a, "/thing")
    assert (first.status, first.cache) == (status, "MISS")
    assert (second.cache, third.cache) == ("MISS", "MISS")
    assert upstream.hits["/thing"] == 3


async def test_vary_variants_are_kept_apart(pair: Pair, upstream: Upstream) -> None:
    async def negotiated(request: web.Request) -> web.Response:
        language = request.headers.get("Accept-Language", "none")
        return web.Response(
            text=f"in {language}",
            headers={"Cache-Control": "max-age=60", "Vary": "Accept-Language"},
        )

    upstream.route("/page", negotiated)
    a, b = await pair(config("ttl: 1s"))
    en, de = {"Accept-Language": "en"}, {"Accept-Language": "de"}
    assert [(x.cache, x.text) for x in [await fetch(a, "/page", headers=en)]] == [("MISS", "in en")]
    assert (await fetch(b, "/page", headers=de)).text == "in de"
    hits = [
        await fetch(b, "/page", headers=en),
        await fetch(a, "/page", headers=de),
        await fetch(a, "/page", headers={"Accept-Language": "EN"}),  # normalised: same
    ]
    assert [(x.cache, x.text) for x in hits] == [("HIT", "in en"), ("HIT", "in de")] * 1 + [
        ("HIT", "in en")
    ]
    assert (await fetch(b, "/page")).text == "in none"  # absent header: its own variant
    assert upstream.hits["/page"] == 3


async def test_stale_if_error_serves_the_stale_copy(pair: Pair, upstream: Upstream) -> None:
    healthy = True

    async def flaky(_: web.Request) -> web.Response:
        if healthy:
            return web.Response(text="good")
        return web.Response(status=503, text="down")

    upstream.route("/status", flaky)
    a, b = await pair(config("ttl: 1s, stale_if_error: 2s"))
    assert (await fetch(a, "/status")).cache == "MISS"
    await asyncio.sleep(1.1)
    healthy = False
    stale = await fetch(b, "/status")
    assert (stale.status, stale.cache, stale.text) == (200, "STALE", "good")
    await asyncio.sleep(2.0)  # past the stale-if-error window: the error goes through
    late = await fetch(a, "/status")
    assert (late.status, late.text) == (503, "down")
    assert late.cache in ("EXPIRED", "MISS")  # MISS once the store dropped the useless copy


async def test_stale_if_error_covers_an_upstream_timeout(pair: Pair, upstream: Upstream) -> None:
    slow = False

    async def handler(_: web.Request) -> web.Response:
        if slow:
            await asyncio.sleep(1.0)
        return web.Response(text="good")

    upstream.route("/slowly", handler)
    a, b = await pair(config("ttl: 1s, stale_if_error: 30s", read_timeout="300ms"))
    assert (await fetch(a, "/slowly")).cache == "MISS"
    await asyncio.sleep(1.1)
    slow = True
    stale = await fetch(b, "/slowly")
    assert (stale.status, stale.cache, stale.text) == (200, "STALE", "good")


async def test_if_none_match_is_answered_304_from_the_store(pair: Pair, upstream: Upstream) -> None:
    versions(upstream, "/doc", headers={"Cache-Control": "max-age=60", "ETag": '"abc"'})
    a, b = await pair(config("ttl: 1s"))
    assert (await fetch(a, "/doc")).cache == "MISS"
    not_modified = await fetch(b, "/doc", headers={"If-None-Match": '"zzz", "abc"'})
    assert (not_modified.status, not_modified.cache, not_modified.body) == (304, "HIT", b"")
    assert not_modified.headers["ETag"] == '"abc"'
    changed = await fetch(b, "/doc", headers={"If-None-Match": '"old"'})
    assert (changed.status, changed.text) == (200, "v1")
    assert upstream.hits["/doc"] == 1


async def test_purge_by_path_prefix_and_route(pair: Pair, upstream: Upstream) -> None:
    for path in ("/p/1", "/p/2", "/q"):
        versions(upstream, path, headers={"Cache-Control": "max-age=60"})
    a, b = await pair(config("ttl: 1s"))
    for path in ("/p/1", "/p/2", "/q", "/p/1?page=2"):
        assert (await fetch(a, path)).cache == "MISS"
        assert (await fetch(b, path)).cache == "HIT"

    async def purge(body: dict[str, str]) -> dict[str, object]:
        async with a.admin("POST", "/-/cache/purge", json=body) as response:
            assert response.status == 200
            result: dict[str, object] = await response.json()
        await asyncio.sleep(PROPAGATION)  # b's near copies: dropped within the bound
        return result

    assert await purge({"route": "site", "path": "/p/1"}) == {"purged": 2}  # both queries
    assert [(await fetch(b, p)).cache for p in ("/p/1", "/p/1?page=2", "/p/2")] == [
        "MISS",
        "MISS",
        "HIT",
    ]
    assert await purge({"prefix": "/p"}) == {"purged": 3}
    assert (await fetch(b, "/p/2")).cache == "MISS"
    assert await purge({"route": "site"}) == {"purged": 2}  # /q, and /p/2 stored again
    assert (await fetch(b, "/q")).cache == "MISS"
    async with a.admin("POST", "/-/cache/purge", json={"route": "nope"}) as response:
        assert response.status == 404
    async with a.admin("POST", "/-/cache/purge", json={"path": "x"}) as response:
        assert response.status == 400


async def test_a_successful_post_invalidates_its_uri_and_location(
    pair: Pair, upstream: Upstream
) -> None:
    versions(upstream, "/things/1", headers={"Cache-Control": "max-age=60"})
    versions(upstream, "/things/2", headers={"Cache-Control": "max-age=60"})
    a, b = await pair(config("ttl: 1s"))
    for path in ("/things/1", "/things/2"):
        await fetch(a, path)
        assert (await fetch(b, path)).cache == "HIT"

    async def created(_: web.Request) -> web.Response:
        return web.Response(status=201, headers={"Location": "/things/2"})

    upstream.route("/things/1", created)
    posted = await fetch(a, "/things/1", method="POST", data=b"{}")
    assert (posted.status, posted.cache) == (201, "BYPASS")
    await asyncio.sleep(PROPAGATION)
    versions(upstream, "/things/1", headers={"Cache-Control": "max-age=60"})
    assert (await fetch(b, "/things/1")).cache == "MISS"
    assert (await fetch(b, "/things/2")).cache == "MISS"


async def test_a_failed_post_invalidates_nothing(pair: Pair, upstream: Upstream) -> None:
    versions(upstream, "/things/3", headers={"Cache-Control": "max-age=60"})
    a, b = await pair(config("ttl: 1s"))
    await fetch(a, "/things/3")

    async def refused(_: web.Request) -> web.Response:
        return web.Response(status=409)

    upstream.route("/things/3", refused)
    assert (await fetch(a, "/things/3", method="DELETE")).status == 409
    assert (await fetch(b, "/things/3")).cache == "HIT"


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
async def test_a_3mb_body_streams_through_unstored(
    pair: Pair, upstream: Upstream, declared: bool
) -> None:
    size = 3 * 1024 * 1024
    path = f"/bytes/{size}" + ("?length=1" if declared else "")
    a, b = await pair(config("ttl: 60s"))
    first = await fetch(a, path)
    assert (first.status, first.cache, len(first.body)) == (200, "MISS", size)
    assert first.body == pattern(size)
    second = await fetch(b, path)
    assert (second.cache, second.body == pattern(size)) == ("MISS", True)
    assert upstream.hits[f"/bytes/{size}"] == 2


async def test_a_lost_lock_holder_only_delays_the_next_miss(pair: Pair, upstream: Upstream) -> None:
    versions(upstream, "/orphan", headers={"Cache-Control": "max-age=60"})
    a, b = await pair(config("ttl: 1s"))
    # A gateway that took the fill lock and died: nobody will ever announce its answer.
    uri = uri_key("route:site", "site", HOST, "/orphan", "")
    assert await a.store.set(uri.lock("-"), b"dead-gateway", ttl=0.4, nx=True)
    started = time.monotonic()
    answer = await fetch(b, "/orphan")
    waited = time.monotonic() - started
    assert (answer.status, answer.cache, answer.text) == (200, "MISS", "v1")
    assert 0.3 < waited < 2.0  # bounded by the lock's expiry, not by the upstream timeout
    assert (await fetch(a, "/orphan")).cache == "HIT"
