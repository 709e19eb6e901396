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

    def __init__(self, lines: dict[Loc, int], unread: set[Loc] | None = None) -> None:
        self._lines = lines
        self._unread = unread or set()

    def unread(self, loc: Sequence[str | int]) -> bool:
        """Whether `loc` is at or under a value the YAML reader already reported (a duplicate
        key, a bad tag, a recursive alias): its validation errors would only repeat that."""
        path = tuple(loc)
        return any(path[: len(bad)] == bad for bad in self._unread)

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


def parse_yaml(text: str, file: str) -> tuple[Any, Positions, list[ConfigProblem]]:
    """Parse YAML into plain Python values, the line of every key and list item, and problems.

    Duplicate keys (which plain `yaml.safe_load` would silently accept), bad tags and recursive
    aliases are returned as problems with the value read as well as it can be, so validation
    still reports the rest of the file. Syntax errors, after which nothing can be read, raise
    `YamlProblems`.
    """
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise YamlProblems(_syntax(text, file, line, problem)) from None
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    if root is None:
        return None, Positions(lines), []
    lines[()] = root.start_mark.line + 1
    builder = _Builder(file, lines)
    try:
        value = builder.build(root, ())
    except _TooLarge:
        message = f"invalid YAML: more than {_MAX_VALUES} values once aliases are expanded"
        raise YamlProblems([ConfigProblem(file, None, "", message)]) from None
    return value, Positions(lines, builder.unread), builder.problems


_TAB = "invalid YAML: a tab indents this line (YAML indents with spaces only)"


def _syntax(text: str, file: str, line: int | None, problem: str) -> list[ConfigProblem]:
    """The syntax error, said plainly when tabs indent lines (libyaml's words are cryptic)."""
    tabbed = [
        number
        for number, content in enumerate(text.split("\n"), 1)
        if "\t" in content[: len(content) - len(content.lstrip(" \t"))]
    ]
    if line not in tabbed:
        return [ConfigProblem(file, line, "", f"invalid YAML: {problem}")]
    return [ConfigProblem(file, number, "", _TAB) for number in tabbed]


class YamlProblems(Exception):
    """Problems found while reading YAML, before any validation."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


_MAX_DEPTH = 64
_MAX_VALUES = 1_000_000
"""Values a document may expand to through aliases (a few kB can otherwise name billions)."""


class _TooLarge(Exception):
    pass


class _Builder:
    """Plain values from YAML nodes, recording the line of each; bounded whatever the document
    does (recursive aliases, alias bombs, deep nesting, unknown or malformed tags)."""

    def __init__(self, file: str, lines: dict[Loc, int]) -> None:
        self.file = file
        self.lines = lines
        self.problems: list[ConfigProblem] = []
        self.unread: set[Loc] = set()
        self.loader = _Loader("")
        self.active: set[int] = set()
        self.left = _MAX_VALUES

    def add(self, node: yaml.Node, loc: Loc, message: str, unread: bool = True) -> None:
        if unread:
            self.unread.add(loc)
        self.problems.append(
            ConfigProblem(self.file, node.start_mark.line + 1, format_loc(loc), message)
        )

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.left -= 1
        if self.left < 0:
            raise _TooLarge()
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, loc)
        if len(loc) >= _MAX_DEPTH:
            self.add(node, loc, f"nested more than {_MAX_DEPTH} levels deep")
            return None
        if id(node) in self.active:
            self.add(node, loc, "an alias refers to a value that contains it")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, loc)
            if isinstance(node, yaml.SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    child = (*loc, index)
                    self.lines[child] = item.start_mark.line + 1
                    items.append(self.build(item, child))
                return items
            return None
        finally:
            self.active.discard(id(node))

    def mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        try:
            self.loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        except yaml.YAMLError as exc:
            self.add(node, loc, f"invalid YAML: {getattr(exc, 'problem', None) or exc}")
            return {}
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = (
                self.scalar(key_node, loc, quiet=True)
                if isinstance(key_node, yaml.ScalarNode)
                else ()
            )
            if not isinstance(key, str | int | float | bool) and key is not None:
                self.add(key_node, loc, "mapping keys must be plain values", unread=False)
                continue
            key = str(key) if not isinstance(key, str) else key
            child = (*loc, key)
            if key in result:
                self.add(key_node, child, "duplicate key")
            self.lines[child] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, child)
        return result

    def scalar(self, node: yaml.ScalarNode, loc: Loc, quiet: bool = False) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        # PyYAML's constructors of tagged scalars (`!!int x`, `!!bool maybe`, `!!timestamp x`,
        # unknown tags) fail with whatever their conversion happens to raise (ValueError,
        # KeyError, even AttributeError): each is a problem in the file, not a crash.
        except Exception:
            if not quiet:
                value = node.value if len(node.value) <= 40 else node.value[:40] + "..."
                self.add(node, loc, f"invalid YAML: cannot read {value!r} as {node.tag}")
            return ()  # no plain value: refused by the caller (key) or by validation
