"""Session id extraction and format rules, without I/O."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from policies.session.ids import challenge, new_id, take_bearer, take_cookie, valid_id

SID = "A" * 20 + "_-09az"


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("a" * 16, True),
        ("a" * 256, True),
        ("aZ09_-" * 5, True),
        ("a" * 15, False),
        ("a" * 257, False),
        ("../../etc/passwd/abc", False),
        ("abcdefgh ijklmnopq", False),
        ("abcdefghijklmnop\x00", False),
        ("abcdefghijklmnop\n", False),  # `$` would accept a trailing newline: fullmatch does not
        ("abcdefghijklmnop=", False),
        ("abcdefghijklmnop*", False),
        ("ábcdefghijklmnopq", False),
        ("", False),
    ],
)
def test_id_format(value: str, ok: bool) -> None:
    assert valid_id(value) is ok


def test_new_ids_are_valid_and_distinct() -> None:
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(valid_id(i) and len(i) == 43 for i in ids)


def test_cookie_is_taken_and_the_others_stay() -> None:
    headers = CIMultiDict([("Cookie", f"theme=dark; sid={SID}; lang=fr")])
    assert take_cookie(headers, "sid", keep=False) == SID
    assert headers.getall("Cookie") == ["theme=dark; lang=fr"]


def test_cookie_alone_removes_the_header() -> None:
    headers = CIMultiDict([("Cookie", f"sid={SID}")])
    assert take_cookie(headers, "sid", keep=False) == SID
    assert "Cookie" not in headers


def test_cookie_kept_when_forwarding_credentials() -> None:
    headers = CIMultiDict([("Cookie", f"a=1;sid={SID}")])
    assert take_cookie(headers, "sid", keep=True) == SID
    assert headers.getall("Cookie") == [f"a=1;sid={SID}"]


def test_cookie_name_is_exact_and_case_sensitive() -> None:
    headers = CIMultiDict([("Cookie", f"xsid={SID}; SID={SID}; sidx=1; a=sid")])
    assert take_cookie(headers, "sid", keep=False) is None
    assert headers.getall("Cookie") == [f"xsid={SID}; SID={SID}; sidx=1; a=sid"]


def test_several_cookie_headers_and_duplicates() -> None:
    other = "B" * 20
    headers = CIMultiDict([("Cookie", f"a=1; sid={SID}"), ("Cookie", f"sid={other}; b=2")])
    # The first wins (the most specific path comes first); every copy is removed.
    assert take_cookie(headers, "sid", keep=False) == SID
    assert headers.getall("Cookie") == ["a=1; b=2"]


def test_quoted_and_empty_cookie_values() -> None:
    assert take_cookie(CIMultiDict([("Cookie", f'sid="{SID}"')]), "sid", keep=False) == SID
    cleared = CIMultiDict([("Cookie", "sid=; a=1")])
    assert take_cookie(cleared, "sid", keep=False) is None
    assert cleared.getall("Cookie") == ["a=1"]


def test_garbage_cookie_header_does_not_raise() -> None:
    headers = CIMultiDict([("Cookie", ";;=;sid;sid=x=y; ;")])
    assert take_cookie(headers, "sid", keep=False) == "x=y"
    assert headers.getall("Cookie") == ["=; sid"]


def test_bearer() -> None:
    headers = CIMultiDict([("Authorization", f"Bearer {SID}")])
    assert take_bearer(headers, keep=False) == SID
    assert "Authorization" not in headers
    lower = CIMultiDict([("authorization", f"bearer   {SID}")])
    assert take_bearer(lower, keep=True) == SID
    assert lower["Authorization"] == f"bearer   {SID}"


def test_other_schemes_are_not_ours() -> None:
    headers = CIMultiDict([("Authorization", "Basic dXNlcjpwYXNz")])
    assert take_bearer(headers, keep=False) is None
    assert headers["Authorization"] == "Basic dXNlcjpwYXNz"
    empty = CIMultiDict([("Authorization", "Bearer ")])
    assert take_bearer(empty, keep=False) is None
    assert "Authorization" not in empty


def test_challenges() -> None:
    assert challenge("gateway", None, True, False) == 'Bearer realm="gateway"'
    assert challenge("gateway", None, True, True) == 'Bearer realm="gateway", error="invalid_token"'
    assert challenge("gateway", "sid", False, False) == 'Cookie realm="gateway", cookie-name="sid"'
    assert challenge("api", "sid", True, False) == (
        'Bearer realm="api", Cookie realm="api", cookie-name="sid"'
    )
