"""Bad input through `gateway run` on a real socket, fuzzed and targeted.

The fuzz: random methods, request-targets (odd bytes, percent-encodings, dot segments,
absolute form), versions, header names and values (smuggling-prone Content-Length /
Transfer-Encoding combinations, cookies, credentials, rate-limit keys, cache directives) and
bodies, sent raw to a worker serving every policy on a private Redis. Every answer must be
one well-formed HTTP response; a status of 500 or more only as the documented 502/504 of an
upstream failure; the gateway's own errors in its JSON shape without echoing what was sent;
and the worker keeps serving a normal request after each. At the end, the process log holds
no traceback and no worker was replaced.

Targeted: invalid cookies (fuzzed too) are 401 without a crash, huge header and query values
used as rate-limit keys end up as fixed-size digests in Redis, a client varying a header
cannot make the cache hold more than `max_variants` copies of a URI, CONNECT is refused.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.config.loader import parse_config
from gateway.errors import ConfigError
from loadtest.procs import Children, free_port, start_gateway
from tests.reliability.heads import (
    MARKER,
    check_answer,
    exchange,
    exchange_all,
    normal_request_works,
    requests,
)
from tests.reliability.upstream_thread import ThreadedUpstream
from tests.support.redis_server import RedisServer


@dataclass
class Served:
    port: int
    log: Path
    access: Path
    redis: RedisServer
    upstream: ThreadedUpstream


@pytest.fixture(scope="module")
def served(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    redis_server.cli("FLUSHALL")
    workdir = tmp_path_factory.mktemp("fuzz-heads")
    port, admin = free_port(), free_port()
    config = workdir / "gateway.yaml"
    log = workdir / "gateway.log"
    with ThreadedUpstream() as upstream, Children() as children:
        config.write_text(
            f"""
listen: 127.0.0.1:{port}
admin: {{listen: 127.0.0.1:{admin}}}
redis: {{url: '{redis_server.url}'}}
max_request_body: 64KiB
client: {{header_timeout: 300ms, body_timeout: 300ms}}
upstreams:
  backend: {{targets: ['{upstream.url}'], timeouts: {{connect: 1s, read: 3s}}}}
routes:
  - name: limited
    match: {{path: /limited}}
    upstream: backend
    policies:
      - rate_limit: {{algorithm: sliding_window, limit: 1000000, window: 1m, key: header.X-Key}}
  - name: cached
    match: {{path: /cached}}
    upstream: backend
    policies:
      - cache: {{ttl: 10s, max_variants: 4}}
  - name: login
    match: {{path: /login}}
    upstream: backend
    policies:
      - session: {{cookie: sid, bearer: true}}
  - name: keyed
    match: {{path: /keyed}}
    upstream: backend
    policies:
      - rate_limit: {{algorithm: token_bucket, rate: 1/h, burst: 1000, key: [header.X-Key, query.k]}}
  - name: account
    match: {{path: /account}}
    upstream: backend
    policies:
      - session: {{cookie: sid, bearer: true, optional: true, forward: {{user_id: X-User-Id}}}}
      - rate_limit: {{algorithm: token_bucket, rate: 100000/s, burst: 100000, key: session.user_id}}
  - name: all
    match: {{path: /}}
    upstream: backend
"""
        )
        access = workdir / "access.jsonl"
        env = dict(os.environ)
        start_gateway(
            children, config, workers=1, env=env, admin_port=admin, log=log, access_log=access
        )
        yield Served(port, log, access, redis_server, upstream)


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "400")),
    deadline=None,
    derandomize=os.environ.get("FUZZ_SEED") is None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(request=requests())
def test_every_request_head_gets_a_well_formed_answer(
    served: Served, request: tuple[bytes, bool]
) -> None:
    raw, head_only = request
    answer = exchange(served.port, raw, head_only)
    event(f"status {answer.status if answer else None}")  # --hypothesis-show-statistics
    check_answer(answer, raw, head_only)
    normal_request_works(served.port)


COOKIES = st.one_of(
    st.text(max_size=300).map(lambda text: "".join(c for c in text if c not in "\r\n\x00")),
    st.lists(
        st.tuples(
            st.sampled_from(["sid", "SID", " sid", "sid ", "theme", "", "sid\t"]),
            st.sampled_from(["=", "==", "", " = "]),
            st.one_of(
                st.text("ABCxyz019_-", max_size=300),
                st.sampled_from(['"' + "q" * 20 + '"', '"', '""', "a" * 15, "a" * 257, "é" * 20]),
            ),
        ),
        max_size=4,
    ).map(lambda parts: "; ".join(f"{name}{eq}{value}" for name, eq, value in parts)),
)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(cookie=COOKIES)
def test_invalid_cookies_are_401_never_a_crash(served: Served, cookie: str) -> None:
    raw = f"GET /login/x HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    answer = exchange(served.port, raw.encode("utf-8"), False)
    assert answer is not None
    if answer.status == 400:
        return  # the server's parser refused the header itself (JSON checked by the fuzz above)
    assert answer.status == 401, (answer, cookie)
    payload = json.loads(bytes(answer.body))
    assert payload["error"] == "unauthenticated"
    assert dict(answer.headers).get(b"WWW-Authenticate")


def rate_limit_keys(redis: RedisServer) -> list[str]:
    return [key for key in redis.cli("--scan", "--pattern", "rl:*").split() if key]


def test_huge_values_used_as_rate_limit_keys_are_hashed_and_bounded(served: Served) -> None:
    before = set(rate_limit_keys(served.redis))
    huge_header = MARKER + "h" * 8000  # just under client.max_field_size
    huge_query = MARKER + "q" * 7000  # just under client.max_line_size
    for path, headers in (
        ("/limited/k", f"X-Key: {huge_header}\r\n"),
        (f"/keyed/k?k={huge_query}", f"X-Key: {huge_header}\r\n"),
        (f"/keyed/k?k={huge_query}", ""),
    ):
        raw = f"GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"
        answer = exchange(served.port, raw.encode(), False)
        assert answer is not None
        assert answer.status == 200, answer
        assert dict(answer.headers).get(b"RateLimit")  # counted in Redis, not allowed blindly
    new = set(rate_limit_keys(served.redis)) - before
    boards = {key for key in new if ":top:" in key}
    assert len(new - boards) == 3  # one per identity (each route has one limit)
    for key in new - boards:
        assert re.fullmatch(r"rl:v2:\{[0-9a-f]{16}\.\d+\}:[0-9a-f]{32}:[0-9a-z_.:]{1,32}", key), key
    # The top consumers' boards hold fingerprints of the values, never the values.
    assert boards
    for key in boards:
        assert re.fullmatch(r"rl:v2:\{[0-9a-f]{16}\.\d+\}:top:[\w.-]+:\d+", key), key
        members = served.redis.cli("ZRANGE", key, "0", "-1")
        assert MARKER not in members
        assert len(members) < 200


def test_a_client_varying_a_header_cannot_grow_the_cache_past_max_variants(
    served: Served,
) -> None:
    async def varying(request: web.Request) -> web.Response:
        return web.Response(
            text=request.headers.get("X-Abuse", ""),
            headers={"Cache-Control": "max-age=60", "Vary": "X-Abuse"},
        )

    served.upstream.backend.route("/cached/vary", varying)
    for n in range(40):
        value = f"{MARKER}-{n}-" + "v" * 1000
        raw = (
            f"GET /cached/vary HTTP/1.1\r\nHost: x\r\nX-Abuse: {value}\r\nConnection: close\r\n\r\n"
        )
        answer = exchange(served.port, raw.encode(), False)
        assert answer is not None
        assert (answer.status, bytes(answer.body).decode()) == (200, value)  # never mixed up
    entries = [
        key
        for key in served.redis.cli("--scan", "--pattern", "gw:cache:v1:{*}").split()
        if key.endswith("}")
    ]
    counts = []
    for key in entries:
        fields = served.redis.cli("HKEYS", key).split()
        counts.append(sum(field.startswith("e:") for field in fields))
        assert not [f for f in fields if MARKER in f], fields  # variants are digests
    assert max(counts) == 4, counts  # max_variants of the route


def test_connect_is_refused_and_never_forwarded(served: Served) -> None:
    seen = len(served.upstream.backend.requests)
    for target in ("/x", "example.com:443"):
        raw = f"CONNECT {target} HTTP/1.1\r\nHost: x\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n"
        answer = exchange(served.port, raw.encode(), False)
        assert answer is not None
        assert answer.status in (400, 405), answer
    assert not [r for r in served.upstream.backend.requests[seen:] if r["method"] == "CONNECT"]


def test_a_refusal_pipelined_after_a_request_follows_its_answer(served: Served) -> None:
    seen = len(served.upstream.backend.requests)
    messages = exchange_all(
        served.port, b"GET /x/first HTTP/1.1\r\nHost: x\r\n\r\nBAD\x00LINE\r\n\r\n"
    )
    assert [r["path"] for r in served.upstream.backend.requests[seen:]] == ["/x/first"]
    assert [m.status for m in messages] == [200, 400]
    assert json.loads(messages[0].body)["path"] == "/x/first"
    assert json.loads(messages[1].body)["error"] == "bad_request"
    assert (b"Connection", b"close") in messages[1].headers


def test_connect_cannot_be_configured() -> None:
    text = (
        "upstreams: {b: {targets: ['http://127.0.0.1:1']}}\n"
        "routes: [{name: r, upstream: b, match: {methods: [GET, CONNECT]}}]\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml", env={})
    assert [str(p) for p in caught.value.problems] == [
        "c.yaml:2: routes[0].match.methods[1]: the gateway proxies no CONNECT tunnels"
    ]


def test_the_worker_logged_no_traceback_and_never_died(served: Served) -> None:
    normal_request_works(served.port)
    text = served.log.read_text(errors="replace")
    assert "Traceback" not in text, text[-5000:]
    assert "replacing it" not in text
    # Header values (cookies, tokens, keys) never reach a log; the one field a client may
    # choose is its X-Request-ID, kept when it is a sane id so that traces join up.
    assert MARKER not in text
    deadline = time.monotonic() + 5
    while True:  # the worker writes its access lines one loop turn after answering
        lines = [json.loads(line) for line in served.access.read_text().splitlines() if line]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert lines
    for line in lines:
        line.pop("request_id")
        assert MARKER not in json.dumps(line), line
