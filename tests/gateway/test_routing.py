"""Route matching: first match in file order, segment-aware prefixes, hosts, methods."""

from __future__ import annotations

import pytest

from gateway.http.paths import BadPath
from gateway.routing import NotAllowed, Router
from gateway.runtime import Runtime
from gateway.store.memory import MemoryStore
from gateway.telemetry.metrics import Metrics
from tests.support.harness import load

CONFIG = """
upstreams:
  backend: {targets: ["http://127.0.0.1:9"]}
routes:
  - {name: v1, match: {path: /api/v1}, upstream: backend}
  - {name: admin-host, match: {path: /api, host: admin.example.com}, upstream: backend}
  - {name: wildcard, match: {path: /api, host: "*.tenant.example"}, upstream: backend}
  - {name: api-read, match: {path: /api, methods: [GET, HEAD]}, upstream: backend}
  - {name: api-write, match: {path: /api, methods: [POST]}, upstream: backend}
  - {name: static, match: {path: /static}, upstream: backend}
  - {name: rest, match: {path: /, methods: [GET]}, upstream: backend}
"""


@pytest.fixture(scope="module")
def router() -> Router:
    return Runtime(load(CONFIG), MemoryStore(), Metrics()).router


@pytest.mark.parametrize(
    ("host", "path", "method", "expected"),
    [
        ("x", "/api/v1", "GET", "v1"),
        ("x", "/api/v1/items", "DELETE", "v1"),  # any method
        ("x", "/api/v10", "GET", "api-read"),  # segment-aware: /api/v1 does not take /api/v10
        ("x", "/api", "GET", "api-read"),
        ("x", "/api/items", "POST", "api-write"),
        ("admin.example.com", "/api/items", "PUT", "admin-host"),
        ("admin.example.com:8080", "/api/items", "GET", "admin-host"),  # the port is ignored
        ("a.tenant.example", "/api/x", "GET", "wildcard"),
        ("tenant.example", "/api/x", "GET", "api-read"),  # the wildcard needs a subdomain
        ("x", "/apix", "GET", "rest"),  # not under /api
        ("x", "/static/app.js", "POST", "static"),
        ("x", "/", "GET", "rest"),
        ("x", "/anything/else", "GET", "rest"),
    ],
)
def test_first_matching_route_in_file_order(
    router: Router, host: str, path: str, method: str, expected: str
) -> None:
    route = router.match(host, path, method)
    assert not isinstance(route, NotAllowed)
    assert route is not None
    assert route.name == expected


def test_a_path_taken_only_with_other_methods_is_405_with_allow(router: Router) -> None:
    refused = router.match("x", "/api/items", "DELETE")
    assert isinstance(refused, NotAllowed)
    assert refused.allow == "GET, HEAD, POST"
    refused = router.match("x", "/other", "POST")
    assert isinstance(refused, NotAllowed)
    assert refused.allow == "GET"


def test_methods_restrict_the_first_matching_route_instead_of_falling_through() -> None:
    router = Runtime(
        load(
            """
upstreams:
  backend: {targets: ["http://127.0.0.1:9"]}
routes:
  - {name: admin, match: {path: /admin, methods: [GET]}, upstream: backend}
  - {name: admin-write, match: {path: /admin, methods: [POST]}, upstream: backend}
  - {name: admin-users, match: {path: /admin/users}, upstream: backend}
  - {name: catalog, match: {path: /api/catalog, methods: [GET, HEAD]}, upstream: backend}
  - {name: rest, match: {path: /}, upstream: backend}
"""
        ),
        MemoryStore(),
        Metrics(),
    ).router
    refused = router.match("x", "/admin/users", "DELETE")
    assert isinstance(refused, NotAllowed)
    assert refused.allow == "GET, POST"  # the owner and its sibling, never the catch-all
    sibling = router.match("x", "/admin/users", "POST")
    assert not isinstance(sibling, NotAllowed)
    assert sibling is not None
    assert sibling.name == "admin-write"
    refused = router.match("x", "/api/catalog/1", "POST")
    assert isinstance(refused, NotAllowed)
    assert refused.allow == "GET, HEAD"
    rest = router.match("x", "/api/other", "POST")
    assert not isinstance(rest, NotAllowed)
    assert rest is not None
    assert rest.name == "rest"


def test_connect_is_never_routed(router: Router) -> None:
    assert isinstance(router.match("x", "/api/v1", "CONNECT"), NotAllowed)


def test_no_route_without_a_catch_all() -> None:
    router = Runtime(
        load(
            CONFIG.replace(
                "  - {name: rest, match: {path: /, methods: [GET]}, upstream: backend}\n", ""
            )
        ),
        MemoryStore(),
        Metrics(),
    ).router
    assert router.match("x", "/nothing", "GET") is None
    assert router.match("x", "/", "GET") is None


def test_an_encoded_slash_that_would_change_the_route_is_refused(router: Router) -> None:
    with pytest.raises(BadPath):
        router.match("x", "/static%2F..%2Fapi", "GET")
    with pytest.raises(BadPath):
        router.match("x", "/api%2Fv1/x", "GET")
    found = router.match("x", "/static/a%2Fb", "GET")  # within one route it is data
    assert found is not None
    assert not isinstance(found, NotAllowed)
    assert found.name == "static"
