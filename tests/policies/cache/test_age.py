"""Age through a gateway (RFC 9111 4.2.3, 5.1): what an upstream's Age means, what is sent.

The origin answers `max-age=3600` with the case's Age lines. A list counts by its first member,
an invalid value is ignored; every answer from the store carries the corrected initial age
(upstream Age plus response delay, or the apparent age from Date) plus the time stored.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from policies.cache.syntax import format_http_date
from tests.conftest import GatewayFactory
from tests.policies.cache.conftest import config, fetch
from tests.support.upstream import Upstream


@dataclass
class Case:
    name: str
    ages: list[str]
    cached: bool
    miss_age: str | None
    """The Age the client of the miss gets (None: no Age)."""
    hit_age: tuple[int, int] = (0, 2)
    """Bounds of the Age served from the store."""
    date_offset: float = 0.0
    delay: float = 0.0
    extra: list[tuple[str, str]] = field(default_factory=list)


CASES = [
    Case("suffix-ignored", ["3600s"], cached=True, miss_age=None),
    Case("negative-ignored", ["-7200"], cached=True, miss_age=None),
    Case("fraction-ignored", ["7200.0"], cached=True, miss_age=None),
    Case("word-ignored", ["abc"], cached=True, miss_age=None),
    Case("plus-sign-ignored", ["+7200"], cached=True, miss_age=None),
    Case("list-first-member-fresh", ["0, 7200"], cached=True, miss_age="0"),
    Case("lines-first-member-fresh", ["0", "7200"], cached=True, miss_age="0"),
    Case("lines-first-member-stale", ["7200", "0"], cached=False, miss_age="7200"),
    Case("list-first-member-stale", ["7200, 0"], cached=False, miss_age="7200"),
    Case("too-large-is-stale", ["2147483650"], cached=False, miss_age="2147483648"),
    Case("valid-age-counts", ["100"], cached=True, miss_age="100", hit_age=(100, 102)),
    Case("apparent-age-from-date", [], cached=True, miss_age=None, hit_age=(100, 103),
         date_offset=-100),
    Case("response-delay-counts", ["10"], cached=True, miss_age="10", hit_age=(11, 13),
         delay=1.1),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_age(case: Case, make_gateway: GatewayFactory, upstream: Upstream) -> None:
    async def origin(_: web.Request) -> web.Response:
        if case.delay:
            await asyncio.sleep(case.delay)
        response = web.Response(text="body")
        response.headers["Cache-Control"] = "max-age=3600"
        response.headers["Date"] = format_http_date(time.time() + case.date_offset)
        for value in case.ages:
            response.headers.add("Age", value)
        return response

    upstream.route("/a", origin)
    gw = await make_gateway(config("ttl: 0s"))
    first = await fetch(gw, "/a")
    assert first.cache == "MISS"
    assert first.headers.getall("Age", []) == ([] if case.miss_age is None else [case.miss_age])
    second = await fetch(gw, "/a")
    assert (second.cache == "HIT") is case.cached
    if case.cached:
        low, high = case.hit_age
        assert second.headers.getall("Age") == [second.headers["Age"]]
        assert low <= int(second.headers["Age"]) <= high


async def test_every_answer_from_the_store_carries_its_age(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    async def origin(_: web.Request) -> web.Response:
        headers = {"Cache-Control": "max-age=3600", "Age": "100", "ETag": '"v1"'}
        return web.Response(text="0123456789", headers=headers)

    upstream.route("/all", origin)
    gw = await make_gateway(config("ttl: 0s"))
    await fetch(gw, "/all")
    answers = [
        await fetch(gw, "/all"),
        await fetch(gw, "/all", method="HEAD"),
        await fetch(gw, "/all", headers={"If-None-Match": '"v1"'}),
        await fetch(gw, "/all", headers={"Range": "bytes=0-3"}),
    ]
    assert [answer.status for answer in answers] == [200, 200, 304, 206]
    for answer in answers:
        assert answer.cache == "HIT"
        assert answer.headers.getall("Age") == [answer.headers["Age"]]
        assert 100 <= int(answer.headers["Age"]) <= 102
    assert upstream.hits["/all"] == 1
