"""Field syntax: Cache-Control, HTTP dates, Age, Vary and entity tags (no I/O)."""

from __future__ import annotations

import pytest

from policies.cache.syntax import (
    MAX_DELTA,
    delta_seconds,
    entity_tags,
    field_names,
    format_http_date,
    opaque_tag,
    parse_age,
    parse_cache_control,
    parse_http_date,
    vary_names,
)

# 1994-11-06 08:49:37 UTC, RFC 9110 5.6.7's example instant.
EXAMPLE = 784111777.0


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["max-age=60"], {"max-age": "60"}),
        (["MaX-AgE=60, Public"], {"max-age": "60", "public": None}),
        (['max-age="3600"'], {"max-age": "3600"}),
        (["max-age=1, max-age=1800"], {"max-age": "1"}),  # the first occurrence wins
        (["max-age=1800", "max-age=1"], {"max-age": "1800"}),
        (['extension="max-age=100", max-age=1'], {"extension": "max-age=100", "max-age": "1"}),
        (['max-age=1, extension="max-age=100"'], {"max-age": "1", "extension": "max-age=100"}),
        (["max-age =100"], {}),  # space before "=": not a directive
        (["max-age= 100"], {}),
        (["max-age='3600', public"], {"max-age": "'3600'", "public": None}),  # not delta-seconds
        (['no-cache="a, b", max-age=5'], {"no-cache": "a, b", "max-age": "5"}),
        (["foobar, max-age=3600"], {"foobar": None, "max-age": "3600"}),
        ([" , ,private ,"], {"private": None}),
        (['x="unterminated, max-age=5'], {}),
        (['a="q\\"uote", b'], {"a": 'q"uote', "b": None}),
        (["nothing-to-see-here"], {"nothing-to-see-here": None}),
        ([], {}),
    ],
)
def test_cache_control_parsing(lines: list[str], expected: dict[str, str | None]) -> None:
    assert parse_cache_control(lines) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("3600", 3600),
        ("003600", 3600),
        ("2147483648", MAX_DELTA),
        ("99999999999", MAX_DELTA),  # RFC 9111 1.2.2: too big counts as 2^31
        ("-100", None),
        ("a100", None),
        ("100a", None),
        ("3600.0", None),
        ("", None),
        (None, None),
    ],
)
def test_delta_seconds(value: str | None, expected: int | None) -> None:
    assert delta_seconds(value) == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["15"], 15),
        (["0"], 0),
        ([" 7 "], 7),
        (["abc"], None),
        (["-7200"], None),
        (["7200.0"], None),
        (["3600s"], None),
        (["+5"], None),
        (["7200,0"], 7200),  # a list: RFC 9111 5.1 says its first member counts
        (["7200", "0"], 7200),
        (["0", "7200"], 0),
        (["abc, 5"], None),  # the first member is invalid: ignored, not the next one
        ([", 5"], 5),  # empty list members are not members (RFC 9110 5.6.1)
        ([], None),
        (["99999999999"], MAX_DELTA),
    ],
)
def test_age_parsing(lines: list[str], expected: int | None) -> None:
    assert parse_age(lines) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", EXAMPLE),  # IMF-fixdate
        ("Sunday, 06-Nov-94 08:49:37 GMT", EXAMPLE),  # obsolete RFC 850
        ("Sun Nov  6 08:49:37 1994", EXAMPLE),  # asctime
        ("SUN, 06 NOV 1994 08:49:37 gmt", EXAMPLE),  # names case-insensitively
        ("Sun, 06 Nov 1994 08:49:37 UTC", None),
        ("Sun, 06 Nov 94 08:49:37 GMT", None),  # two-digit year in the fixdate form
        ("Sun 06 Nov 1994 08:49:37 GMT", None),  # no comma
        ("Sun, 06  Nov  1994 08:49:37 GMT", None),  # doubled spaces
        ("Sun, 06-Nov-1994 08:49:37 GMT", None),  # dashes
        ("Sun, 06 Nov 1994 08.49.37 GMT", None),
        ("Sun, 06 Nov 1994 8:49:37 GMT", None),  # one-digit hour
        ("Xyz, 06 Nov 1994 08:49:37 GMT", None),
        ("Sun, 06 Foo 1994 08:49:37 GMT", None),
        ("0", None),
        ("", None),
        (None, None),
    ],
)
def test_http_dates(value: str | None, expected: float | None) -> None:
    assert parse_http_date(value) == expected


def test_rfc850_two_digit_year_is_never_more_than_50_years_ahead() -> None:
    now = parse_http_date("Thu, 01 Jan 2026 00:00:00 GMT")
    assert now is not None
    in_2050 = parse_http_date("Sunday, 06-Nov-50 08:49:37 GMT", now)
    in_1994 = parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", now)
    assert in_2050 is not None
    assert in_2050 > now
    assert in_1994 == EXAMPLE


def test_formatted_dates_parse_back() -> None:
    assert format_http_date(EXAMPLE) == "Sun, 06 Nov 1994 08:49:37 GMT"
    assert parse_http_date(format_http_date(EXAMPLE)) == EXAMPLE


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], ()),
        (["Accept-Encoding"], ("accept-encoding",)),
        (["Foo, Bar", "baz"], ("bar", "baz", "foo")),
        (["foo, FOO"], ("foo",)),
        ([", ,Foo"], ("foo",)),
        (["*"], None),
        (["*, *"], None),
        (["", "*"], None),
        (["Foo, *"], None),
        (["*, Foo"], None),
    ],
)
def test_vary_names(lines: list[str], expected: tuple[str, ...] | None) -> None:
    assert vary_names(lines) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"a"', ['"a"']),
        ('"a", W/"b" ,"c"', ['"a"', 'W/"b"', '"c"']),
        ('"a,b", "c"', ['"a,b"', '"c"']),
        ("*", None),
        (" * ", None),
        ("abc", ["abc"]),
    ],
)
def test_entity_tag_lists(value: str, expected: list[str] | None) -> None:
    assert entity_tags(value) == expected


@pytest.mark.parametrize(
    ("tag", "opaque"),
    [('"x"', "x"), ('W/"x"', "x"), ('w/"x"', "x"), ("x", "x"), (' "x" ', "x")],
)
def test_opaque_tags(tag: str, opaque: str) -> None:
    assert opaque_tag(tag) == opaque


def test_qualified_field_names() -> None:
    assert field_names("a, B ,") == frozenset({"a", "b"})
    assert field_names(None) == frozenset()
