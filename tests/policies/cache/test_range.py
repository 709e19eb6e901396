"""Range requests answered from a stored full response (RFC 9110 14, 13.1.5), and an upstream's
206 passed through unstored, through a gateway.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from policies.cache.syntax import format_http_date
from tests.conftest import GatewayFactory
from tests.policies.cache.conftest import config, fetch
from tests.support.upstream import Upstream

BODY = "0123456789"
NOW = time.time()  # when the module was collected: Date carries it, so the entries are kept
# fresh for a day (a suite that reaches a test minutes after collecting it must not see it stale)
LAST_MODIFIED = format_http_date(NOW - 120)  # 60 s or more before Date: a strong validator
RECENT = format_http_date(NOW - 30)  # too close to Date to be strong

# (request headers, status, body, Content-Range)
CASES: list[tuple[str, dict[str, str], int, str, str | None]] = [
    ("first-bytes", {"Range": "bytes=0-3"}, 206, "0123", "bytes 0-3/10"),
    ("open-ended", {"Range": "bytes=7-"}, 206, "789", "bytes 7-9/10"),
    ("suffix", {"Range": "bytes=-3"}, 206, "789", "bytes 7-9/10"),
    ("suffix-longer-than-body", {"Range": "bytes=-20"}, 206, BODY, "bytes 0-9/10"),
    ("last-past-the-end", {"Range": "bytes=5-100"}, 206, "56789", "bytes 5-9/10"),
    ("unit-case-insensitive", {"Range": "BYTES=0-0"}, 206, "0", "bytes 0-0/10"),
    ("first-past-the-end", {"Range": "bytes=10-"}, 416, "", "bytes */10"),
    ("empty-suffix", {"Range": "bytes=-0"}, 416, "", "bytes */10"),
    ("several-ranges-whole", {"Range": "bytes=0-1,3-4"}, 200, BODY, None),
    ("reversed-is-invalid", {"Range": "bytes=5-3"}, 200, BODY, None),
    ("other-unit", {"Range": "items=0-1"}, 200, BODY, None),
    ("if-range-strong-etag", {"Range": "bytes=0-1", "If-Range": '"v1"'}, 206, "01",
     "bytes 0-1/10"),
    ("if-range-weak-etag", {"Range": "bytes=0-1", "If-Range": 'W/"v1"'}, 200, BODY, None),
    ("if-range-other-etag", {"Range": "bytes=0-1", "If-Range": '"v2"'}, 200, BODY, None),
    ("if-range-last-modified", {"Range": "bytes=0-1", "If-Range": LAST_MODIFIED}, 206, "01",
     "bytes 0-1/10"),
    ("if-range-other-date", {"Range": "bytes=0-1", "If-Range": RECENT}, 200, BODY, None),
    ("if-range-without-range", {"If-Range": '"v1"'}, 200, BODY, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "status", "body", "content_range"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_range_from_the_store(
    headers: dict[str, str],
    status: int,
    body: str,
    content_range: str | None,
    make_gateway: GatewayFactory,
    upstream: Upstream,
) -> None:
    async def origin(_: web.Request) -> web.Response:
        return web.Response(
            text=BODY,
            headers={
                "Cache-Control": "max-age=86400",
                "ETag": '"v1"',
                "Last-Modified": LAST_MODIFIED,
                "Date": format_http_date(NOW),
            },
        )

    upstream.route("/r", origin)
    gw = await make_gateway(config("ttl: 0s"))
    assert (await fetch(gw, "/r")).cache == "MISS"
    answer = await fetch(gw, "/r", headers=headers)
    assert (answer.status, answer.text, answer.cache) == (status, body, "HIT")
    assert answer.headers.get("Content-Range") == content_range
    assert answer.headers["Content-Length"] == str(len(body))
    if status == 206:
        assert answer.headers["ETag"] == '"v1"'  # what a 200 would carry (RFC 9110 15.3.7)
    head = await fetch(gw, "/r", method="HEAD", headers=headers)
    assert (head.status, head.body) == (200, b"")  # Range applies to GET only
    assert upstream.hits["/r"] == 1


@pytest.mark.parametrize(
    ("etag", "last_modified", "if_range"),
    [('W/"v1"', LAST_MODIFIED, 'W/"v1"'), ('"v1"', RECENT, RECENT)],
    ids=["weak-etag-stored", "last-modified-too-recent"],
)
async def test_if_range_needs_a_strong_stored_validator(
    etag: str, last_modified: str, if_range: str, make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    async def origin(_: web.Request) -> web.Response:
        headers = {"Cache-Control": "max-age=86400", "ETag": etag, "Last-Modified": last_modified}
        headers["Date"] = format_http_date(NOW)
        return web.Response(text=BODY, headers=headers)

    upstream.route("/weak", origin)
    gw = await make_gateway(config("ttl: 0s"))
    await fetch(gw, "/weak")
    answer = await fetch(gw, "/weak", headers={"Range": "bytes=0-1", "If-Range": if_range})
    assert (answer.status, answer.text, answer.cache) == (200, BODY, "HIT")


async def ranged_origin(request: web.Request) -> web.Response:
    """An origin that answers a Range itself (206), and the whole body otherwise."""
    headers = {"Cache-Control": "max-age=60", "ETag": '"v1"'}
    spec = request.headers.get("Range")
    if spec == "bytes=0-1":
        headers["Content-Range"] = "bytes 0-1/10"
        return web.Response(status=206, text=BODY[:2], headers=headers)
    return web.Response(text=BODY, headers=headers)


async def test_an_upstream_206_is_passed_through_and_not_stored(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    upstream.route("/p", ranged_origin)
    gw = await make_gateway(config("ttl: 0s"))
    partial = await fetch(gw, "/p", headers={"Range": "bytes=0-1"})
    assert (partial.status, partial.text, partial.cache) == (206, "01", "MISS")
    assert partial.headers["Content-Range"] == "bytes 0-1/10"
    whole = await fetch(gw, "/p")
    assert (whole.status, whole.text, whole.cache) == (200, BODY, "MISS")  # nothing stored
    again = await fetch(gw, "/p", headers={"Range": "bytes=0-1"})
    assert (again.status, again.text, again.cache) == (206, "01", "HIT")  # from the 200
    assert upstream.hits["/p"] == 2


async def test_a_200_to_a_ranged_request_is_stored(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    upstream.route("/ignored", ranged_origin)
    gw = await make_gateway(config("ttl: 0s"))
    first = await fetch(gw, "/ignored", headers={"Range": "bytes=2-3"})  # the origin ignores it
    assert (first.status, first.text, first.cache) == (200, BODY, "MISS")
    again = await fetch(gw, "/ignored", headers={"Range": "bytes=2-3"})
    assert (again.status, again.text, again.cache) == (206, "23", "HIT")
    assert upstream.hits["/ignored"] == 1


@pytest.mark.parametrize("window", ["", "stale_while_revalidate: 60s"])
async def test_a_stale_range_is_served_from_the_refreshed_entry(
    window: str, make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    async def origin(request: web.Request) -> web.Response:
        assert "Range" not in request.headers  # revalidations and refreshes ask for it all
        headers = {"Cache-Control": "max-age=1", "ETag": '"v1"'}
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers=headers)
        return web.Response(text=BODY, headers=headers)

    upstream.route("/s", origin)
    gw = await make_gateway(config(f"ttl: 0s, {window}" if window else "ttl: 0s"))
    await fetch(gw, "/s")
    await asyncio.sleep(1.2)  # the stored response goes stale: only time does that
    answer = await fetch(gw, "/s", headers={"Range": "bytes=1-2"})
    assert (answer.status, answer.text) == (206, "12")
    assert answer.cache == ("STALE" if window else "EXPIRED")
    if window:
        async with asyncio.timeout(5):
            while upstream.hits["/s"] < 2:  # noqa: ASYNC110 - the background refresh
                await asyncio.sleep(0.02)
    assert upstream.hits["/s"] == 2
