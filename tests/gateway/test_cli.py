"""`gateway check` and `gateway schema` as an operator runs them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.schema import config_schema, reference_markdown
from gateway.registry import Registry
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=ROOT
    )


def test_check_prints_the_route_table_and_shadow_warnings(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        """\
upstreams:
  backend: {targets: ["http://127.0.0.1:9000"]}
routes:
  - name: all
    match: {path: /api}
    upstream: backend
    policies: [{rate_limit: {algorithm: token_bucket, rate: 10/s, burst: 20}}]
  - name: items
    match: {path: /api/items, methods: [GET]}
    upstream: backend
    strip_prefix: /api
"""
    )
    result = gateway("check", "-c", str(config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{config}: valid, 2 routes"
    assert lines[1] == "  all: /api any method any host"
    assert lines[2] == "      upstream backend http://127.0.0.1:9000"
    assert lines[3].startswith("      chain    rate_limit")
    assert lines[4] == "  items: /api/items GET any host (strip /api)"
    assert lines[-1] == (
        "warning: route 'items' (line 8) is shadowed by route 'all' (line 4): it can never match"
    )


def test_check_names_file_line_and_key_path_and_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        """\
upstreams:
  backend: {targets: ["http://127.0.0.1:9000"]}
routes:
  - name: api
    upstream: backend
    policies:
      - rate_limit:
          algorithm: sliding_window
          limit: 10
          window: ten seconds
"""
    )
    result = gateway("check", "-c", str(config))
    assert result.returncode == 2
    assert (
        f"{config}:10: routes[0].policies[0].rate_limit.window: invalid duration 'ten seconds'"
        in result.stderr.splitlines()
    )
    assert result.stdout == ""


def test_check_refuses_a_cache_keyed_by_a_session_not_read_yet(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        """\
upstreams:
  backend: {targets: ["http://127.0.0.1:9000"]}
policies:
  login: {session: {cookie: sid}}
routes:
  - name: account
    upstream: backend
    policies:
      - cache: {ttl: 60s, vary_session: [user_id]}
      - login
"""
    )
    result = gateway("check", "-c", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == (
        f"{config}:9: routes[0].policies[0].cache: route 'account' runs cache before "
        "session 'login' (policies[1]), which must come earlier: "
        "vary_session needs the session fields that session sets"
    )


def test_check_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = gateway("check", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory" in result.stderr


def test_run_refuses_a_bad_config_and_starts_nothing(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("routes: 5\n")
    result = gateway("run", "-c", str(config))
    assert result.returncode == 2
    assert "nothing started" in result.stderr


def test_schema_is_json_schema_with_every_policy() -> None:
    result = gateway("schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    variants = schema["$defs"]["PolicyDeclaration"]["oneOf"]
    assert {next(iter(v["properties"])) for v in variants} >= {"rate_limit", "session"}
    assert schema == json.loads(json.dumps(config_schema(Registry.discover())))


def test_example_config_is_valid() -> None:
    result = gateway("check", "-c", "config.example.yaml")
    assert result.returncode == 0, result.stderr


def test_readme_config_reference_matches_the_models() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- config-reference:start -->\n") + len(
        "<!-- config-reference:start -->\n"
    )
    end = readme.index("<!-- config-reference:end -->")
    if readme[start:end] != reference_markdown(Registry.discover()):
        pytest.fail("README's config reference is stale: run `make readme`")


def test_readme_config_reference_lists_the_keys_of_an_upstream() -> None:
    reference = reference_markdown(Registry.discover())
    keys = [
        "targets",
        "timeouts",
        "timeouts.connect",
        "timeouts.read",
        "keepalive",
        "max_connections",
        "max_pending",
        "max_idle",
        "fail_timeout",
        "pass_host",
    ]
    missing = [key for key in keys if f"| `upstreams.<name>.{key}` |" not in reference]
    assert missing == []


def test_run_workers_auto_is_refused_with_memory_like_the_file(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        "upstreams:\n  backend: {targets: ['http://127.0.0.1:9']}\n"
        "routes:\n  - {name: api, match: {path: /api}, upstream: backend}\n"
    )
    result = gateway("run", "-c", str(config), "--workers", "auto")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "memory:// holds state in one process: use --workers 1 or a redis:// store"
    ]
    result = gateway("run", "-c", str(config), "--workers", "0")
    assert result.returncode == 2
    assert "expected 1 to 256 or 'auto', got '0'" in result.stderr


# -- make demo with a port taken (issue 21, item 7) ---------------------------------------------


@pytest.mark.parametrize("taken", ["UPSTREAM", "LISTEN", "ADMIN_LISTEN"])
def test_demo_with_a_port_taken_fails_at_once_in_one_line(taken: str) -> None:
    ports = {name: free_port() for name in ("UPSTREAM", "LISTEN", "ADMIN_LISTEN")}
    env = dict(
        os.environ,
        UPSTREAM=f"http://127.0.0.1:{ports['UPSTREAM']}",
        LISTEN=f"127.0.0.1:{ports['LISTEN']}",
        ADMIN_LISTEN=f"127.0.0.1:{ports['ADMIN_LISTEN']}",
    )
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports[taken]))
        holder.listen()
        demo = subprocess.Popen(
            [sys.executable, "-m", "demo.run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        try:
            # The timeout is the hang guard: the demo must not wait for anything.
            stdout, stderr = demo.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(demo.pid, signal.SIGKILL)  # what it started, if it hung
            demo.wait()
    assert demo.returncode == 1
    (line,) = stderr.splitlines()
    assert f"port {ports[taken]} (" in line
    assert "already in use" in line
    assert f"make demo {taken}=" in line  # how to choose another
    assert stdout == ""


def test_demo_upstream_on_a_taken_port_says_so_in_one_line() -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = subprocess.run(
            [sys.executable, "-m", "demo.upstream", "--port", str(port)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30,
        )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"demo upstream: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(stop what holds it, or choose another port with --port)"
    ]
