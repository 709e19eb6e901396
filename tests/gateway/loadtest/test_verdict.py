"""The verdict's bookkeeping on recorded answers (no I/O): who reaches a limiter, buckets."""

from __future__ import annotations

from gateway.config.loader import parse_config
from gateway.loadtest.plan import Plan
from gateway.loadtest.targets import NO_CREDENTIAL, UNKNOWN_SESSION, Record, build_targets
from gateway.loadtest.verdict import Latency, expected_limited, judge

CONFIG = """
upstreams: {b: {targets: ["http://127.0.0.1:9"]}}
policies:
  shared: {rate_limit: {algorithm: sliding_window, limit: 2, window: 10s, key: client_ip}}
routes:
  - name: one
    match: {path: /one}
    upstream: b
    policies: [shared]
  - name: two
    match: {path: /two}
    upstream: b
    policies: [shared]
  - name: auth
    match: {path: /auth}
    upstream: b
    policies:
      - session: {bearer: true}
      - rate_limit: {algorithm: sliding_window, limit: 1, window: 10s, key: header.X-Key}
  - name: cached
    match: {path: /cached}
    upstream: b
    policies:
      - cache: {ttl: 30s}
      - rate_limit: {algorithm: token_bucket, rate: 1/m, burst: 1, key: route}
"""


def targets():  # type: ignore[no-untyped-def]
    loaded = parse_config(CONFIG, "t.yaml", env={})
    found, skipped = build_targets(loaded, Plan(), rate=10)
    assert not skipped
    return found


def test_a_named_definition_counts_every_route_in_one_bucket() -> None:
    records: list[Record] = [
        ("one", 1.0, 200, "", NO_CREDENTIAL, 0),
        ("two", 1.1, 200, "", NO_CREDENTIAL, 0),
        ("one", 1.2, 429, "", NO_CREDENTIAL, 0),
        ("two", 1.3, 429, "", NO_CREDENTIAL, 0),
    ]
    refused, expected = expected_limited(targets(), records, {})
    assert [refused[i] for i in range(4)] == [False, False, True, True]
    assert (expected["one"].reached, expected["one"].admitted) == (2, 1)
    # client_ip is this machine's, whatever the run: the window may hold up to 2 from before.
    assert expected["one"].stale == 2


def test_unknown_sessions_and_cache_hits_never_reach_a_later_limiter() -> None:
    sessions = {"session:": [{"id": "x", "fields": {}}]}
    records: list[Record] = [
        ("auth", 1.0, 401, "", UNKNOWN_SESSION, 0),
        ("auth", 1.1, 200, "", 0, 0),
        ("auth", 1.2, 200, "", 0, 1),  # another key: its own bucket
        ("auth", 1.3, 429, "", 0, 0),
        ("cached", 1.0, 200, "MISS", NO_CREDENTIAL, 0),
        ("cached", 1.1, 200, "HIT", NO_CREDENTIAL, 0),
        ("cached", 1.2, 200, "HIT", NO_CREDENTIAL, 0),
    ]
    _, expected = expected_limited(targets(), records, sessions)
    assert (expected["auth"].reached, expected["auth"].admitted) == (3, 2)
    assert expected["auth"].stale == 0  # header keys are new values each run
    assert (expected["cached"].reached, expected["cached"].admitted) == (1, 1)


def test_a_route_admitting_more_than_declared_fails_and_says_why() -> None:
    found = [t for t in targets() if t.route == "auth"]
    records: list[Record] = [("auth", 1 + n / 10, 200, "", 0, 0) for n in range(30)]
    sessions = {"session:": [{"id": "x", "fields": {}}]}
    [verdict] = judge(found, records, {"auth": Latency(30, 2, 5)}, 3.0, sessions)
    assert not verdict.ok
    assert verdict.misses == [
        "admitted 30 of 30, the file's 1 per 10s window by header.X-Key admits 1 (allowed 0..4)"
    ]
