"""Fuzzing the config loader: whatever the file says, it loads or raises one `ConfigError`.

What `gateway check` does is what is fuzzed: read (`${VAR}` substitution, YAML), validate
(the models, every policy's options), then build every route's chain. Any other exception,
or a traceback in the log, is a bug: an operator must get `file:line: key.path: message`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.config.loader import LoadedConfig, parse_config
from gateway.errors import ConfigError, ConfigProblem
from gateway.registry import Registry
from gateway.runtime import Runtime
from gateway.store.memory import MemoryStore
from gateway.telemetry.metrics import Metrics

REGISTRY = Registry.discover()
FILE = "fuzz.yaml"

VALID: dict[str, Any] = {
    "listen": "127.0.0.1:8080",
    "workers": 1,
    "admin": {"listen": "127.0.0.1:9901", "token": "secret"},
    "redis": {"url": "memory://", "timeout": "250ms", "memory_max": "8MiB"},
    "trusted_proxies": ["10.0.0.0/8", "::1"],
    "max_request_body": "1MiB",
    "shutdown_timeout": "5s",
    "client": {"max_line_size": 4096, "header_timeout": "2s", "body_timeout": "3s"},
    "upstreams": {
        "backend": {
            "targets": ["http://127.0.0.1:9000", "http://127.0.0.1:9001/base"],
            "timeouts": {"connect": "1s", "read": "5s"},
            "keepalive": "2s",
        }
    },
    "policies": {
        "per-client": {"rate_limit": {"algorithm": "sliding_window", "limit": 100, "window": "1m"}},
        "login": {"session": {"cookie": "sid", "bearer": True, "forward": {"user_id": "X-User"}}},
    },
    "routes": [
        {
            "name": "catalog",
            "match": {"path": "/api/catalog", "methods": ["GET", "HEAD"]},
            "upstream": "backend",
            "strip_prefix": "/api",
            "policies": [
                "per-client",
                {
                    "cache": {
                        "ttl": "30s",
                        "stale_while_revalidate": "2m",
                        "max_variants": 4,
                        "max_body": "64KiB",
                    }
                },
            ],
        },
        {
            "name": "account",
            "match": {"path": "/api/account", "host": "*.example.com"},
            "upstream": "backend",
            "max_request_body": "64KiB",
            "policies": [
                "login",
                {
                    "rate_limit": {
                        "key": ["session.user_id", "header.X-Api-Key"],
                        "limits": [
                            {"algorithm": "token_bucket", "rate": "10/s", "burst": 20},
                            {"algorithm": "sliding_window", "limit": 1000, "window": "1h"},
                        ],
                        "on_store_error": "deny",
                    }
                },
                {"cache": {"ttl": "10s", "vary_session": ["user_id"]}},
            ],
        },
        {
            "name": "admin",
            "match": {"path": "/admin"},
            "upstream": "backend",
            "websocket": True,
            "policies": [
                {
                    "session": {
                        "cookie": "sid",
                        "require": {"role": ["admin", "ops"]},
                        "sliding_ttl": "30m",
                        "optional": False,
                    }
                }
            ],
        },
    ],
}

# Values that have broken loaders before: non-finite and huge numbers, odd types, YAML tags,
# aliases, environment references, control characters, very long strings.
NASTY = st.sampled_from(
    [
        None,
        True,
        0,
        -1,
        2**64,
        10**400,
        0.5,
        float("inf"),
        float("-inf"),
        float("nan"),
        "",
        " ",
        "0",
        "-1s",
        "1e400",
        "9" * 400,
        "9" * 400 + "KiB",
        "9" * 400 + "/s",
        ".inf",
        "1/0s",
        "10/s",
        "250ms",
        "auto",
        "memory://",
        "redis://127.0.0.1:1/0",
        "redis+sentinel://127.0.0.1:1",
        "http://[::1",
        "http://x:99999",
        "::1",
        "300.0.0.1/99",
        "${NOT_SET}",
        "${X:-y}",
        "$${X}",
        "\x00",
        "\u2028",
        "é" * 70,
        "a" * 5000,
        "/",
        "//",
        "*.",
        "session.",
        "header.",
        "[]",
        "{}",
    ]
)
SCALARS = st.one_of(
    NASTY,
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.booleans(),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=12), NASTY.map(str)), children, max_size=4),
    ),
    max_leaves=12,
)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path of a nested document (the root excluded)."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield (*prefix, index)
            yield from paths(child, (*prefix, index))


ALL_PATHS = list(paths(VALID))


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """The valid config with a few values replaced, keys dropped or added."""
    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent: Any = doc
        try:
            for part in path[:-1]:
                parent = parent[part]
            last = path[-1]
            action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
            if action == "replace":
                parent[last] = draw(VALUES)
            elif action == "delete":
                del parent[last]
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=12))] = draw(VALUES)
            else:
                parent.insert(last, draw(VALUES))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    return doc


YAML_BITS = st.sampled_from(
    [
        "\n",
        "\t",
        "  ",
        ": ",
        "- ",
        "#",
        "&a ",
        "*a",
        "<<: *a\n",
        "!!int ",
        "!!timestamp ",
        "!!bool ",
        "!!binary ",
        "!!python/object:os.system ",
        "!custom ",
        "? ",
        "{",
        "}",
        "[",
        "]",
        '"',
        "'",
        "|\n",
        ">-\n",
        "---\n",
        "...\n",
        "%YAML 1.1\n",
        "${NOT_SET}",
        "${HOME:-x}",
        "\x00",
        "\ufeff",
    ]
)


@st.composite
def edited_text(draw: st.DrawFn) -> str:
    """The valid config's YAML with bytes of YAML syntax inserted or text cut out."""
    text = yaml.safe_dump(VALID, sort_keys=False)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(st.one_of(YAML_BITS, st.text(max_size=5))) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
    return text


class _Tracebacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.records.append(record)


@pytest.fixture(scope="module")
def tracebacks() -> Iterator[_Tracebacks]:
    handler = _Tracebacks()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


def check(text: str, tracebacks: _Tracebacks) -> LoadedConfig | None:
    """What `gateway check` does with `text`; only a clean load or a `ConfigError` may come out."""
    tracebacks.records.clear()
    loaded: LoadedConfig | None = None
    problems: list[ConfigProblem | None] = []
    try:
        loaded = parse_config(text, FILE, env={"HOME": "/root"}, registry=REGISTRY)
        Runtime(loaded, MemoryStore(), Metrics())
    except ConfigError as exc:
        loaded, problems = None, exc.problems or [None]
    for problem in problems:
        assert problem is not None, "a ConfigError without problems"
        assert str(problem).startswith(FILE), problem
        assert problem.message
    assert not tracebacks.records, [r.getMessage() for r in tracebacks.records]
    return loaded


FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def test_the_valid_config_loads(tracebacks: _Tracebacks) -> None:
    assert check(yaml.safe_dump(VALID), tracebacks) is not None


@FUZZ
@given(doc=mutated())
def test_mutated_configs_load_or_raise_config_error(
    doc: dict[str, Any], tracebacks: _Tracebacks
) -> None:
    check(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), tracebacks)


@FUZZ
@given(text=edited_text())
def test_edited_yaml_text_loads_or_raises_config_error(text: str, tracebacks: _Tracebacks) -> None:
    check(text, tracebacks)


@FUZZ
@given(doc=VALUES)
@example(doc={"routes": [{"name": "r", "upstream": "b"}], "upstreams": {"b": None}})
def test_any_yaml_document_loads_or_raises_config_error(doc: Any, tracebacks: _Tracebacks) -> None:
    check(yaml.safe_dump(doc, allow_unicode=True), tracebacks)


@FUZZ
@given(text=st.text(max_size=200))
def test_any_text_loads_or_raises_config_error(text: str, tracebacks: _Tracebacks) -> None:
    check(text, tracebacks)


HEAD = "upstreams: {b: {targets: ['http://127.0.0.1:1']}}\n"
ROUTE = "routes: [{name: r, upstream: b, policies: [%s]}]\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Found by fuzzing (each was a RecursionError, OverflowError, ConstructorError,
        # ValueError or KeyError out of the loader, or a traceback while building a policy).
        ("routes: &a [*a]\n" + HEAD, "routes[0]: an alias refers to a value that contains it"),
        ("a: !!python/object:os.system ls\n", "invalid YAML: cannot read 'ls'"),
        ("a: !!int abc\n", "invalid YAML: cannot read 'abc' as tag:yaml.org,2002:int"),
        ("a: !!bool maybe\n", "invalid YAML: cannot read 'maybe'"),
        ("a: !!timestamp 2001-99-99\n", "invalid YAML: cannot read '2001-99-99'"),
        ("a: !!timestamp listen\n", "invalid YAML: cannot read 'listen'"),
        ("a: {<<: 5}\n", "invalid YAML: expected a mapping or list of mappings for merging"),
        ("a: " + "[" * 100 + "]" * 100 + "\n", "nested more than 64 levels deep"),
        (
            "\n".join(
                ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
                + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]
            ),
            "more than 1000000 values once aliases are expanded",
        ),
        ("max_request_body: " + "9" * 400 + " KiB\n" + HEAD + ROUTE % "", "invalid size"),
        ("redis: {timeout: .inf}\n" + HEAD + ROUTE % "", "redis.timeout: invalid duration inf"),
        ("client: {header_timeout: .nan}\n" + HEAD + ROUTE % "", "invalid duration nan"),
        (HEAD + ROUTE % "{session: {cookie: s, sliding_ttl: .inf}}", "invalid duration inf"),
        (HEAD + ROUTE % "{cache: {ttl: '%ss'}}" % ("9" * 400), "ttl: invalid duration"),
    ],
    ids=[
        "recursive-alias",
        "python-tag",
        "bad-int",
        "bad-bool",
        "bad-timestamp",
        "not-a-timestamp",
        "bad-merge",
        "deep-nesting",
        "alias-bomb",
        "size-overflow",
        "infinite-timeout",
        "nan-timeout",
        "infinite-sliding-ttl",
        "huge-ttl",
    ],
)
def test_found_by_fuzzing(text: str, message: str, tracebacks: _Tracebacks) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, FILE, env={}, registry=REGISTRY)
    assert any(message in str(problem) for problem in caught.value.problems), caught.value
