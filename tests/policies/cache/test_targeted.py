"""Targeted cache-control fields (RFC 9213): the parser, then each behaviour through a gateway.

Every end-to-end case is one origin answer fetched twice: "cached" means the second request
never reached the origin. Every targeted field the origin sent reaches the client unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from aiohttp import web

from policies.cache.targeted import Invalid, Token, as_directives, parse_dictionary
from tests.conftest import GatewayFactory
from tests.policies.cache.conftest import config, fetch
from tests.support.upstream import Upstream

PARSED = [
    ("max-age=60", {"max-age": 60}),
    ("max-age=60, no-store", {"max-age": 60, "no-store": True}),
    ('no-cache="a, b";p=1', {"no-cache": "a, b"}),
    ("a=?0, b=:aGk=:, c=tok/x, d=1.5", {"a": False, "b": b"aGk=", "c": "tok/x", "d": 1.5}),
    ("a=(1 2);x, b", {"a": [1, 2], "b": True}),
    ("max-age=1, max-age=2", {"max-age": 2}),
    ("  max-age=1 ,\tpublic  ", {"max-age": 1, "public": True}),
]


@pytest.mark.parametrize(("text", "members"), PARSED, ids=[t for t, _ in PARSED])
def test_dictionary_parses(text: str, members: dict[str, object]) -> None:
    assert parse_dictionary(text) == members


INVALID = ["Max-Age=60", "max-age=60,", "max-age 60", "max-age=", 'a="\\n"', "a=1.2345", "a=(1"]


@pytest.mark.parametrize("text", INVALID)
def test_dictionary_refuses(text: str) -> None:
    with pytest.raises(Invalid):
        parse_dictionary(text)


DIRECTIVES = [
    ({"max-age": 60}, {"max-age": "60"}),
    ({"max-age": 1.5}, {}),  # RFC 9213 2.1: a decimal max-age is not consumed
    ({"max-age": "60"}, {}),  # a String is not an Integer
    ({"max-age": -1}, {}),
    ({"no-cache": True, "private": "set-cookie"}, {"no-cache": None, "private": "set-cookie"}),
    ({"private": Token("x")}, {}),
    ({"no-store": False}, {}),
    ({"no-store": True, "none": True}, {"no-store": None, "none": None}),
]


@pytest.mark.parametrize(("members", "directives"), DIRECTIVES)
def test_members_become_directives(
    members: dict[str, object], directives: dict[str, str | None]
) -> None:
    assert as_directives(members) == directives  # type: ignore[arg-type]


@dataclass
class Case:
    name: str
    headers: list[tuple[str, str]]
    cached: bool
    options: str = "ttl: 0s"


CASES = [
    Case("cdn-max-age-over-cc-no-store", [("Cache-Control", "no-store"),
         ("CDN-Cache-Control", "max-age=60")], cached=True),
    Case("cdn-no-store-over-cc-max-age", [("Cache-Control", "max-age=60"),
         ("CDN-Cache-Control", "no-store")], cached=False),
    Case("cdn-private-over-cc-public", [("Cache-Control", "public, max-age=60"),
         ("CDN-Cache-Control", "private")], cached=False),
    Case("cdn-max-age-over-cc-private", [("Cache-Control", "private"),
         ("CDN-Cache-Control", "max-age=60")], cached=True),
    Case("cdn-no-cache-is-validated", [("CDN-Cache-Control", "no-cache, max-age=60"),
         ("Cache-Control", "max-age=60")], cached=False),
    Case("cdn-max-age-0", [("CDN-Cache-Control", "max-age=0"),
         ("Cache-Control", "max-age=60")], cached=False),
    Case("cdn-s-maxage", [("CDN-Cache-Control", "s-maxage=60")], cached=True),
    Case("cdn-ignores-expires", [("CDN-Cache-Control", "must-revalidate"),
         ("Expires", "Thu, 01 Jan 2099 00:00:00 GMT")], cached=False),
    Case("cdn-unknown-directive-still-rules", [("Cache-Control", "max-age=60"),
         ("CDN-Cache-Control", "none")], cached=False),
    Case("cdn-decimal-max-age-ignored", [("Cache-Control", "max-age=60"),
         ("CDN-Cache-Control", "max-age=60.5")], cached=False),
    Case("cdn-invalid-falls-back-to-cc", [("Cache-Control", "max-age=60"),
         ("CDN-Cache-Control", "Max-Age=0")], cached=True),
    Case("cdn-invalid-falls-back-to-cc-no-store", [("Cache-Control", "no-store"),
         ("CDN-Cache-Control", "max-age=60,")], cached=False),
    Case("cdn-empty-falls-back", [("Cache-Control", "max-age=60"),
         ("CDN-Cache-Control", "")], cached=True),
    Case("cdn-lines-combine", [("CDN-Cache-Control", "max-age=60"),
         ("CDN-Cache-Control", "no-store")], cached=False),
    Case("off-list-field-changes-nothing", [("Cache-Control", "max-age=60"),
         ("Other-Cache-Control", "no-store")], cached=True),
    Case("empty-target-list-obeys-cc", [("Cache-Control", "max-age=60"),
         ("CDN-Cache-Control", "no-store")], cached=True, options="targeted: []"),
    Case("first-on-list-wins", [("Gateway-Cache-Control", "max-age=60"),
         ("CDN-Cache-Control", "no-store")], cached=True,
         options="targeted: [Gateway-Cache-Control, CDN-Cache-Control]"),
    Case("first-on-list-wins-no-store", [("Gateway-Cache-Control", "no-store"),
         ("CDN-Cache-Control", "max-age=60")], cached=False,
         options="targeted: [Gateway-Cache-Control, CDN-Cache-Control]"),
    Case("invalid-first-gives-way-to-second", [("Gateway-Cache-Control", "max-age=x y"),
         ("CDN-Cache-Control", "max-age=60"), ("Cache-Control", "no-store")], cached=True,
         options="targeted: [Gateway-Cache-Control, CDN-Cache-Control]"),
    Case("absent-first-gives-way-to-second", [("CDN-Cache-Control", "no-store"),
         ("Cache-Control", "max-age=60")], cached=False,
         options="targeted: [Gateway-Cache-Control, CDN-Cache-Control]"),
    Case("field-names-are-case-insensitive", [("cdn-cache-control", "max-age=60"),
         ("Cache-Control", "no-store")], cached=True),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_targeted_field(case: Case, make_gateway: GatewayFactory, upstream: Upstream) -> None:
    async def origin(_: web.Request) -> web.Response:
        response = web.Response(text="body")
        for name, value in case.headers:
            response.headers.add(name, value)
        return response

    upstream.route("/t", origin)
    gw = await make_gateway(config(case.options))
    first = await fetch(gw, "/t")
    second = await fetch(gw, "/t")
    assert upstream.hits["/t"] == (1 if case.cached else 2)
    assert (second.cache == "HIT") is case.cached
    for answer in (first, second):  # forwarded downstream as the origin sent them
        for name, value in case.headers:
            if name.lower().endswith("-cache-control") and name.lower() != "cache-control":
                assert value in answer.headers.getall(name, [])
