"""One user's page is never served to another: sessions bypass, or key with vary_session."""

from __future__ import annotations

import pytest
from aiohttp import web

from gateway.config.loader import parse_config
from gateway.errors import ConfigError
from tests.policies.cache.conftest import OneGateway, fetch
from tests.support.harness import InProcessGateway
from tests.support.upstream import Upstream

ALICE = "a" * 24
BOB = "b" * 24


def routes(*policies: str) -> str:
    chain = "\n".join(f"      - {policy}" for policy in policies)
    return f"""
upstreams:
  backend: {{targets: [UPSTREAM_URL]}}
routes:
  - name: site
    match: {{path: /}}
    upstream: backend
    policies:
{chain}
"""


SESSION = "session: {cookie: sid, optional: true, forward: {user_id: X-User-Id}}"


def personal(upstream: Upstream) -> None:
    async def handler(request: web.Request) -> web.Response:
        user = request.headers.get("X-User-Id", "anonymous")
        return web.Response(text=f"page of {user}", headers={"Cache-Control": "max-age=60"})

    upstream.route("/home", handler)


async def sessions(gw: InProcessGateway) -> None:
    await gw.store.hset(f"session:{ALICE}", {"user_id": "1"}, ttl=60)
    await gw.store.hset(f"session:{BOB}", {"user_id": "2"}, ttl=60)


def as_user(sid: str) -> dict[str, str]:
    return {"Cookie": f"theme=dark; sid={sid}"}


async def test_requests_with_a_session_bypass_the_cache(
    gateway: OneGateway, upstream: Upstream
) -> None:
    personal(upstream)
    gw = await gateway(routes(SESSION, "cache: {ttl: 60s}"))
    await sessions(gw)
    first = await fetch(gw, "/home", headers=as_user(ALICE))
    second = await fetch(gw, "/home", headers=as_user(BOB))
    assert [(x.cache, x.text) for x in (first, second)] == [
        ("BYPASS", "page of 1"),
        ("BYPASS", "page of 2"),
    ]
    anonymous = [await fetch(gw, "/home") for _ in range(2)]
    assert [(x.cache, x.text) for x in anonymous] == [
        ("MISS", "page of anonymous"),
        ("HIT", "page of anonymous"),
    ]
    assert (await fetch(gw, "/home", headers=as_user(ALICE))).text == "page of 1"


async def test_session_credentials_bypass_even_before_the_session_policy_ran(
    gateway: OneGateway, upstream: Upstream
) -> None:
    personal(upstream)
    gw = await gateway(routes("cache: {ttl: 60s}", SESSION))
    await sessions(gw)
    await fetch(gw, "/home")  # the anonymous page is stored
    mine = await fetch(gw, "/home", headers=as_user(ALICE))
    assert (mine.cache, mine.text) == ("BYPASS", "page of 1")
    other_cookie = await fetch(gw, "/home", headers={"Cookie": "theme=dark"})
    assert (other_cookie.cache, other_cookie.text) == ("HIT", "page of anonymous")


async def test_vary_session_keeps_one_copy_per_user(
    gateway: OneGateway, upstream: Upstream
) -> None:
    personal(upstream)
    gw = await gateway(routes(SESSION, "cache: {ttl: 60s, vary_session: [user_id]}"))
    await sessions(gw)
    answers = [
        await fetch(gw, "/home", headers=as_user(ALICE)),
        await fetch(gw, "/home", headers=as_user(BOB)),
        await fetch(gw, "/home", headers=as_user(ALICE)),
        await fetch(gw, "/home", headers=as_user(BOB)),
        await fetch(gw, "/home"),
    ]
    assert [(x.cache, x.text) for x in answers] == [
        ("MISS", "page of 1"),
        ("MISS", "page of 2"),
        ("HIT", "page of 1"),
        ("HIT", "page of 2"),
        ("MISS", "page of anonymous"),
    ]
    # A write by one user drops every user's copy of that URI.
    await fetch(gw, "/home", method="POST", headers=as_user(ALICE), data=b"x")
    again = await fetch(gw, "/home", headers=as_user(BOB))
    assert again.cache == "MISS"


@pytest.mark.parametrize(
    ("chain", "message"),
    [
        (
            ["cache: {ttl: 60s, vary_session: [user_id]}", SESSION],
            "c.yaml:9: routes[0].policies[0].cache: route 'site' runs cache before session "
            "(policies[1]), which must come earlier: "
            "vary_session needs the session fields that session sets",
        ),
        (
            ["cache: {ttl: 60s, vary_session: [user_id]}"],
            "c.yaml:9: routes[0].policies[0].cache: route 'site' has no session policy before "
            "cache: vary_session needs the session fields that session sets",
        ),
    ],
    ids=["session-after-cache", "no-session"],
)
def test_vary_session_without_the_session_policy_first_is_refused(
    chain: list[str], message: str
) -> None:
    # It used to load, and then every request with a session answered BYPASS.
    text = routes(*chain).replace("UPSTREAM_URL", "'http://127.0.0.1:9'")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml", env={})
    assert [str(problem) for problem in caught.value.problems] == [message]


def test_vary_session_after_the_session_policy_loads() -> None:
    text = routes(SESSION, "cache: {vary_session: [user_id]}", "cache: {}")
    loaded = parse_config(text.replace("UPSTREAM_URL", "'http://127.0.0.1:9'"), "c.yaml", env={})
    assert [spec.kind for spec in loaded.chains[0]] == ["session", "cache", "cache"]
