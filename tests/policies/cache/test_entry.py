"""The stored entry format, the near cache's bookkeeping (no I/O)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from policies.cache.entry import CorruptEntry, Entry
from policies.cache.freshness import Freshness
from policies.cache.near import NearCache, VaryHints


def entry(body: bytes = b"hello", fields: dict[str, str] | None = None, **headers: str) -> Entry:
    return Entry(
        status=200,
        headers=[("Content-Type", "text/plain"), *headers.items(), *(fields or {}).items()],
        body=body,
        initial_age=3.5,
        freshness=Freshness(60, stale_while_revalidate=5, stale_if_error=7, no_stale=True),
        vary="accept-encoding",
    )


def test_encode_decode_round_trip() -> None:
    original = entry(ETag='"x"', Last_Modified="Sun, 06 Nov 1994 08:49:37 GMT")
    decoded = Entry.decode(original.encode(), stored_at=123.0)
    assert decoded == Entry(
        status=200,
        headers=original.headers,
        body=b"hello",
        initial_age=3.5,
        freshness=original.freshness,
        vary="accept-encoding",
        stored_at=123.0,
    )
    assert decoded.etag == '"x"'


def test_binary_bodies_survive() -> None:
    body = bytes(range(256)) * 10
    assert Entry.decode(entry(body).encode(), 0).body == body


@pytest.mark.parametrize("blob", [b"", b"GWC1", b"nope" + b"\x00" * 10, b"GWC1\x00\x00\x00\x02{}"])
def test_foreign_values_are_refused(blob: bytes) -> None:
    with pytest.raises(CorruptEntry):
        Entry.decode(blob, 0)


def test_served_headers() -> None:
    stored = entry(Age="100", ETag='"x"')
    response = stored.response(age=12.9, result="HIT", head=False)
    assert response.headers["Age"] == "12"  # generated, not the stored one
    assert response.headers["X-Cache"] == "HIT"
    assert response.body == b"hello"
    head = stored.response(age=0, result="HIT", head=True)
    assert (head.body, head.headers["Content-Length"]) == (b"", "5")
    again = stored.response(age=1, result="STALE", head=False)
    assert again.headers["X-Cache"] == "STALE"
    assert response.headers["X-Cache"] == "HIT"  # each response has its own headers


def test_not_modified_carries_only_validator_and_cache_fields() -> None:
    stored = entry(ETag='"x"', Vary="Accept-Encoding", fields={"Cache-Control": "max-age=60"})
    response = stored.not_modified(age=1, result="HIT")
    assert response.status == 304
    assert set(response.headers) == {"ETag", "Vary", "Cache-Control", "Age", "X-Cache"}


def test_304_updates_every_field_but_content_length_and_age() -> None:
    stored = entry(ETag='"x"', Age="5", fields={"Content-Length": "5", "X-Old": "keep"})
    update = CIMultiDict(
        [("Content-Type", "text/html"), ("Content-Length", "0"), ("X-New", "1"), ("X-New", "2")]
    )
    merged = stored.merged_headers(update)
    assert merged["Content-Type"] == "text/html"
    assert merged["Content-Length"] == "5"
    assert merged.getall("X-New") == ["1", "2"]
    assert merged["X-Old"] == "keep"
    assert "Age" not in merged


def test_near_cache_drops_by_tag_and_stays_bounded() -> None:
    near = NearCache(max_bytes=8000)
    one, other = entry(b"x" * 100), entry(b"y" * 100)
    near.put(("r", "h", "/a", "x=1&y=2", ""), "tag-a", "", "-", one)
    near.put(("r", "h", "/a", "y=2&x=1", ""), "tag-a", "", "-", one)  # same URI, other spelling
    near.put(("r", "h", "/b", "", ""), "tag-b", "", "-", other)
    item = near.get(("r", "h", "/a", "x=1&y=2", ""))
    assert item is not None
    assert item.variants["-"] is one
    near.drop("tag-a")
    assert near.get(("r", "h", "/a", "y=2&x=1", "")) is None
    assert near.get(("r", "h", "/b", "", "")) is not None
    for n in range(100):
        near.put(("r", "h", f"/{n}", "", ""), f"t{n}", "", "-", entry(b"z" * 200))
    assert near.used <= near.max_bytes
    assert near.get(("r", "h", "/99", "", "")) is not None
    assert near.get(("r", "h", "/0", "", "")) is None
    near.put(("r", "h", "/big", "", ""), "big", "", "-", entry(b"b" * 5000))
    assert near.get(("r", "h", "/big", "", "")) is None  # too big for its share
    near.drop(None)
    assert (len(near), near.used) == (0, 0)


def test_vary_hints() -> None:
    hints = VaryHints(size=2)
    hints.put("a", "accept")
    hints.put("b", "")  # known: no Vary
    assert (hints.get("a"), hints.get("b"), hints.get("new")) == ("accept", "", None)
    hints.put("c", "x")  # the least recently used goes
    assert (hints.get("a"), hints.get("b"), hints.get("c")) == (None, "", "x")
