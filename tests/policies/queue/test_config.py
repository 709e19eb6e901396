"""The queue policy's options: defaults, and config errors as (YAML, expected message)."""

from __future__ import annotations

import pytest

from gateway.config.loader import parse_config
from gateway.errors import ConfigError
from policies.queue.config import QueueOptions

CONFIG = """
upstreams:
  b: {targets: ["http://127.0.0.1:9"]}
routes:
  - name: r
    match: {path: /}
    upstream: b
    policies:
      - queue: OPTIONS
"""
WHERE = "c.yaml:9: routes[0].policies[0].queue"


def _load(options: str) -> QueueOptions:
    loaded = parse_config(CONFIG.replace("OPTIONS", options), "c.yaml", env={})
    options_model = loaded.chains[0][0].options
    assert isinstance(options_model, QueueOptions)
    return options_model


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("{max_body: lots}", ".max_body: invalid size 'lots'"),
        ("{max_attempts: 0}", ".max_attempts: input should be greater than or equal to 1"),
        ("{retry: {first: 1m, max: 1s}}", ": retry.first must not exceed retry.max"),
        ("{retry: {first: 0}}", ".retry.first: input should be greater than 0"),
        ("{retry: {later: 1s}}", ".retry.later: unknown key"),
        ("{visibility_timeout: 100ms}", ": visibility_timeout must be at least 200ms"),
        ("{retention: forever}", ".retention: invalid duration 'forever'"),
        ("{concurrency: 0}", ".concurrency: input should be greater than or equal to 1"),
        ("{attempts: 3}", ".attempts: unknown key"),
    ],
)
def test_config_errors(options: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(options)
    assert str(caught.value).startswith(WHERE + message), str(caught.value)


def test_defaults_are_the_spec_s() -> None:
    options = _load("{}")
    assert options.max_body == 256 * 1024
    assert options.max_attempts == 10
    assert (options.retry.first, options.retry.max) == (1.0, 300.0)
    assert options.retention == 7 * 86400.0
    assert options.visibility_timeout == 30.0
    assert (options.concurrency, options.poll) == (16, 0.5)
