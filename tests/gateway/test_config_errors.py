"""Bad configs and their exact messages: `file:line: key.path: message`, every problem at once."""

from __future__ import annotations

import textwrap

import pytest
from pydantic import Field

from gateway.config.loader import parse_config
from gateway.config.units import Duration, Rate
from gateway.errors import ConfigError
from gateway.http.messages import Handler, Request, Response
from gateway.policy import Options, Policy
from gateway.registry import Registry


class DemoOptions(Options):
    limit: int = Field(10, gt=0, description="How many.")
    window: Duration = Field(60.0, description="Over how long.")
    rate: Rate | None = Field(None, description="Optional rate.")


class Demo(Policy):
    """A policy that only exists for these tests."""

    Options = DemoOptions

    async def __call__(self, request: Request, call_next: Handler) -> Response:
        return await call_next(request)


class AfterDemoOptions(Options):
    needs_demo: bool = Field(True, description="Whether a demo policy must run first.")

    def requires_before(self) -> dict[str, str]:
        return {"demo": "it reads what demo sets"} if self.needs_demo else {}


class AfterDemo(Policy):
    """A policy that declares the policy type it needs before it in the chain."""

    Options = AfterDemoOptions

    async def __call__(self, request: Request, call_next: Handler) -> Response:
        return await call_next(request)


REGISTRY = Registry(
    {"demo": Demo, "after_demo": AfterDemo},
    broken={"broken": "ImportError: no module named x"},
)

HEAD = """\
upstreams:
  backend: {targets: ["http://127.0.0.1:9000"]}
"""
ROUTE = """\
routes:
  - name: api
    match: {path: /api}
    upstream: backend
"""

CASES: list[tuple[str, str, list[str]]] = [
    ("empty file", "", ["c.yaml: the config is empty"]),
    ("not a mapping", "- a\n- b\n", ["c.yaml:1: the config must be a mapping"]),
    ("yaml syntax", "routes: [\n", ["c.yaml:2: invalid YAML: did not find expected node content"]),
    (
        "duplicate key",
        HEAD + ROUTE + "listen: 0.0.0.0:1\nlisten: 0.0.0.0:2\n",
        ["c.yaml:8: listen: duplicate key"],
    ),
    (
        "unset variable",
        HEAD + ROUTE + "listen: ${NOPE_NOT_SET}\n",
        [
            "c.yaml:7: environment variable NOPE_NOT_SET is not set",
            "c.yaml:7: listen: input should be a valid string",
        ],
    ),
    ("missing routes", HEAD, ["c.yaml:1: routes: required key is missing"]),
    ("missing upstreams", ROUTE, ["c.yaml:1: upstreams: required key is missing"]),
    (
        "empty routes",
        HEAD + "routes: []\n",
        ["c.yaml:3: routes: list should have at least 1 item after validation, not 0"],
    ),
    (
        "unknown top-level key",
        HEAD + ROUTE + "listne: 0.0.0.0:80\n",
        ["c.yaml:7: listne: unknown key, did you mean 'listen'?"],
    ),
    (
        "bad listen",
        HEAD + ROUTE + "listen: localhost\n",
        ["c.yaml:7: listen: expected host:port, got 'localhost'"],
    ),
    (
        "bad workers",
        HEAD + ROUTE + "workers: 0\n",
        ["c.yaml:7: workers: expected 1 to 256 or 'auto', got 0"],
    ),
    (
        "memory store with workers",
        HEAD + ROUTE + "workers: 2\n",
        [
            "c.yaml:7: workers: memory:// holds state in one process: use workers: 1 or a redis:// store"
        ],
    ),
    (
        "admin on public listener",
        HEAD + ROUTE + "listen: 0.0.0.0:80\nadmin: {listen: 0.0.0.0:80}\n",
        ["c.yaml:8: admin.listen: the admin listener must not be the public listener"],
    ),
    (
        "bad store url",
        HEAD + ROUTE + "redis: {url: 'mongodb://db'}\n",
        [
            "c.yaml:7: redis.url: unsupported store URL 'mongodb://db' (use redis://, rediss://, "
            "redis+sentinel://, redis+cluster:// or memory://)"
        ],
    ),
    (
        "bad redis timeout",
        HEAD + ROUTE + "redis:\n  timeout: ten seconds\n",
        ["c.yaml:8: redis.timeout: invalid duration 'ten seconds'"],
    ),
    (
        "bad size",
        HEAD + ROUTE + "max_request_body: 10 parsecs\n",
        ["c.yaml:7: max_request_body: invalid size '10 parsecs'"],
    ),
    (
        "bad trusted proxy",
        HEAD + ROUTE + "trusted_proxies: [10.0.0.0/8, banana]\n",
        ["c.yaml:7: trusted_proxies[1]: invalid address or network 'banana'"],
    ),
    (
        "bad target",
        "upstreams:\n  backend: {targets: ['ftp://x']}\n" + ROUTE,
        [
            "c.yaml:2: upstreams.backend.targets[0]: invalid target 'ftp://x' (expected http://host:port)"
        ],
    ),
    (
        "no targets",
        "upstreams:\n  backend: {targets: []}\n" + ROUTE,
        [
            "c.yaml:2: upstreams.backend.targets: list should have at least 1 item after validation, not 0"
        ],
    ),
    (
        "bad upstream timeout",
        "upstreams:\n  backend:\n    targets: ['http://x:1']\n    timeouts: {read: soon}\n" + ROUTE,
        ["c.yaml:4: upstreams.backend.timeouts.read: invalid duration 'soon'"],
    ),
    (
        "unknown upstream",
        HEAD + ROUTE.replace("upstream: backend", "upstream: backnd"),
        ["c.yaml:6: routes[0].upstream: no upstream named 'backnd' (defined: backend)"],
    ),
    (
        "route without name",
        HEAD + "routes:\n  - upstream: backend\n",
        ["c.yaml:4: routes[0].name: required key is missing"],
    ),
    (
        "duplicate route name",
        HEAD + ROUTE + "  - {name: api, upstream: backend}\n",
        ["c.yaml:7: routes[1].name: duplicate route name 'api' (first at routes[0])"],
    ),
    (
        "bad path",
        HEAD + ROUTE.replace("path: /api", "path: api"),
        ["c.yaml:5: routes[0].match.path: a path must start with '/', got 'api'"],
    ),
    (
        "bad method",
        HEAD + ROUTE.replace("path: /api", "path: /api, methods: [GET, 'P OST']"),
        ["c.yaml:5: routes[0].match.methods[1]: invalid method 'P OST'"],
    ),
    (
        "strip prefix not a prefix",
        HEAD + ROUTE + "    strip_prefix: /v2\n",
        ["c.yaml:7: routes[0].strip_prefix: '/v2' is not a prefix of match.path '/api'"],
    ),
    (
        "unknown policy type",
        HEAD + ROUTE + "    policies: [{ratelimit: {}}]\n",
        [
            "c.yaml:7: routes[0].policies[0].ratelimit: unknown policy type 'ratelimit' (known: after_demo, demo)"
        ],
    ),
    (
        "broken policy plugin",
        HEAD + ROUTE + "    policies: [{broken: {}}]\n",
        [
            "c.yaml:7: routes[0].policies[0].broken: policy type 'broken' failed to load: "
            "ImportError: no module named x"
        ],
    ),
    (
        "undefined named policy",
        HEAD + ROUTE + "    policies: [per-client]\n",
        ["c.yaml:7: routes[0].policies[0]: no policy named 'per-client'"],
    ),
    (
        "two types in one entry",
        HEAD + ROUTE + "    policies: [{demo: {}, other: {}}]\n",
        [
            "c.yaml:7: routes[0].policies[0]: expected a policy name or a one-key mapping "
            "TYPE: {options}, got keys demo, other"
        ],
    ),
    (
        "policy entry not a mapping",
        HEAD + ROUTE + "    policies: [7]\n",
        [
            "c.yaml:7: routes[0].policies[0]: expected a policy name or a one-key mapping "
            "TYPE: {options}, got int"
        ],
    ),
    (
        "policy options not a mapping",
        HEAD + ROUTE + "    policies: [{demo: 5}]\n",
        ["c.yaml:7: routes[0].policies[0].demo: options must be a mapping, got int"],
    ),
    (
        "policy option bad duration",
        HEAD + ROUTE + "    policies:\n      - demo:\n          window: ten seconds\n",
        ["c.yaml:9: routes[0].policies[0].demo.window: invalid duration 'ten seconds'"],
    ),
    (
        "policy option unknown key",
        HEAD + ROUTE + "    policies:\n      - demo: {limt: 3}\n",
        ["c.yaml:8: routes[0].policies[0].demo.limt: unknown key, did you mean 'limit'?"],
    ),
    (
        "policy option constraint",
        HEAD + ROUTE + "    policies:\n      - demo: {limit: 0}\n",
        ["c.yaml:8: routes[0].policies[0].demo.limit: input should be greater than 0"],
    ),
    (
        "policy option bad rate",
        HEAD + ROUTE + "    policies:\n      - demo: {rate: fast}\n",
        [
            "c.yaml:8: routes[0].policies[0].demo.rate: invalid rate 'fast' (expected e.g. 10/s, 600/m)"
        ],
    ),
    (
        "named definition bad option",
        HEAD + "policies:\n  strict:\n    demo: {window: -1}\n" + ROUTE,
        ["c.yaml:5: policies.strict.demo.window: duration must not be negative"],
    ),
    (
        "misspelt top-level key",
        HEAD + ROUTE + "polices: {}\n",
        ["c.yaml:7: polices: unknown key, did you mean 'policies'?"],
    ),
    (
        "misspelt route key",
        HEAD + ROUTE + "    polices: [demo: {}]\n",
        ["c.yaml:7: routes[0].polices: unknown key, did you mean 'policies'?"],
    ),
    (
        "misspelt upstream key",
        "upstreams:\n  backend:\n    targets: ['http://x:1']\n    timeouts: {conect: 1s}\n" + ROUTE,
        ["c.yaml:4: upstreams.backend.timeouts.conect: unknown key, did you mean 'connect'?"],
    ),
    (
        "misspelt key in a list item's options",
        HEAD + ROUTE.replace("path: /api", "path: /api, metods: [GET]"),
        ["c.yaml:5: routes[0].match.metods: unknown key, did you mean 'methods'?"],
    ),
    (
        "misspelt policy type",
        HEAD + ROUTE + "    policies: [{dmeo: {}}]\n",
        [
            "c.yaml:7: routes[0].policies[0].dmeo: unknown policy type 'dmeo' "
            "(known: after_demo, demo), did you mean 'demo'?"
        ],
    ),
    (
        "unknown key with nothing close",
        HEAD + ROUTE + "zzz: 1\n",
        ["c.yaml:7: zzz: unknown key"],
    ),
    (
        "tab indentation",
        "upstreams:\n\tbackend: {targets: ['http://x:1']}\n" + ROUTE,
        ["c.yaml:2: invalid YAML: a tab indents this line (YAML indents with spaces only)"],
    ),
    (
        "tabs on several lines",
        HEAD + "routes:\n  - name: api\n\t  upstream: backend\n\t  match: {path: /}\n",
        [
            "c.yaml:5: invalid YAML: a tab indents this line (YAML indents with spaces only)",
            "c.yaml:6: invalid YAML: a tab indents this line (YAML indents with spaces only)",
        ],
    ),
    (
        "tab inside a value is not indentation",
        HEAD + ROUTE + "listen: 'a\tb'\nworkers: [\n",
        ["c.yaml:9: invalid YAML: did not find expected node content"],
    ),
    (
        "duplicate key and validation errors together",
        HEAD + ROUTE + "workers: 1\nworkers: 0\nlisten: nowhere\n",
        [
            "c.yaml:8: workers: duplicate key",
            "c.yaml:9: listen: expected host:port, got 'nowhere'",
        ],
    ),
    (
        "policy needed earlier comes later",
        HEAD + ROUTE + "    policies: [after_demo: {}, demo: {}]\n",
        [
            "c.yaml:7: routes[0].policies[0].after_demo: route 'api' runs after_demo before "
            "demo (policies[1]), which must come earlier: it reads what demo sets"
        ],
    ),
    (
        "policy needed earlier is missing",
        HEAD + ROUTE + "    policies: [after_demo: {}]\n",
        [
            "c.yaml:7: routes[0].policies[0].after_demo: route 'api' has no demo policy "
            "before after_demo: it reads what demo sets"
        ],
    ),
    (
        "named policies in the wrong order",
        HEAD
        + "policies:\n  first: {demo: {}}\n  second: {after_demo: {}}\n"
        + ROUTE
        + "    policies: [second, first]\n",
        [
            "c.yaml:10: routes[0].policies[0]: route 'api' runs after_demo 'second' before "
            "demo 'first' (policies[1]), which must come earlier: it reads what demo sets"
        ],
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in CASES], ids=[name for name, _, _ in CASES]
)
def test_bad_config_names_file_line_and_key_path(text: str, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml", env={}, registry=REGISTRY)
    assert [str(problem) for problem in caught.value.problems] == expected


def test_every_problem_is_reported_at_once() -> None:
    text = textwrap.dedent(
        """\
        listen: nowhere
        redis: {timeout: never}
        upstreams:
          backend: {targets: ["http://127.0.0.1:9000"]}
        routes:
          - name: a
            upstream: nope
            policies: [{demo: {window: often}}]
        """
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml", env={}, registry=REGISTRY)
    assert [str(p) for p in caught.value.problems] == [
        "c.yaml:1: listen: expected host:port, got 'nowhere'",
        "c.yaml:2: redis.timeout: invalid duration 'never'",
        "c.yaml:7: routes[0].upstream: no upstream named 'nope' (defined: backend)",
        "c.yaml:8: routes[0].policies[0].demo.window: invalid duration 'often'",
    ]


def test_problems_of_every_stage_are_reported_in_one_pass() -> None:
    # Environment, YAML (a duplicate key) and validation problems used to come in turns:
    # each fix revealed the next batch.
    text = textwrap.dedent(
        """\
        listen: ${NOPE_NOT_SET}
        workers: 1
        workers: 2
        redis: {timeout: never, pool_sise: 3}
        upstreams:
          backend: {targets: ["ftp://x"]}
        polices: {}
        routes:
          - name: a
            upstream: nope
            policies: [{after_demo: {}}, {demo: {window: often}}]
        """
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "c.yaml", env={}, registry=REGISTRY)
    assert [str(p) for p in caught.value.problems] == [
        "c.yaml:1: environment variable NOPE_NOT_SET is not set",
        "c.yaml:1: listen: input should be a valid string",
        "c.yaml:3: workers: duplicate key",
        "c.yaml:4: redis.pool_sise: unknown key, did you mean 'pool_size'?",
        "c.yaml:4: redis.timeout: invalid duration 'never'",
        "c.yaml:6: upstreams.backend.targets[0]: invalid target 'ftp://x' (expected http://host:port)",
        "c.yaml:7: polices: unknown key, did you mean 'policies'?",
        "c.yaml:10: routes[0].upstream: no upstream named 'nope' (defined: backend)",
        "c.yaml:11: routes[0].policies[0].after_demo: route 'a' runs after_demo before demo "
        "(policies[1]), which must come earlier: it reads what demo sets",
        "c.yaml:11: routes[0].policies[1].demo.window: invalid duration 'often'",
    ]


def test_environment_substitution_and_defaults() -> None:
    text = HEAD + ROUTE + "listen: ${HOST:-0.0.0.0}:${PORT}\nadmin: {token: '${TOKEN:-}'}\n"
    loaded = parse_config(text, "c.yaml", env={"PORT": "8088"}, registry=REGISTRY)
    assert loaded.model.listen == "0.0.0.0:8088"
    assert loaded.model.admin.token is None
    escaped = parse_config(
        HEAD + ROUTE + "admin: {token: '$${LITERAL}'}\n", "c.yaml", env={}, registry=REGISTRY
    )
    assert escaped.model.admin.token is not None
    assert escaped.model.admin.token.get_secret_value() == "${LITERAL}"


def test_units_are_parsed() -> None:
    text = (
        HEAD
        + ROUTE
        + ("max_request_body: 512KiB\nshutdown_timeout: 1m\nredis: {timeout: 250ms}\n    \n")
    )
    loaded = parse_config(text, "c.yaml", env={}, registry=REGISTRY)
    assert loaded.model.max_request_body == 512 * 1024
    assert loaded.model.shutdown_timeout == 60.0
    assert loaded.model.redis.timeout == 0.25


def test_shadowed_routes_are_warned_about() -> None:
    text = HEAD + textwrap.dedent(
        """\
        routes:
          - {name: all, match: {path: /api}, upstream: backend}
          - {name: items, match: {path: /api/items, methods: [GET]}, upstream: backend}
          - {name: other, match: {path: /apix}, upstream: backend}
        """
    )
    loaded = parse_config(text, "c.yaml", env={}, registry=REGISTRY)
    assert loaded.warnings == [
        "route 'items' (line 5) is shadowed by route 'all' (line 4): it can never match"
    ]


def test_methods_are_a_restriction_and_check_says_so() -> None:
    text = HEAD + textwrap.dedent(
        """\
        routes:
          - {name: admin, match: {path: /admin, methods: [GET]}, upstream: backend}
          - {name: admin-write, match: {path: /admin, methods: [POST]}, upstream: backend}
          - {name: admin-users, match: {path: /admin/users, methods: [DELETE]}, upstream: backend}
          - {name: rest, match: {path: /}, upstream: backend}
        """
    )
    loaded = parse_config(text, "c.yaml", env={}, registry=REGISTRY)
    assert loaded.warnings == [
        # a narrower route is owned by the method-restricted one: DELETE never reaches it
        "route 'admin-users' (line 6) is shadowed by route 'admin' (line 4): it can never match",
        "route 'admin' (line 4) takes /admin with GET, POST only: other methods get 405, they "
        "do not fall through to route 'rest' (line 7)",
    ]
