"""RFC 9111 / RFC 5861 rules as tables (no I/O, no clock)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from policies.cache.freshness import (
    Freshness,
    RequestDirectives,
    Rules,
    Use,
    assess,
    current_age,
    initial_age,
    not_modified,
    on_error,
    request_directives,
    usable,
    while_revalidating,
)
from policies.cache.syntax import format_http_date
from policies.cache.variants import NO_VARIANT, selecting_value, variant_id

NOW = 1_800_000_000.0
DATE = format_http_date(NOW)


def at(offset: float) -> str:
    return format_http_date(NOW + offset)


def verdict(
    *headers: tuple[str, str],
    status: int = 200,
    method: str = "GET",
    rules: Rules | None = None,
    authorized: bool = False,
    request_cc: dict[str, str | None] | None = None,
) -> tuple[str | None, Freshness | None]:
    result = assess(
        method=method,
        status=status,
        request_cc=request_cc or {},
        request_authorized=authorized,
        headers=CIMultiDict(headers),
        rules=rules or Rules(),
        response_time=NOW,
    )
    return result.reason, result.freshness


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ((("Cache-Control", "max-age=60"),), 200, None),
        ((("Cache-Control", "no-store, max-age=60"),), 200, "no-store"),
        ((("Cache-Control", "No-StOrE"),), 200, "no-store"),
        ((("Cache-Control", "private, max-age=60"),), 200, "private"),
        ((("Cache-Control", "max-age=60"), ("Set-Cookie", "a=b")), 200, "set-cookie"),
        ((("Cache-Control", "max-age=60"), ("Vary", "Foo, *")), 200, "vary *"),
        ((("Cache-Control", "max-age=60"),), 206, "status"),
        ((("Cache-Control", "max-age=60"),), 304, "status"),
        ((("Cache-Control", "max-age=60"),), 500, None),  # explicit freshness: any final status
        ((("Cache-Control", "max-age=60"),), 599, None),
        ((), 500, "no explicit freshness"),  # not heuristically cacheable
        ((), 201, "no explicit freshness"),
        ((("Cache-Control", "public"), ("Last-Modified", at(-1000))), 599, None),
        ((), 200, "nothing to reuse"),  # no ttl, no validator: storing would be useless
        ((("ETag", '"v"'),), 200, None),  # stale at once, but can be revalidated
        ((("Cache-Control", "no-cache"),), 200, "nothing to reuse"),
        ((("Cache-Control", "no-cache"), ("ETag", '"v"')), 200, None),
        ((("Cache-Control", "no-store, must-understand, max-age=9"),), 200, None),
        ((("Cache-Control", "no-store, must-understand, max-age=9"),), 299, "must-understand"),
        ((("Expires", "0"), ("ETag", '"v"')), 500, None),  # explicit (expired), revalidatable
    ],
)
def test_storage_rules(headers: tuple[tuple[str, str], ...], status: int, reason: str) -> None:
    assert verdict(*headers, status=status)[0] == reason


def test_only_get_is_stored_and_request_no_store_forbids_it() -> None:
    cc = ("Cache-Control", "max-age=60")
    assert verdict(cc, method="HEAD")[0] == "method"
    assert verdict(cc, request_cc={"no-store": None})[0] == "request no-store"


@pytest.mark.parametrize(
    ("cc", "reason"),
    [
        ("max-age=60", "authorization"),
        ("max-age=60, public", None),
        ("s-maxage=60", None),
        ("max-age=60, must-revalidate", None),
        ("max-age=60, proxy-revalidate", "authorization"),
    ],
)
def test_responses_to_authorized_requests(cc: str, reason: str | None) -> None:
    assert verdict(("Cache-Control", cc), authorized=True)[0] == reason


def test_set_cookie_is_stored_when_the_policy_allows() -> None:
    rules = Rules(store_set_cookie=True)
    headers = (("Cache-Control", "max-age=60"), ("Set-Cookie", "a=b"))
    assert verdict(*headers, rules=rules)[0] is None


def test_qualified_private_and_no_cache_only_omit_their_fields() -> None:
    result = assess(
        method="GET",
        status=200,
        request_cc={},
        request_authorized=False,
        headers=CIMultiDict({"Cache-Control": 'private="a", no-cache="B, c", max-age=9'}),
        rules=Rules(),
        response_time=NOW,
    )
    assert result.reason is None
    assert result.omit == frozenset({"a", "b", "c"})
    assert result.freshness is not None
    assert not result.freshness.no_cache


@pytest.mark.parametrize(
    ("headers", "rules", "lifetime"),
    [
        ((("Cache-Control", "max-age=60"),), Rules(), 60),
        ((("Cache-Control", "max-age=3600, s-maxage=1"),), Rules(), 1),  # s-maxage wins
        ((("Cache-Control", "s-maxage=1, max-age=3600"),), Rules(), 1),
        ((("Cache-Control", "max-age=1"), ("Cache-Control", "s-maxage=3600")), Rules(), 3600),
        (
            (
                ("Cache-Control", "max-age=0"),
                ("Expires", at(10_000)),
                ("Date", DATE),
                ("ETag", "x"),
            ),
            Rules(),
            0,
        ),
        ((("Cache-Control", "max-age=3600"), ("Expires", "0")), Rules(), 3600),
        ((("Cache-Control", "max-age=a100"), ("ETag", '"x"')), Rules(), 0),  # invalid: ignored
        ((("Expires", at(100)), ("Date", DATE)), Rules(), 100),
        ((("Expires", at(300)), ("Date", at(400)), ("ETag", "x")), Rules(), 0),  # before Date
        ((("Expires", "0"), ("ETag", '"x"')), Rules(), 0),  # invalid Expires: expired
        ((("Expires", "Thu, 18 Aug 2050 02:01:18 UTC"), ("ETag", '"x"')), Rules(), 0),
        ((("Expires", at(10)), ("Date", "foo")), Rules(), 10),  # bad Date: arrival time
        ((("Cache-Control", "max-age=60"),), Rules(ttl=5, respect_origin=False), 5),
        ((("Cache-Control", "max-age=60"),), Rules(ttl=5), 60),
        ((("ETag", '"x"'),), Rules(ttl=5), 5),  # no explicit freshness: the policy's ttl
        ((("Last-Modified", at(-1000)), ("Date", DATE)), Rules(), 100),  # 10% heuristic
        ((("Last-Modified", at(-1000)), ("Date", DATE)), Rules(heuristic_fraction=0.5), 500),
        ((("Last-Modified", at(-(10**7))), ("Date", DATE)), Rules(), 86400),  # capped at a day
        ((("Last-Modified", at(-1000)), ("Date", DATE)), Rules(ttl=7), 7),  # ttl first
        ((("Last-Modified", at(1000)), ("Date", DATE), ("ETag", '"x"')), Rules(), 0),
    ],
)
def test_freshness_lifetime(
    headers: tuple[tuple[str, str], ...], rules: Rules, lifetime: float
) -> None:
    reason, freshness = verdict(*headers, rules=rules)
    assert reason is None
    assert freshness is not None
    assert freshness.lifetime == lifetime


@pytest.mark.parametrize(
    ("cc", "rules", "swr", "sie", "no_stale"),
    [
        ("max-age=1", Rules(stale_while_revalidate=30, stale_if_error=60), 30, 60, False),
        ("max-age=1, stale-while-revalidate=5, stale-if-error=7", Rules(), 5, 7, False),
        (
            "max-age=1, stale-while-revalidate=5",
            Rules(stale_while_revalidate=30, respect_origin=False),
            30,
            0,
            False,
        ),
        ("max-age=1, must-revalidate", Rules(), 0, 0, True),
        ("max-age=1, proxy-revalidate", Rules(), 0, 0, True),
        ("s-maxage=1", Rules(), 0, 0, True),  # s-maxage implies proxy-revalidate
    ],
)
def test_stale_windows(cc: str, rules: Rules, swr: float, sie: float, no_stale: bool) -> None:
    _, freshness = verdict(("Cache-Control", cc), rules=rules)
    assert freshness is not None
    assert (freshness.stale_while_revalidate, freshness.stale_if_error) == (swr, sie)
    assert freshness.no_stale is no_stale


@pytest.mark.parametrize(
    ("age", "date", "request_time", "response_time", "expected"),
    [
        (None, NOW, NOW, NOW, 0),
        (15, NOW, NOW, NOW, 15),  # the upstream's Age
        (None, NOW - 10, NOW, NOW, 10),  # apparent age from a Date in the past
        (None, NOW + 10, NOW, NOW, 0),  # a Date in the future is no negative age
        (5, NOW, NOW - 2, NOW, 7),  # response delay added to Age
        (5, NOW - 20, NOW, NOW, 20),  # the larger of the two
        (None, None, NOW, NOW, 0),
    ],
)
def test_initial_age(
    age: int | None, date: float | None, request_time: float, response_time: float, expected: float
) -> None:
    got = initial_age(age=age, date=date, request_time=request_time, response_time=response_time)
    assert got == expected


def test_current_age_adds_resident_time() -> None:
    assert current_age(30, NOW, NOW + 5) == 35
    assert current_age(30, NOW, NOW - 5) == 30  # a clock going back is no negative residence


FRESH_60 = Freshness(lifetime=60)


@pytest.mark.parametrize(
    ("age", "freshness", "cc", "use"),
    [
        (10, FRESH_60, [], Use.FRESH),
        (60, FRESH_60, [], Use.VALIDATE),
        (10, Freshness(lifetime=60, no_cache=True), [], Use.VALIDATE),
        (10, FRESH_60, ["no-cache"], Use.VALIDATE),
        (10, FRESH_60, ["max-age=5"], Use.VALIDATE),
        (10, FRESH_60, ["max-age=10"], Use.FRESH),
        (10, FRESH_60, ["min-fresh=60"], Use.VALIDATE),
        (10, FRESH_60, ["min-fresh=20"], Use.FRESH),
        (70, FRESH_60, ["max-stale=20"], Use.STALE),
        (90, FRESH_60, ["max-stale=20"], Use.VALIDATE),
        (10_000, FRESH_60, ["max-stale"], Use.STALE),
        (70, Freshness(lifetime=60, no_stale=True), ["max-stale"], Use.VALIDATE),
        (10, FRESH_60, ["only-if-cached, nothing-to-see-here"], Use.FRESH),
        (10, FRESH_60, ["max-age=abc"], Use.FRESH),  # invalid: ignored
    ],
)
def test_usable(age: float, freshness: Freshness, cc: list[str], use: Use) -> None:
    assert usable(age, freshness, request_directives(cc)) is use


def test_request_directives() -> None:
    cc = request_directives(["no-cache, max-stale, min-fresh=3", "only-if-cached, max-age=9"])
    assert cc.no_cache
    assert cc.only_if_cached
    assert not cc.no_store
    assert (cc.max_age, cc.min_fresh, cc.max_stale) == (9, 3, float("inf"))
    assert request_directives([]) == RequestDirectives()
    assert request_directives(["stale-if-error=30"]).stale_if_error == 30


@pytest.mark.parametrize(
    ("age", "freshness", "cc", "swr", "sie"),
    [
        (65, Freshness(60, stale_while_revalidate=10, stale_if_error=20), [], True, True),
        (75, Freshness(60, stale_while_revalidate=10, stale_if_error=20), [], False, True),
        (85, Freshness(60, stale_while_revalidate=10, stale_if_error=20), [], False, False),
        (85, Freshness(60), ["stale-if-error=30"], False, True),  # the client's window
        (65, Freshness(60, 10, 20, no_stale=True), [], False, False),
        (65, Freshness(60, stale_while_revalidate=10), ["no-cache"], False, False),
        (65, Freshness(60, stale_while_revalidate=10), ["max-age=100"], False, False),
    ],
)
def test_stale_windows_at_serve_time(
    age: float, freshness: Freshness, cc: list[str], swr: bool, sie: bool
) -> None:
    directives = request_directives(cc)
    assert while_revalidating(age, freshness, directives) is swr
    assert on_error(age, freshness, directives) is sie


@pytest.mark.parametrize(
    ("name", "lines", "value"),
    [
        ("foo", ["1,2"], "1,2"),
        ("foo", [" 1, 2 "], "1,2"),
        ("foo", ["1", "2"], "1,2"),  # lines combined
        ("foo", ["A"], "A"),  # case kept where it may matter
        ("foo", ["b, a"], "b,a"),  # order kept: only the negotiation fields are sorted
        ("accept-encoding", ["GZIP, Br"], "br,gzip"),
        ("accept-encoding", ["gzip;q=1.0, br;Q=1"], "br,gzip"),
        ("accept-encoding", ["gzip;q=0.50, br"], "br,gzip;q=0.5"),
        ("accept-encoding", ["gzip, br;q=0.9, *;q=0"], "gzip,br;q=0.9,*;q=0"),
        ("accept-language", ["en, fr"], "en,fr"),
        ("accept-language", ["en,fr"], "en,fr"),
        ("accept-language", ["fr, en"], "en,fr"),
        ("accept-language", ["fr", "EN"], "en,fr"),
        ("accept-language", ["fr;q=0.9, en"], "en,fr;q=0.9"),
        ("accept-language", ["en;q=2, fr"], "en;q=2,fr"),  # invalid weight: as written
        ("accept", ["text/html ; q=0.9"], "text/html;q=0.9"),
        ("accept", ["text/html;level=1; charset=UTF-8"], "text/html;charset=utf-8;level=1"),
        ("accept", ["text/*, text/html"], "text/*,text/html"),
        ("foo", [], None),
        ("foo", [""], ""),
    ],
)
def test_selecting_header_normalisation(name: str, lines: list[str], value: str | None) -> None:
    assert selecting_value(name, lines) == value


def test_variant_ids() -> None:
    one = variant_id(["foo"], CIMultiDict({"Foo": "1, 2"}))
    assert one == variant_id(["foo"], CIMultiDict([("Foo", "1"), ("Foo", "2")]))
    assert one != variant_id(["foo"], CIMultiDict({"Foo": "1"}))
    absent = variant_id(["foo"], CIMultiDict())
    assert absent != variant_id(["foo"], CIMultiDict({"Foo": ""}))  # absent is not empty
    assert variant_id([], CIMultiDict({"Foo": "1"})) == NO_VARIANT
    two = variant_id(["bar", "foo"], CIMultiDict({"Foo": "1", "Bar": "abc", "Other": "x"}))
    assert two == variant_id(["bar", "foo"], CIMultiDict({"Bar": "abc", "Foo": "1"}))


@pytest.mark.parametrize(
    ("method", "inm", "ims", "etag", "lm", "expected"),
    [
        ("GET", '"abc"', None, '"abc"', None, True),
        ("GET", 'W/"abc"', None, '"abc"', None, True),  # weak comparison
        ("GET", '"1", "abc", "2"', None, '"abc"', None, True),
        ("GET", '"1", "2"', None, '"abc"', None, False),
        ("GET", "*", None, None, None, True),
        ("GET", '"abc"', None, None, None, False),
        ("HEAD", '"abc"', None, '"abc"', None, True),
        ("POST", '"abc"', None, '"abc"', None, False),
        ("GET", '"x"', at(0), '"abc"', NOW - 100, False),  # If-None-Match decides alone
        ("GET", None, at(-100), None, NOW - 100, True),
        ("GET", None, at(-50), None, NOW - 100, True),
        ("GET", None, at(-200), None, NOW - 100, False),
        ("GET", None, "Sunday, 06-Nov-94 08:49:37 GMT", None, 784111777.0, True),
        ("GET", None, "garbage", None, NOW - 100, False),
        ("GET", None, at(+100), None, NOW - 100, False),  # in the future: ignored
    ],
)
def test_not_modified(
    method: str,
    inm: str | None,
    ims: str | None,
    etag: str | None,
    lm: float | None,
    expected: bool,
) -> None:
    got = not_modified(
        method=method,
        if_none_match=inm,
        if_modified_since=ims,
        etag=etag,
        last_modified=lm,
        now=NOW,
    )
    assert got is expected
