"""Reading a config file: `${VAR}` substitution, then YAML that keeps each value's line number.

Validation errors carry a key path (`routes[2].policies[0]`); `Positions` turns it back into the
line the operator wrote, so every problem can be reported as `file:line: key.path: message`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from gateway.errors import ConfigProblem

Loc = tuple[str | int, ...]

_VAR = re.compile(r"\$(\$)?\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def format_loc(loc: Sequence[str | int]) -> str:
    """`("routes", 2, "policies", 0)` -> `routes[2].policies[0]`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class Positions:
    """Maps key paths of a parsed document to the line each was written on."""

    def __init__(self, lines: dict[Loc, int]) -> None:
        self._lines = lines

    def line(self, loc: Sequence[str | int]) -> int | None:
        """The line of `loc`, or of its nearest ancestor that the file spells out."""
        path = tuple(loc)
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return self._lines.get((), None)


def substitute_env(text: str, env: Mapping[str, str], file: str) -> tuple[str, list[ConfigProblem]]:
    """Replace `${VAR}` and `${VAR:-default}`; `$${...}` stays literal as `${...}`."""
    problems: list[ConfigProblem] = []

    def replace(match: re.Match[str]) -> str:
        escaped, name, default = match.groups()
        if escaped:
            return match.group(0)[1:]
        if name in env:
            return env[name]
        if default is not None:
            return default
        line = text.count("\n", 0, match.start()) + 1
        problems.append(ConfigProblem(file, line, "", f"environment variable {name} is not set"))
        return ""

    return _VAR.sub(replace, text), problems


def parse_yaml(text: str, file: str) -> tuple[Any, Positions]:
    """Parse YAML into plain Python values and the line of every key and list item.

    Raises `ConfigError`-ready problems as a list (via `YamlProblems`) for syntax errors and
    duplicate keys, which plain `yaml.safe_load` would silently accept.
    """
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlProblems([ConfigProblem(file, line, "", f"invalid YAML: {problem}")]) from None
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    problems: list[ConfigProblem] = []
    if root is None:
        return None, Positions(lines)
    lines[()] = root.start_mark.line + 1
    value = _construct(root, (), lines, problems, file, _Loader(""))
    if problems:
        raise YamlProblems(problems)
    return value, Positions(lines)


class YamlProblems(Exception):
    """Problems found while reading YAML, before any validation."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


def _construct(
    node: yaml.Node,
    loc: Loc,
    lines: dict[Loc, int],
    problems: list[ConfigProblem],
    file: str,
    loader: yaml.SafeLoader,
) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                problems.append(
                    ConfigProblem(
                        file,
                        key_node.start_mark.line + 1,
                        format_loc(loc),
                        "mapping keys must be plain values",
                    )
                )
                continue
            key = str(key) if not isinstance(key, str) else key
            child = (*loc, key)
            if key in result:
                problems.append(
                    ConfigProblem(
                        file, key_node.start_mark.line + 1, format_loc(child), "duplicate key"
                    )
                )
            lines[child] = key_node.start_mark.line + 1
            result[key] = _construct(value_node, child, lines, problems, file, loader)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            child = (*loc, index)
            lines[child] = item.start_mark.line + 1
            items.append(_construct(item, child, lines, problems, file, loader))
        return items
    return loader.construct_object(node, deep=True)
