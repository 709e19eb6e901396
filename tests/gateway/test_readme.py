"""The README's commands and tables, checked against what the code really does."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from gateway.cli import build_parser
from tests.conftest import GatewayFactory

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"\n{title}\n")
    end = README.find("\n#", start + len(title) + 2)
    return README[start : end if end != -1 else None]


def running_it() -> list[list[str]]:
    """The command lines of the `sh` block of "Running it", as words, comments dropped."""
    text = section("## Running it")
    block = text[text.index("```sh\n") + len("```sh\n") :]
    block = block[: block.index("```")]
    return [words for line in block.splitlines() if (words := shlex.split(line, comments=True))]


def test_running_it_commands_parse_and_name_files_that_exist() -> None:
    parser = build_parser()
    commands = [words for words in running_it() if words[0] == "gateway"]
    assert commands
    for words in commands:
        argv = words[1 : words.index(">")] if ">" in words else words[1:]
        argv = ["x" * 24 if word == "<id>" else word for word in argv]
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"the README's `{shlex.join(words)}` is refused by the CLI")
        config = getattr(args, "config", None)
        if "-c" in argv:
            assert (ROOT / config).is_file(), f"`{shlex.join(words)}`: no {config} in a clone"


def test_running_it_commands_find_gateway_as_written() -> None:
    # After `make demo`, `gateway` is in .venv/bin, which is not on PATH: the block must say
    # how it gets there. Run it with a PATH that knows nothing of the venv.
    if not (ROOT / ".venv" / "bin" / "gateway").exists():
        pytest.skip("no .venv here: the README's commands are for a `make` install")
    lines = running_it()
    setup = [shlex.join(words) for words in lines if words[0] != "gateway"]
    checks = [shlex.join(words) for words in lines if words[:2] == ["gateway", "check"]]
    assert checks, "the README shows no `gateway check` line"
    script = "set -e\n" + "\n".join(setup + checks)
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    result = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert ": valid, " in result.stdout


async def test_admin_table_lists_every_admin_route(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        "upstreams: {b: {targets: [UPSTREAM_URL]}}\nroutes: [{name: r, upstream: b}]\n"
    )
    served = {
        f"{route.method} {route.resource.canonical}"
        for route in gw._admin.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = set(
        re.findall(
            r"^\| `([A-Z]+ /\S*)` \|", section("### Admin listener (never the public one)"), re.M
        )
    )
    assert documented == served
