"""Vary normalisation through gateways (RFC 9111 4.1): requests whose selecting headers differ
only in what their fields' definitions say does not matter share one stored variant.

One gateway stores the answer; the other request is made on a second gateway, which does not
know the URI's Vary yet (the store finds the variant itself from the normalised headers), then
both requests on the first gateway, which computes the variants itself.
"""

from __future__ import annotations

import pytest
from aiohttp import web

from tests.policies.cache.conftest import Pair, config
from tests.support.upstream import Upstream

Lines = list[tuple[str, str]]

CASES: list[tuple[str, str, Lines, Lines, bool]] = [
    ("space-after-comma", "Accept-Language", [("Accept-Language", "en, fr")],
     [("Accept-Language", "en,fr")], True),
    ("equal-weight-order", "Accept-Language", [("Accept-Language", "en, fr")],
     [("Accept-Language", "fr, en")], True),
    ("case", "Accept-Language", [("Accept-Language", "en-GB")],
     [("Accept-Language", "EN-gb")], True),
    ("lines-combined", "Accept-Language", [("Accept-Language", "en, fr")],
     [("Accept-Language", "fr"), ("Accept-Language", "en")], True),
    ("weights-spelled-differently", "Accept-Language", [("Accept-Language", "en;q=1.0, fr;q=0.50")],
     [("Accept-Language", "fr ; q=0.5, en")], True),
    ("different-weights", "Accept-Language", [("Accept-Language", "en, fr;q=0.5")],
     [("Accept-Language", "en;q=0.5, fr")], False),
    ("encoding-order", "Accept-Encoding", [("Accept-Encoding", "gzip, deflate, br")],
     [("Accept-Encoding", "br,gzip,DEFLATE")], True),
    ("media-parameters", "Accept", [("Accept", "text/html; level=1; charset=utf-8")],
     [("Accept", "text/html;charset=UTF-8;level=1")], True),
    ("other-field-order-kept", "X-Flavour", [("X-Flavour", "a, b")],
     [("X-Flavour", "b, a")], False),
    ("other-field-case-kept", "X-Flavour", [("X-Flavour", "a")], [("X-Flavour", "A")], False),
    ("other-field-space-dropped", "X-Flavour", [("X-Flavour", "a , b")],
     [("X-Flavour", "a,b")], True),
    ("absent-matches-absent-only", "Accept-Language", [], [("Accept-Language", "")], False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("field", "first", "second", "shared"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_vary_normalisation(
    field: str, first: Lines, second: Lines, shared: bool, pair: Pair, upstream: Upstream
) -> None:
    async def origin(_: web.Request) -> web.Response:
        return web.Response(text="body", headers={"Cache-Control": "max-age=60", "Vary": field})

    upstream.route("/v", origin)
    one, two = await pair(config("ttl: 0s"))

    async def get(gateway: object, lines: Lines) -> str | None:
        async with gateway.request(  # type: ignore[attr-defined]
            "GET", "/v", headers=[("Host", "shop.example"), *lines]
        ) as response:
            await response.read()
            return response.headers.get("X-Cache")  # type: ignore[no-any-return]

    assert await get(one, first) == "MISS"
    assert upstream.hits["/v"] == 1
    assert (await get(two, second) == "HIT") is shared
    assert upstream.hits["/v"] == (1 if shared else 2)
    # The first gateway knows the Vary names itself: it computes the same variants.
    assert await get(one, second) == "HIT"
    assert await get(one, first) == "HIT"
    assert upstream.hits["/v"] == (1 if shared else 2)
