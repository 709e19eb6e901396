"""The cache's scripts, on the memory store and on real Redis alike (Lua vs Python twin)."""

from __future__ import annotations

import asyncio

import pytest
from multidict import CIMultiDict

from gateway.store import Store
from policies.cache.store import (
    CacheStore,
    Index,
    normalise_query,
    uri_from_member,
    uri_key,
)
from policies.cache.variants import selecting_pairs, variant_id

LOCK_MS = 5_000


@pytest.fixture
def cache(store: Store) -> CacheStore:
    return CacheStore(store)


URI = uri_key("route:r", "r", "example.com", "/a", "x=1")


async def put(
    cache: CacheStore,
    variant: str = "-",
    *,
    vary: str = "",
    blob: bytes = b"E",
    retention_ms: int = 60_000,
    token: str = "",
    lock_key: str = "",
    start: int = 0,
    keep: int = 4,
) -> int:
    return await cache.put(
        URI,
        vary=vary,
        variant=variant,
        blob=blob,
        retention_ms=retention_ms,
        lock_key=lock_key or URI.lock(variant),
        token=token,
        max_variants=keep,
        fill_start_us=start,
    )


def tag(key: str) -> str:
    return key[key.index("{") : key.index("}") + 1]


def test_keys_share_one_hash_tag_and_hide_user_input() -> None:
    keys = [URI.entry, URI.lock("-"), URI.lock("abc"), URI.passed, URI.tomb]
    assert len({tag(key) for key in keys}) == 1
    assert all(key.startswith("gw:cache:v1:") for key in keys)
    assert not any("example.com" in key or "/a" in key for key in keys)
    index = Index("route:r", "r")
    assert tag(index.lex) == tag(index.expiry) != tag(URI.entry)


def test_query_normalisation_and_index_members() -> None:
    assert normalise_query("b=2&a=1&&a=0") == "a=1&a=0&b=2"
    assert normalise_query("") == ""
    same = uri_key("s", "r", "h", "/p", normalise_query("b=2&a=1"))
    assert same == uri_key("s", "r", "h", "/p", normalise_query("a=1&b=2"))
    assert uri_from_member("s", "r", same.member) == same


async def test_miss_takes_the_lock_once(cache: CacheStore) -> None:
    first = await cache.lookup(URI, "", "-", lock=True, token="t1", lock_ms=LOCK_MS)
    second = await cache.lookup(URI, "", "-", lock=True, token="t2", lock_ms=LOCK_MS)
    plain = await cache.lookup(URI, "", "-", lock=False, token="t3", lock_ms=LOCK_MS)
    assert (first.state, first.blob, first.vary) == ("L", None, None)
    assert second.state == "W"
    assert 0 < second.lock_pttl <= LOCK_MS
    assert plain.state == "N"
    assert first.now_us > 1_600_000_000_000_000  # microseconds


async def test_store_then_hit_releases_the_lock(cache: CacheStore) -> None:
    await cache.lookup(URI, "", "-", lock=True, token="t1", lock_ms=LOCK_MS)
    stored = await put(cache, token="t1", lock_key=URI.lock("-"))
    assert stored > 0
    hit = await cache.lookup(URI, "", "-", lock=True, token="t2", lock_ms=LOCK_MS)
    assert (hit.state, hit.blob, hit.vary, hit.stored_ms) == ("H", b"E", "", stored)
    again = await cache.lookup(URI, "", "other", lock=True, token="t3", lock_ms=LOCK_MS)
    assert again.state == "L"


async def test_vary_mismatch_and_variants(cache: CacheStore) -> None:
    await put(cache, "v1", vary="foo", blob=b"one")
    await put(cache, "v2", vary="foo", blob=b"two")
    wrong = await cache.lookup(URI, "", "-", lock=True, token="t", lock_ms=LOCK_MS)
    assert (wrong.state, wrong.vary) == ("M", "foo")
    one = await cache.lookup(URI, "foo", "v1", lock=False, token="t", lock_ms=LOCK_MS)
    two = await cache.lookup(URI, "foo", "v2", lock=False, token="t", lock_ms=LOCK_MS)
    assert (one.blob, two.blob) == (b"one", b"two")
    missing = await cache.lookup(URI, "foo", "v3", lock=True, token="t", lock_ms=LOCK_MS)
    assert missing.state == "L"
    # The origin changes its Vary: older variants are dropped.
    await put(cache, "w1", vary="bar", blob=b"new")
    gone = await cache.lookup(URI, "bar", "v1", lock=False, token="t", lock_ms=LOCK_MS)
    assert gone.blob is None


async def test_variants_are_bounded_oldest_first(cache: CacheStore) -> None:
    for n in range(5):
        await put(cache, f"v{n}", vary="foo", blob=b"%d" % n, keep=3)
        await asyncio.sleep(0.002)  # distinct store times (ms)
    found = [
        (await cache.lookup(URI, "foo", f"v{n}", lock=False, token="t", lock_ms=1)).blob
        for n in range(5)
    ]
    assert found == [None, None, b"2", b"3", b"4"]


async def test_only_the_owner_releases_a_lock(cache: CacheStore) -> None:
    await cache.lookup(URI, "", "-", lock=True, token="owner", lock_ms=LOCK_MS)
    await cache.release(URI.lock("-"), URI, "intruder")
    assert (await cache.lookup(URI, "", "-", lock=True, token="x", lock_ms=1)).state == "W"
    await cache.release(URI.lock("-"), URI, "owner", pass_ms=LOCK_MS)
    after = await cache.lookup(URI, "", "-", lock=True, token="x", lock_ms=LOCK_MS)
    assert after.state == "P"  # released, and marked "not storable" for a while
    await put(cache)  # a stored answer clears the mark
    assert (await cache.lookup(URI, "", "-", lock=True, token="x", lock_ms=1)).state == "H"


async def test_refresh_lock_refuses_a_copy_that_changed(cache: CacheStore) -> None:
    stored = await put(cache)
    assert await cache.refresh_lock(URI, "-", stored - 1, "t1", LOCK_MS) == ("C", 0)
    assert await cache.refresh_lock(URI, "-", stored, "t1", LOCK_MS) == ("L", 0)
    state, pttl = await cache.refresh_lock(URI, "-", stored, "t2", LOCK_MS)
    assert state == "W"
    assert pttl > 0
    assert (await cache.refresh_lock(URI, "gone", stored, "t3", LOCK_MS))[0] == "C"


async def test_invalidation_drops_all_variants_and_stops_older_fills(cache: CacheStore) -> None:
    await put(cache, "v1", vary="foo")
    await put(cache, "v2", vary="foo")
    start = (await cache.lookup(URI, "foo", "v1", lock=False, token="t", lock_ms=1)).now_us
    await asyncio.sleep(0.002)
    assert await cache.invalidate(URI, LOCK_MS) == 1
    assert (await cache.lookup(URI, "foo", "v2", lock=False, token="t", lock_ms=1)).blob is None
    assert await put(cache, "v1", vary="foo", start=start) == 0  # began before the write
    assert await cache.invalidate(URI, LOCK_MS) == 0
    await asyncio.sleep(0.002)
    later = (await cache.lookup(URI, "", "-", lock=False, token="t", lock_ms=1)).now_us
    assert await put(cache, "v1", vary="foo", start=later) > 0


async def test_entries_expire_with_their_retention(cache: CacheStore) -> None:
    await put(cache, retention_ms=50)
    await asyncio.sleep(0.12)
    assert (await cache.lookup(URI, "", "-", lock=False, token="t", lock_ms=1)).blob is None


async def test_purge_index_ranges(cache: CacheStore) -> None:
    index = Index("route:r", "r")
    paths = ["/a", "/a/b", "/ab", "/b", "/caf\u00e9"]
    for path in paths:
        await cache.index_add(index, uri_key("route:r", "r", "h", path, ""), 2**42)
    everything = await cache.index_range(index, b"-", b"+", 100)
    assert [m.split("\x00")[0] for m in everything] == sorted(paths)
    prefix = await cache.index_range(index, b"[/a", b"[/a\xff", 100)
    assert [m.split("\x00")[0] for m in prefix] == ["/a", "/a/b", "/ab"]
    exact = await cache.index_range(index, b"[/a\x00", b"[/a\x00\xff", 100)
    assert [m.split("\x00")[0] for m in exact] == ["/a"]
    page = await cache.index_range(index, b"(" + everything[1].encode(), b"+", 2)
    assert page == everything[2:4]
    await cache.index_remove(index, prefix)
    left = await cache.index_range(index, b"-", b"+", 100)
    assert [m.split("\x00")[0] for m in left] == ["/b", "/caf\u00e9"]


async def test_expired_index_members_are_trimmed(cache: CacheStore) -> None:
    index = Index("route:r", "r")
    now = (await cache.lookup(URI, "", "-", lock=False, token="t", lock_ms=1)).now_us // 1000
    await cache.index_add(index, uri_key("route:r", "r", "h", "/old", ""), now + 20)
    await asyncio.sleep(0.05)
    await cache.index_add(index, uri_key("route:r", "r", "h", "/new", ""), now + 60_000)
    members = await cache.index_range(index, b"-", b"+", 10)
    assert [m.split("\x00")[0] for m in members] == ["/new"]


async def test_the_store_finds_a_variant_the_caller_could_not_name(cache: CacheStore) -> None:
    names = ("accept-language", "x-tenant")
    request = CIMultiDict([("Accept-Language", "EN, de"), ("X-Other", "1")])
    variant = variant_id(names, request)
    await put(cache, variant, vary=",".join(names), blob=b"english")
    pairs = selecting_pairs(request.items())
    hit = await cache.lookup(URI, "", "-", lock=True, token="t", lock_ms=1, headers=pairs)
    assert (hit.state, hit.blob, hit.variant, hit.vary) == (
        "H",
        b"english",
        variant,
        "accept-language,x-tenant",
    )
    other = selecting_pairs([("Accept-Language", "fr")])
    miss = await cache.lookup(URI, "", "-", lock=True, token="t", lock_ms=1, headers=other)
    assert (miss.state, miss.blob) == ("M", None)  # its lock key needs the variant: ask again
    assert miss.variant == variant_id(names, CIMultiDict({"Accept-Language": "fr"}))
