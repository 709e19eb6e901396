"""RFC 9111 behaviour through one gateway, on the embedded store and on Redis alike."""

from __future__ import annotations

import asyncio
import itertools

from aiohttp import web

from policies.cache.syntax import format_http_date
from tests.policies.cache.conftest import OneGateway, config, eventually, fetch
from tests.support.upstream import Upstream


def answer(
    upstream: Upstream, path: str, headers: dict[str, str], *, status: int = 200
) -> list[dict[str, str]]:
    """`path` answers "v1", "v2", ... with `headers`; returns the requests' headers seen."""
    seen: list[dict[str, str]] = []
    counter = itertools.count(1)

    async def handler(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(status=status, text=f"v{next(counter)}", headers=headers)

    upstream.route(path, handler)
    return seen


async def test_collapsing_and_background_refresh_in_one_process(
    gateway: OneGateway, upstream: Upstream
) -> None:
    gate, reached = asyncio.Event(), asyncio.Event()
    counter = itertools.count(1)

    async def handler(_: web.Request) -> web.Response:
        reached.set()
        await gate.wait()
        return web.Response(text=f"v{next(counter)}")

    upstream.route("/x", handler)
    gw = await gateway(config("ttl: 1s, stale_while_revalidate: 30s"))
    pending = [asyncio.ensure_future(fetch(gw, "/x")) for _ in range(20)]
    # The fill is under way; a request that arrives after it ends is a HIT all the same.
    await reached.wait()
    gate.set()
    answers = await asyncio.gather(*pending)
    assert {x.text for x in answers} == {"v1"}
    assert sorted(x.cache or "" for x in answers) == ["HIT"] * 19 + ["MISS"]
    await asyncio.sleep(1.1)
    stale = await asyncio.gather(*(fetch(gw, "/x") for _ in range(10)))
    assert {(x.cache, x.text) for x in stale} == {("STALE", "v1")}

    async def refreshed() -> bool:
        return (await fetch(gw, "/x")).text == "v2"

    await eventually(refreshed)
    assert upstream.hits["/x"] == 2


async def test_head_is_served_from_a_stored_get(gateway: OneGateway, upstream: Upstream) -> None:
    answer(upstream, "/h", {"Cache-Control": "max-age=60"})
    gw = await gateway(config(""))
    head_miss = await fetch(gw, "/h", method="HEAD")
    assert (head_miss.status, head_miss.cache) == (200, "MISS")
    assert (await fetch(gw, "/h", method="HEAD")).cache == "MISS"  # HEAD stores nothing
    assert (await fetch(gw, "/h")).cache == "MISS"
    head = await fetch(gw, "/h", method="HEAD")
    assert (head.status, head.cache, head.body) == (200, "HIT", b"")
    assert head.headers["Content-Length"] == "2"
    assert upstream.hits["/h"] == 3


async def test_only_if_cached(gateway: OneGateway, upstream: Upstream) -> None:
    answer(upstream, "/o", {"Cache-Control": "max-age=60"})
    gw = await gateway(config(""))
    only = {"Cache-Control": "only-if-cached"}
    absent = await fetch(gw, "/o", headers=only)
    assert absent.status == 504
    assert upstream.hits["/o"] == 0
    await fetch(gw, "/o")
    present = await fetch(gw, "/o", headers=only)
    assert (present.status, present.cache, present.text) == (200, "HIT", "v1")


async def test_request_no_cache_revalidates_and_a_304_updates_headers(
    gateway: OneGateway, upstream: Upstream
) -> None:
    seen: list[dict[str, str]] = []
    counter = itertools.count(1)

    async def handler(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        n = next(counter)
        headers = {"Cache-Control": "max-age=60", "ETag": '"e1"', "X-Version": str(n)}
        if request.headers.get("If-None-Match") == '"e1"':
            return web.Response(status=304, headers=headers)
        return web.Response(text="body", headers=headers)

    upstream.route("/r", handler)
    gw = await gateway(config(""))
    await fetch(gw, "/r")
    validated = await fetch(gw, "/r", headers={"Cache-Control": "no-cache"})
    assert (validated.status, validated.cache, validated.text) == (200, "EXPIRED", "body")
    assert validated.headers["X-Version"] == "2"
    assert seen[1]["If-None-Match"] == '"e1"'
    stored = await fetch(gw, "/r")
    assert (stored.cache, stored.text, stored.headers["X-Version"]) == ("HIT", "body", "2")
    assert upstream.hits["/r"] == 2


async def test_stale_entries_are_revalidated_with_their_validators(
    gateway: OneGateway, upstream: Upstream
) -> None:
    last_modified = format_http_date(1_700_000_000)
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        headers = {"Cache-Control": "max-age=1", "Last-Modified": last_modified}
        if request.headers.get("If-Modified-Since") == last_modified:
            return web.Response(status=304, headers={"Cache-Control": "max-age=60"})
        return web.Response(text="page", headers=headers)

    upstream.route("/lm", handler)
    gw = await gateway(config(""))
    await fetch(gw, "/lm")
    await asyncio.sleep(1.1)
    # The client's own precondition is answered from the refreshed entry.
    again = await fetch(gw, "/lm", headers={"If-Modified-Since": last_modified})
    assert (again.status, again.cache) == (304, "EXPIRED")
    assert seen[1]["If-Modified-Since"] == last_modified
    fresh = await fetch(gw, "/lm")
    assert (fresh.cache, fresh.text) == ("HIT", "page")
    assert fresh.headers["Cache-Control"] == "max-age=60"


async def test_must_revalidate_is_never_served_stale(
    gateway: OneGateway, upstream: Upstream
) -> None:
    answer(upstream, "/mr", {"Cache-Control": "max-age=1, must-revalidate", "ETag": '"m"'})
    gw = await gateway(config("stale_if_error: 60s, stale_while_revalidate: 60s"))
    await fetch(gw, "/mr")
    await asyncio.sleep(1.1)
    answer(upstream, "/mr", {}, status=503)
    failed = await fetch(gw, "/mr", headers={"Cache-Control": "max-stale=100"})
    assert (failed.status, failed.cache) == (503, "EXPIRED")


async def test_no_cache_responses_are_validated_on_every_use(
    gateway: OneGateway, upstream: Upstream
) -> None:
    seen = answer(upstream, "/nc", {"Cache-Control": "no-cache", "ETag": '"n"'})
    gw = await gateway(config("ttl: 60s"))
    await fetch(gw, "/nc")
    second = await fetch(gw, "/nc")
    assert second.cache == "EXPIRED"
    assert seen[1]["If-None-Match"] == '"n"'


async def test_max_stale_and_min_fresh(gateway: OneGateway, upstream: Upstream) -> None:
    answer(upstream, "/ms", {"Cache-Control": "max-age=1", "ETag": '"s"'})  # kept past freshness
    gw = await gateway(config(""))
    await fetch(gw, "/ms")
    assert (await fetch(gw, "/ms", headers={"Cache-Control": "min-fresh=30"})).cache == "EXPIRED"
    await asyncio.sleep(1.1)
    stale = await fetch(gw, "/ms", headers={"Cache-Control": "max-stale=60"})
    assert (stale.cache, stale.text) == ("STALE", "v2")


async def test_an_upstream_age_counts(gateway: OneGateway, upstream: Upstream) -> None:
    answer(upstream, "/aged", {"Cache-Control": "max-age=10", "Age": "15"})
    answer(upstream, "/young", {"Cache-Control": "max-age=100", "Age": "30"})
    gw = await gateway(config(""))
    await fetch(gw, "/aged")
    assert (await fetch(gw, "/aged")).cache == "MISS"
    await fetch(gw, "/young")
    hit = await fetch(gw, "/young")
    assert hit.cache == "HIT"
    assert int(hit.headers["Age"]) >= 30


async def test_expires_drives_freshness_and_invalid_means_expired(
    gateway: OneGateway, upstream: Upstream
) -> None:
    now = format_http_date(__import__("time").time())
    answer(upstream, "/exp", {"Expires": "Thu, 01 Jan 2099 00:00:00 GMT", "Date": now})
    answer(upstream, "/bad", {"Expires": "0", "Date": now})
    gw = await gateway(config(""))
    for path in ("/exp", "/bad"):
        await fetch(gw, path)
    assert (await fetch(gw, "/exp")).cache == "HIT"
    assert (await fetch(gw, "/bad")).cache == "MISS"


async def test_vary_star_is_never_stored(gateway: OneGateway, upstream: Upstream) -> None:
    answer(upstream, "/star", {"Cache-Control": "max-age=60", "Vary": "*"})
    gw = await gateway(config(""))
    await fetch(gw, "/star")
    assert (await fetch(gw, "/star")).cache == "MISS"


async def test_ranges_are_served_from_a_stored_200(gateway: OneGateway, upstream: Upstream) -> None:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(text="0123456789", headers={"Cache-Control": "max-age=60"})

    upstream.route("/file", handler)
    gw = await gateway(config(""))
    await fetch(gw, "/file")
    cases = {"bytes=0-1": "01", "bytes=7-": "789", "bytes=-3": "789", "bytes=2-4": "234"}
    for spec, text in cases.items():
        part = await fetch(gw, "/file", headers={"Range": spec})
        assert (part.status, part.text, part.cache) == (206, text, "HIT")
    assert (await fetch(gw, "/file", headers={"Range": "bytes=20-"})).status == 416
    whole = await fetch(gw, "/file", headers={"Range": "bytes=0-1,4-5"})
    assert (whole.status, whole.text) == (200, "0123456789")
    assert upstream.hits["/file"] == 1


async def test_unsafe_methods_of_unknown_safety_invalidate_too(
    gateway: OneGateway, upstream: Upstream
) -> None:
    answer(upstream, "/u", {"Cache-Control": "max-age=60"})
    gw = await gateway(config(""))
    await fetch(gw, "/u")
    assert (await fetch(gw, "/u", method="M-SEARCH")).cache == "BYPASS"
    assert (await fetch(gw, "/u")).cache == "MISS"
    assert (await fetch(gw, "/u", method="OPTIONS")).cache == "BYPASS"
    assert (await fetch(gw, "/u")).cache == "HIT"  # a safe method leaves it


async def test_query_order_does_not_matter_but_values_do(
    gateway: OneGateway, upstream: Upstream
) -> None:
    answer(upstream, "/q", {"Cache-Control": "max-age=60"})
    gw = await gateway(config(""))
    await fetch(gw, "/q?a=1&b=2")
    assert (await fetch(gw, "/q?b=2&a=1")).cache == "HIT"
    assert (await fetch(gw, "/q?a=1&b=3")).cache == "MISS"


async def test_request_no_store_bypasses(gateway: OneGateway, upstream: Upstream) -> None:
    answer(upstream, "/ns", {"Cache-Control": "max-age=60"})
    gw = await gateway(config(""))
    assert (await fetch(gw, "/ns", headers={"Cache-Control": "no-store"})).cache == "BYPASS"
    assert (await fetch(gw, "/ns")).cache == "MISS"


async def test_results_are_counted_per_route(gateway: OneGateway, upstream: Upstream) -> None:
    answer(upstream, "/m", {"Cache-Control": "max-age=60"})
    gw = await gateway(config(""))
    for _ in range(3):
        await fetch(gw, "/m")
    async with gw.admin("GET", "/metrics") as response:
        text = await response.text()
    assert 'gateway_cache_results_total{result="MISS",route="site"} 1.0' in text
    assert 'gateway_cache_results_total{result="HIT",route="site"} 2.0' in text


async def test_upstream_errors_still_say_what_the_cache_did(
    gateway: OneGateway, upstream: Upstream
) -> None:
    gw = await gateway(config("", read_timeout="200ms"))
    timed_out = await fetch(gw, "/slow/1")
    assert (timed_out.status, timed_out.cache) == (504, "MISS")
    only = await fetch(gw, "/none", headers={"Cache-Control": "only-if-cached"})
    assert (only.status, only.cache) == (504, "MISS")
    assert [line["cache"] for line in gw.access_lines()[-2:]] == ["MISS", "MISS"]
