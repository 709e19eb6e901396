"""Options errors as an operator sees them: file, line, key path, and what is wrong."""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from policies.ratelimit.config import RateLimitOptions
from tests.support.harness import load

HEAD = """upstreams:
  backend: {targets: ["http://127.0.0.1:9"]}
routes:
  - name: api
    match: {path: /a}
    upstream: backend
    policies:
      - auth-free
      - rate_limit:
"""
NAMED = """policies:
  auth-free:
    rate_limit: {algorithm: token_bucket, rate: 5/s, burst: 5}
"""
WHERE = "test.yaml:{line}: routes[0].policies[1].rate_limit"

CASES = [
    (
        "          {algorithm: sliding_window, limit: 10, window: ten seconds}",
        f"{WHERE.format(line=13)}.window: invalid duration 'ten seconds'",
    ),
    (
        "          {algorithm: sliding_window, limit: 10}",
        # A key that is not written is reported on the line of the mapping that lacks it.
        f"{WHERE.format(line=12)}.window: required key is missing",
    ),
    (
        "          {algorithm: sliding_window, limit: 0, window: 1s}",
        f"{WHERE.format(line=13)}.limit: input should be greater than or equal to 1",
    ),
    (
        "          {algorithm: sliding_window, limit: true, window: 1s}",
        f"{WHERE.format(line=13)}.limit: input should be a valid integer",
    ),
    (
        "          {algorithm: sliding_window, limit: 10, window: 0}",
        f"{WHERE.format(line=13)}.window: window must be at least 1ms (and under 35 years)",
    ),
    (
        "          {algorithm: token_bucket, rate: 10/s, burst: 5, window: 1s}",
        f"{WHERE.format(line=13)}.window: 'window' is not an option of token_bucket "
        "(it takes rate, burst, cost)",
    ),
    (
        "          {algorithm: token_bucket, rate: 10/s, burst: 5, cost: 6}",
        f"{WHERE.format(line=13)}.cost: cost 6 exceeds burst 5: no request could pass",
    ),
    (
        "          {algorithm: token_bucket, rate: ten per second, burst: 5}",
        f"{WHERE.format(line=13)}.rate: invalid rate 'ten per second' (expected e.g. 10/s, 600/m)",
    ),
    (
        "          {algorithm: leaky_bucket, rate: 10/s}",
        f"{WHERE.format(line=13)}.algorithm: input should be 'sliding_window' or 'token_bucket'",
    ),
    (
        "          {key: client_ip}",
        f"{WHERE.format(line=12)}.algorithm: required key is missing: set `algorithm` "
        "(sliding_window or token_bucket) with its parameters, or `limits`",
    ),
    (
        "          {algorithm: sliding_window, limit: 1, window: 1s, key: cookie}",
        f"{WHERE.format(line=13)}.key: invalid key 'cookie' (use client_ip, route, header.NAME, "
        "query.NAME, session.FIELD or tls.subject)",
    ),
    (
        "          {algorithm: sliding_window, limit: 1, window: 1s, on_store_error: maybe}",
        f"{WHERE.format(line=13)}.on_store_error: input should be 'allow', 'deny' or 'local'",
    ),
    (
        "          limit: 5\n"
        "          limits:\n"
        "            - {algorithm: sliding_window, limit: 5, window: 1s}",
        f"{WHERE.format(line=13)}.limit: 'limit' belongs to a single limit: with `limits`, "
        "set it in each entry",
    ),
    (
        "          limits:\n"
        "            - {algorithm: sliding_window, limit: 5, window: 1s}\n"
        "            - {algorithm: token_bucket, rate: 10/s}",
        f"{WHERE.format(line=15)}.limits[1].burst: required key is missing",
    ),
    (
        "          limits:\n"
        "            - {algorithm: sliding_window, limit: 5, window: 1s, name: a}\n"
        "            - {algorithm: sliding_window, limit: 9, window: 1h, name: a}",
        f"{WHERE.format(line=15)}.limits[1].name: duplicate limit name 'a' (first at limits[0])",
    ),
    (
        "          limits: []",
        f"{WHERE.format(line=13)}.limits: list should have at least 1 item after validation, not 0",
    ),
    (
        "          {algorithm: sliding_window, limit: 5, window: 1s, on_store_error: local,"
        " local_share: 0}",
        f"{WHERE.format(line=13)}.local_share: input should be greater than or equal to 1",
    ),
    (
        "          {algorithm: sliding_window, limit: 5, window: 1s, on_store_error: local,"
        " local_share: two}",
        f"{WHERE.format(line=13)}.local_share: input should be a valid integer",
    ),
    (
        "          {algorithm: sliding_window, limit: 5, window: 1s, local_share: 2}",
        f"{WHERE.format(line=13)}.local_share: local_share applies only with "
        "`on_store_error: local`",
    ),
]


@pytest.mark.parametrize(("options", "expected"), CASES)
def test_problems_name_file_line_and_key(options: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(NAMED + HEAD + options + "\n")
    assert [str(problem) for problem in caught.value.problems] == [expected]


def test_named_definitions_are_reported_under_policies() -> None:
    text = (
        "policies:\n"
        "  per-client:\n"
        "    rate_limit: {algorithm: sliding_window, limit: 100, window: 1 minute}\n"
        + HEAD.replace("      - auth-free\n", "").replace(
            "      - rate_limit:\n", "      - per-client\n"
        )
    )
    with pytest.raises(ConfigError) as caught:
        load(text)
    assert [str(p) for p in caught.value.problems] == [
        "test.yaml:3: policies.per-client.rate_limit.window: invalid duration '1 minute'"
    ]


def test_valid_forms_and_their_defaults() -> None:
    single = RateLimitOptions.model_validate(
        {"algorithm": "sliding_window", "limit": 100, "window": "1m"}
    )
    assert single.all_limits() == (single,)
    assert str(single.key) == "client_ip"
    assert single.on_store_error == "allow"
    assert single.approximate is False
    several = RateLimitOptions.model_validate(
        {
            "key": ["header.X-Api-Key", "route"],
            "limits": [
                {"algorithm": "token_bucket", "rate": "10/s", "burst": 20},
                {"algorithm": "sliding_window", "limit": 1000, "window": "1h", "name": "hourly"},
            ],
        }
    )
    first, second = several.all_limits()
    assert (first.algorithm, first.cost, second.window) == ("token_bucket", 1, 3600.0)
    assert several.key.specs == ("header.X-Api-Key", "route")


def test_every_option_documents_its_default() -> None:
    from policies.ratelimit.config import Limit

    for model in (RateLimitOptions, Limit):
        for name, field in model.model_fields.items():
            assert field.description, name
            if not field.is_required():
                assert "Default: " in field.description or "Required" in field.description, name
