"""The session policy's options: defaults, and config errors as (YAML, expected message)."""

from __future__ import annotations

import pytest

from gateway.config.loader import parse_config
from gateway.errors import ConfigError
from policies.session.config import SessionOptions

CONFIG = """
upstreams:
  b: {targets: ["http://127.0.0.1:9"]}
routes:
  - name: r
    match: {path: /}
    upstream: b
    policies:
      - session: OPTIONS
"""
WHERE = "c.yaml:9: routes[0].policies[0].session"


def _load(options: str) -> SessionOptions:
    loaded = parse_config(CONFIG.replace("OPTIONS", options), "c.yaml", env={})
    options_model = loaded.chains[0][0].options
    assert isinstance(options_model, SessionOptions)
    return options_model


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("{}", ": set `cookie: NAME` and/or `bearer: true`: the session id comes from one"),
        ("{bearer: false}", ": set `cookie: NAME` and/or `bearer: true`"),
        ("{cookie: 'a b'}", ".cookie: invalid cookie name 'a b'"),
        ('{cookie: "sid\\n"}', ".cookie: invalid cookie name 'sid\\n'"),
        ("{cookie: sid, forward: {user_id: Host}}", ".forward.user_id: 'Host' cannot carry"),
        ("{cookie: sid, forward: {user_id: Cookie}}", ".forward.user_id: 'Cookie' cannot carry"),
        ("{cookie: sid, forward: {u: Connection}}", ".forward.u: 'Connection' cannot carry"),
        ("{cookie: sid, forward: {user_id: 'X Y'}}", ".forward.user_id: invalid header name"),
        ("{cookie: sid, forward: {a: X-A, b: x-a}}", ": forward names header 'x-a' for several"),
        ("{cookie: sid, refresh_every: 1m}", ": refresh_every needs sliding_ttl"),
        (
            "{cookie: sid, sliding_ttl: 1m, refresh_every: 1m}",
            ": refresh_every must be shorter than sliding_ttl",
        ),
        ("{cookie: sid, sliding_ttl: ten}", ".sliding_ttl: invalid duration 'ten'"),
        ("{cookie: sid, sliding_ttl: 0}", ".sliding_ttl: input should be greater than 0"),
        ("{cookie: sid, require: {admin: true}}", ".require.admin: ambiguous value True"),
        ("{cookie: sid, require: {role: []}}", ".require.role: an empty list would refuse"),
        ("{cookie: sid, realm: 'a\"b'}", ".realm: invalid realm"),
        ("{bearer: true, key_prefix: ''}", ".key_prefix: string should have at least 1"),
        ("{cookie: sid, cookies: sid}", ".cookies: unknown key"),
    ],
)
def test_config_errors(options: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(options)
    assert str(caught.value).startswith(WHERE + message), str(caught.value)


def test_defaults() -> None:
    options = _load("{cookie: sid}")
    assert options.bearer is False
    assert options.key_prefix == "session:"
    assert options.forward == {}
    assert options.require == {}
    assert options.fields is None
    assert options.optional is False
    assert options.sliding_ttl is None
    assert options.refresh_interval == 0.0
    assert options.forward_credentials is False
    assert options.realm == "gateway"


def test_refresh_defaults_to_a_tenth_and_require_values_become_lists() -> None:
    options = _load("{bearer: true, sliding_ttl: 30m, require: {level: 3, role: [a, b]}}")
    assert options.sliding_ttl == 1800.0
    assert options.refresh_interval == 180.0
    assert options.require == {"level": ["3"], "role": ["a", "b"]}
