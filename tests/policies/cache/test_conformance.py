"""Cases in the style of the public HTTP cache conformance suite (cache-tests), through the
gateway as it is judged: a catch-all route with `cache: {ttl: 0s}` in front of the origin.

The origin numbers the requests it sees (`Server-Request-Count`), so "cached" means the
answer carries an older number than the request's, "not cached" the request's own. A step
expecting validation gets a 304 only for the previous step's validators.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from multidict import CIMultiDict

from policies.cache.syntax import format_http_date
from tests.conftest import GatewayFactory
from tests.policies.cache.conftest import config, fetch
from tests.support.upstream import Upstream

Header = tuple[str, str | int]
"""A header; an int value is an HTTP-date that many seconds from the origin's now."""


@dataclass
class Step:
    response: list[Header] = field(default_factory=list)
    request: list[tuple[str, str]] = field(default_factory=list)
    status: int = 200
    expect: str | None = None  # "cached", "not_cached", "validated"
    expect_status: int | None = None
    expect_headers: list[tuple[str, str]] = field(default_factory=list)
    expect_missing: list[str] = field(default_factory=list)
    pause: float = 0.0
    method: str = "GET"
    body: str | None = None
    target: str = ""


class Origin:
    """One test's origin, configured with the steps the client will run."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        self.seen: list[CIMultiDict[str]] = []
        self.now = time.time()

    @property
    def numbers(self) -> list[int]:
        """The client's request numbers, in the order the origin saw them."""
        return [int(headers["Req-Num"]) for headers in self.seen]

    async def __call__(self, request: web.Request) -> web.Response:
        self.seen.append(CIMultiDict(request.headers))
        step_no = int(request.headers["Req-Num"])
        step = self.steps[step_no - 1]
        status = step.status
        if step.expect == "validated":
            previous = dict(self._headers(self.steps[step_no - 2].response))
            inm, ims = (
                request.headers.get("If-None-Match"),
                request.headers.get("If-Modified-Since"),
            )
            matched = (previous.get("ETag") is not None and inm == previous.get("ETag")) or (
                previous.get("Last-Modified") is not None and ims == previous.get("Last-Modified")
            )
            status = 304 if matched else 999
        headers: CIMultiDict[str] = CIMultiDict(self._headers(step.response))
        headers["Server-Request-Count"] = str(len(self.seen))
        headers.setdefault("Content-Type", "text/plain")
        if status in (204, 304) or request.method == "HEAD":
            return web.Response(status=status, headers=headers)
        return web.Response(status=status, headers=headers, text=step.body or "origin body")

    def _headers(self, spec: list[Header]) -> list[tuple[str, str]]:
        now = self.now
        return [
            (name, format_http_date(now + value) if isinstance(value, int) else value)
            for name, value in spec
        ]


LM = -100_000
FRESH: list[Header] = [
    ("Expires", 100_000),
    ("Cache-Control", "max-age=100000"),
    ("Last-Modified", 0),
]
STALE: list[Header] = [("Expires", -5000), ("Last-Modified", LM), ("Date", 0)]

CASES: dict[str, list[Step]] = {
    "freshness-none": [Step(), Step(expect="not_cached")],
    "freshness-max-age": [Step([("Cache-Control", "max-age=3600")]), Step(expect="cached")],
    "freshness-max-age-quoted": [
        Step([("Cache-Control", 'max-age="3600"')]),
        Step(expect="cached"),
    ],
    "freshness-max-age-ignore-quoted": [
        Step([("Cache-Control", 'extension="max-age=100", max-age=1')], pause=1.2),
        Step(expect="not_cached"),
    ],
    "freshness-max-age-space-before-equals": [
        Step([("Cache-Control", "max-age =100")]),
        Step(expect="not_cached"),
    ],
    "freshness-max-age-0": [Step([("Cache-Control", "max-age=0")]), Step(expect="not_cached")],
    "freshness-max-age-negative": [
        Step([("Cache-Control", "max-age=-100")]),
        Step(expect="not_cached"),
    ],
    "freshness-max-age-max-plus": [
        Step([("Cache-Control", "max-age=99999999999")]),
        Step(expect="cached"),
    ],
    "freshness-max-age-age": [
        Step([("Date", 0), ("Cache-Control", "max-age=10"), ("Age", "15")]),
        Step(expect="not_cached"),
    ],
    "freshness-max-age-0-expires": [
        Step([("Expires", 10000), ("Cache-Control", "max-age=0"), ("Date", 0)]),
        Step(expect="not_cached"),
    ],
    "freshness-max-age-s-maxage-shared-longer-multiple": [
        Step([("Cache-Control", "max-age=3600"), ("Cache-Control", "s-maxage=1")], pause=1.2),
        Step(expect="not_cached"),
    ],
    "freshness-s-maxage-shared-shorter": [
        Step([("Cache-Control", "max-age=1, s-maxage=3600")], pause=1.2),
        Step(expect="cached"),
    ],
    "freshness-expires-future": [
        Step([("Expires", 30 * 86400), ("Date", 0)]),
        Step(expect="cached"),
    ],
    "freshness-expires-past": [
        Step([("Expires", -30 * 86400), ("Date", 0)]),
        Step(expect="not_cached"),
    ],
    "freshness-expires-invalid": [
        Step([("Expires", "0"), ("Date", 0)]),
        Step(expect="not_cached"),
    ],
    "freshness-expires-invalid-no-comma": [
        Step([("Expires", "Thu 18 Aug 2050 02:01:18 GMT"), ("Date", 0)]),
        Step(expect="not_cached"),
    ],
    "freshness-expires-age-slow-date": [
        Step([("Date", -10), ("Expires", 10), ("Age", "25")]),
        Step(expect="not_cached"),
    ],
    "cc-resp-private-shared": [
        Step([("Cache-Control", "private, max-age=3600")]),
        Step(expect="not_cached"),
    ],
    "cc-resp-no-store-fresh": [
        Step([("Cache-Control", "max-age=10000, no-store"), ("Expires", 10000), ("Date", 0)]),
        Step(expect="not_cached"),
    ],
    "cc-resp-no-cache-revalidate-fresh": [
        Step(
            [
                ("Cache-Control", "max-age=10000, no-cache"),
                ("Expires", 10000),
                ("Date", 0),
                ("ETag", '"abcd"'),
            ]
        ),
        Step(expect="validated"),
    ],
    "cc-resp-must-revalidate-stale": [
        Step([("Cache-Control", "max-age=1, must-revalidate"), ("ETag", '"abcd"')], pause=1.2),
        Step(expect="validated"),
    ],
    "headers-omit-headers-listed-in-Cache-Control-no-cache": [
        Step(
            [
                ("Cache-Control", 'no-cache="a, b"'),
                ("a", "1"),
                ("b", "2"),
                ("c", "3"),
                ("Cache-Control", "max-age=3600"),
                ("Date", 0),
            ]
        ),
        Step(expect="cached", expect_headers=[("c", "3")], expect_missing=["a", "b"]),
    ],
    "headers-omit-headers-listed-in-Connection": [
        Step(
            [
                ("Connection", "a, b"),
                ("a", "1"),
                ("b", "2"),
                ("c", "3"),
                ("Cache-Control", "max-age=3600"),
            ]
        ),
        Step(expect="cached", expect_headers=[("c", "3")], expect_missing=["a", "b"]),
    ],
    "heuristic-200-cached": [Step([("Last-Modified", -86400), ("Date", 0)]), Step(expect="cached")],
    "heuristic-404-cached": [
        Step([("Last-Modified", -86400), ("Date", 0)], status=404),
        Step(expect="cached", expect_status=404),
    ],
    "heuristic-201-not_cached": [
        Step([("Last-Modified", -86400), ("Date", 0)], status=201),
        Step(expect="not_cached", status=201, expect_status=201),
    ],
    "heuristic-599-public-cached": [
        Step([("Last-Modified", -86400), ("Date", 0), ("Cache-Control", "public")], status=599),
        Step(expect="cached", expect_status=599),
    ],
    "status-500-fresh": [
        Step([*FRESH, ("Date", 0)], status=500),
        Step(expect="cached", expect_status=500),
    ],
    "status-301-stale": [Step(STALE, status=301), Step(expect="not_cached", status=301)],
    "vary-no-match": [
        Step([("Expires", 5000), ("Date", 0), ("Vary", "Foo")], request=[("Foo", "1")]),
        Step(request=[("Foo", "2")], expect="not_cached"),
    ],
    "vary-omit": [
        Step([("Expires", 5000), ("Date", 0), ("Vary", "Foo")], request=[("Foo", "1")]),
        Step(expect="not_cached"),
    ],
    "vary-3-omit": [
        Step(
            [("Expires", 5000), ("Date", 0), ("Vary", "Foo, Bar, Baz")],
            request=[("Foo", "1"), ("Baz", "789")],
        ),
        Step(request=[("Foo", "1"), ("Baz", "789")], expect="cached"),
    ],
    "vary-normalise-space": [
        Step([("Expires", 5000), ("Date", 0), ("Vary", "Foo")], request=[("Foo", "1,2")]),
        Step(request=[("Foo", " 1, 2 ")], expect="cached"),
    ],
    "vary-syntax-empty-star-lines": [
        Step([("Expires", 5000), ("Date", 0), ("Vary", ""), ("Vary", "*")]),
        Step(expect="not_cached"),
    ],
    "conditional-etag-strong-respond-multiple-last": [
        Step([*FRESH, ("Date", 0), ("ETag", '"abcdef"')]),
        Step(
            request=[("If-None-Match", '"1234", "5678", "abcdef"')],
            expect="cached",
            expect_status=304,
            expect_headers=[("ETag", '"abcdef"')],
        ),
    ],
    "conditional-lm-fresh-earlier": [
        Step([("Cache-Control", "max-age=100000"), ("Last-Modified", -3000), ("Date", 0)]),
        Step(request=[("If-Modified-Since", "-2000")], expect="cached", expect_status=304),
    ],
    "conditional-etag-vary-headers": [
        Step(
            [("Expires", 1), ("ETag", '"abcdef"'), ("Date", 0), ("Vary", "Abc")],
            request=[("Abc", "123")],
            pause=1.2,
        ),
        Step(request=[("Abc", "123")], expect="validated"),
    ],
    "304-etag-update-stored-Test-Header": [
        Step([("Cache-Control", "max-age=1"), ("ETag", '"e"'), ("Test-Header", "A")], pause=1.2),
        Step(
            [("Cache-Control", "max-age=3600"), ("ETag", '"e"'), ("Test-Header", "B")],
            expect="validated",
            expect_headers=[("Test-Header", "B")],
        ),
        Step(expect="cached", expect_headers=[("Test-Header", "B")]),
    ],
    "304-lm-use-stored-Test-Header": [
        Step(
            [("Cache-Control", "max-age=1"), ("Last-Modified", LM), ("Test-Header", "A")],
            pause=1.2,
        ),
        Step(
            [("Cache-Control", "max-age=3600"), ("Last-Modified", LM)],
            expect="validated",
            expect_headers=[("Test-Header", "A")],
        ),
    ],
    "invalidate-PUT": [
        Step(FRESH),
        Step(method="PUT", body="abc"),
        Step(expect="not_cached"),
    ],
    "invalidate-DELETE-failed": [
        Step(FRESH),
        Step(method="DELETE", status=500),
        Step(expect="cached"),
    ],
    "invalidate-M-SEARCH-location": [
        Step(FRESH, target="/location_target"),
        Step([("Location", "LOCATION")], method="M-SEARCH", body="abc"),
        Step(expect="not_cached", target="/location_target"),
    ],
    "other-age-update-max-age": [
        Step([("Cache-Control", "max-age=600"), ("Date", 0), ("Age", "30")], pause=1.2),
        Step(expect="cached", expect_headers=[("Age", ">30")]),
    ],
    "other-date-update": [
        Step([("Expires", 30 * 86400), ("Date", 0)]),
        Step(expect="cached", expect_headers=[("Date", "DATE0")]),
    ],
    "other-authorization-public": [
        Step([("Cache-Control", "max-age=3600, public")], request=[("Authorization", "FOO")]),
        Step(expect="cached"),
    ],
    "other-authorization": [
        Step([("Expires", 30 * 86400), ("Date", 0)], request=[("Authorization", "FOO")]),
        Step(expect="not_cached"),
    ],
    "ccreq-ma0": [Step(FRESH), Step(request=[("Cache-Control", "max-age=0")], expect="not_cached")],
    "ccreq-oic": [Step(request=[("Cache-Control", "only-if-cached")], expect_status=504)],
    "stale-while-revalidate": [
        Step([("Cache-Control", "max-age=0, stale-while-revalidate=3600"), ("ETag", '"abc"')]),
        Step(
            [("Cache-Control", "max-age=3600"), ("ETag", '"def"')],
            expect_headers=[("ETag", '"abc"')],
            pause=0.5,
        ),
        Step(expect="cached", expect_headers=[("ETag", '"def"')]),
    ],
    "stale-if-error-cc-response": [
        Step([("Cache-Control", "max-age=0, stale-if-error=3600")]),
        Step(status=500, expect_status=200),
    ],
    "partial-store-complete-reuse-partial-suffix": [
        Step([("Cache-Control", "max-age=3600")], body="0123456789A"),
        Step(request=[("Range", "bytes=-1")], expect="cached", expect_status=206, body="A"),
    ],
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_conformance_case(
    case: str, make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    steps = CASES[case]
    origin = Origin(steps)
    base = f"/test/{case}"
    for step in steps:
        upstream.route(base + step.target, origin)
    gw = await make_gateway(config("ttl: 0s"))
    date0 = dict(origin._headers([("Date", 0)]))["Date"]
    for number, step in enumerate(steps, start=1):
        headers = {"Cache-Control": "nothing-to-see-here", "Pragma": "foo"}
        headers["Req-Num"] = str(number)
        for name, value in step.request:
            if name == "If-Modified-Since":
                value = format_http_date(origin.now + int(value))
            headers[name] = value
        response_headers = [
            (n, base + "/location_target" if v == "LOCATION" else v) for n, v in step.response
        ]
        step.response = response_headers
        answer = await fetch(
            gw,
            base + step.target,
            method=step.method,
            headers=headers,
            data=step.body if step.method not in ("GET", "HEAD") else None,
        )
        where = f"{case}: request {number}"
        served_by = int(answer.headers.get("Server-Request-Count", "0"))
        if step.expect == "cached":
            assert number not in origin.numbers, f"{where} not from cache"
        elif step.expect == "not_cached":
            assert origin.numbers[-1:] == [number], f"{where} from cache"
            assert served_by == len(origin.seen), f"{where} from cache"
        elif step.expect == "validated":
            assert answer.status != 999, f"{where} was not conditional"
            assert origin.numbers[-1:] == [number], where
            last = origin.seen[-1]
            assert "If-None-Match" in last or "If-Modified-Since" in last, where
        expected_status = step.expect_status or (step.status if not step.expect else None)
        if expected_status is not None:
            assert answer.status == expected_status, f"{where}: {answer.status}"
        if step.expect == "cached" and step.method == "GET" and step.body:
            assert answer.text == step.body, where
        for name, value in step.expect_headers:
            got = answer.headers.get(name)
            assert got is not None, f"{where}: no {name}"
            if value.startswith(">"):
                assert int(got) > int(value[1:]), f"{where}: {name} {got}"
            elif value == "DATE0":
                assert got == date0, f"{where}: {name} {got}"
            else:
                assert got == value, f"{where}: {name} {got!r}"
        for name in step.expect_missing:
            assert name not in answer.headers, f"{where}: {name} present"
        if step.pause:
            await asyncio.sleep(step.pause)
