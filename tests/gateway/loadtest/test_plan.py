"""`--plan FILE`: read like the config, every problem with its file, line and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.loadtest.plan import load_plan

ROUTES = ["catalog", "account"]


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_plan(str(path), ROUTES)
    return [str(p).replace(str(path), "plan.yaml") for p in caught.value.problems]


def test_a_plan_sets_each_route_over_its_defaults(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text("defaults: {p99_ms: 200}\nroutes:\n  catalog: {weight: 3, paths: [/a]}\n")
    plan = load_plan(str(path), ROUTES)
    catalog, account = plan.for_route("catalog"), plan.for_route("account")
    assert (catalog.weight, catalog.paths, catalog.p99_ms) == (3, ["/a"], 200)
    assert (account.weight, account.paths, account.p99_ms) == (1, None, 200)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "routes:\n  catalog:\n    p99_ms: -1\n",
            ["plan.yaml:3: routes.catalog.p99_ms: input should be greater than 0"],
        ),
        (
            "routes:\n  catalgo: {weight: 2}\n",
            ["plan.yaml:2: routes.catalgo: no route named 'catalgo' (routes: catalog, account)"],
        ),
        ("defaults:\n  rps: 3\n", ["plan.yaml:2: defaults.rps: unknown key"]),
        (
            "routes:\n  account:\n    invalid_share: 2\n    keys: many\n",
            [
                "plan.yaml:3: routes.account.invalid_share: input should be less than or equal to 1",
                "plan.yaml:4: routes.account.keys: input should be a valid integer, unable to "
                "parse string as an integer",
            ],
        ),
        (
            "routes: [\n",
            ["plan.yaml:2: invalid YAML: did not find expected node content"],
        ),
    ],
)
def test_problems_name_the_file_line_and_key(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    assert problems(tmp_path, text) == expected


def test_an_unreadable_plan_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_plan(str(tmp_path / "missing.yaml"), ROUTES)


def test_the_readme_plan_and_commands_are_what_the_cli_takes(tmp_path: Path) -> None:
    from gateway.cli import build_parser

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    text = readme[readme.index("## Load-test your own config") :]
    text = text[: text.index("\n## ")]
    plan = text[text.index("```yaml\n") + 8 :]
    path = tmp_path / "plan.yaml"
    path.write_text(plan[: plan.index("```")])
    load_plan(str(path), ["catalog", "orders", "account", "internal"])
    block = text[text.index("```sh\n") + 6 :]
    block = block[: block.index("```")].replace("\\\n", " ")
    commands = [line.split("#")[0].split() for line in block.splitlines() if "loadtest" in line]
    assert len(commands) == 2
    for words in commands:
        build_parser().parse_args(words[1:])
