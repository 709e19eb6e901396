"""Targeted cache-control fields (RFC 9213): `CDN-Cache-Control` and its kind.

A targeted field is an RFC 8941 Dictionary. The cache keeps a target list (the `targeted`
option, most specific first); the first field on it that is present, parses and is not empty
replaces `Cache-Control` and `Expires` for this cache's own decisions (RFC 9213 2.2). A field
that fails to parse, or is empty, is ignored as if absent. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from policies.cache.syntax import Directives, parse_cache_control


class Token(str):
    """An RFC 8941 Token (kept apart from a String: `private=x` is not `private="x"`)."""

    __slots__ = ()


Item = int | float | str | bool | bytes | Token | list[object]


class Fields(Protocol):
    def getall(self, key: str, default: list[str]) -> list[str]: ...


class Invalid(ValueError):
    """The field is not a valid Structured Field Dictionary."""


_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]*)?")
_BYTES = re.compile(r":([A-Za-z0-9+/=]*):")
_NUMERIC = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})
_FIELD_LIST = frozenset({"no-cache", "private"})
_FLAGS = frozenset(
    {"no-store", "must-revalidate", "proxy-revalidate", "public", "must-understand", "immutable"}
)


def parse_dictionary(text: str) -> dict[str, Item]:
    """An RFC 8941 4.2.2 Dictionary, members' parameters dropped; raises `Invalid`."""
    text = text.strip(" ")
    out: dict[str, Item] = {}
    i = 0
    while i < len(text):
        key, i = _key(text, i)
        value: Item = True
        if i < len(text) and text[i] == "=":
            if text[i + 1 : i + 2] == "(":
                value, i = _inner_list(text, i + 1)
            else:
                value, i = _bare_item(text, i + 1)
        i = _parameters(text, i)
        out[key] = value  # a repeated key: the last one wins (RFC 8941 4.2.2)
        while i < len(text) and text[i] in " \t":
            i += 1
        if i == len(text):
            return out
        if text[i] != ",":
            raise Invalid("expected a comma")
        i += 1
        while i < len(text) and text[i] in " \t":
            i += 1
        if i == len(text):
            raise Invalid("trailing comma")
    return out


def _key(text: str, i: int) -> tuple[str, int]:
    match = _KEY.match(text, i)
    if match is None:
        raise Invalid("bad key")
    return match.group(), match.end()


def _parameters(text: str, i: int) -> int:
    while i < len(text) and text[i] == ";":
        i += 1
        while i < len(text) and text[i] == " ":
            i += 1
        _, i = _key(text, i)
        if i < len(text) and text[i] == "=":
            _, i = _bare_item(text, i + 1)
    return i


def _inner_list(text: str, i: int) -> tuple[list[object], int]:
    items: list[object] = []
    i += 1  # the "("
    while i < len(text):
        while i < len(text) and text[i] == " ":
            i += 1
        if text[i : i + 1] == ")":
            return items, _parameters(text, i + 1)
        item, i = _bare_item(text, i)
        i = _parameters(text, i)
        items.append(item)
        if i < len(text) and text[i] not in " )":
            raise Invalid("bad inner list")
    raise Invalid("unterminated inner list")


def _bare_item(text: str, i: int) -> tuple[Item, int]:
    char = text[i : i + 1]
    if char == "-" or char.isdigit():
        return _number(text, i)
    if char == '"':
        return _string(text, i)
    if char == "?":
        flag = text[i + 1 : i + 2]
        if flag not in ("0", "1"):
            raise Invalid("bad boolean")
        return flag == "1", i + 2
    if char == ":":
        match = _BYTES.match(text, i)
        if match is None:
            raise Invalid("bad byte sequence")
        return match.group(1).encode(), match.end()
    match = _TOKEN.match(text, i)
    if match is None:
        raise Invalid("bad item")
    return Token(match.group()), match.end()


def _number(text: str, i: int) -> tuple[int | float, int]:
    match = _NUMBER.match(text, i)
    if match is None:
        raise Invalid("bad number")
    spelled = match.group()
    digits, _, fraction = spelled.lstrip("-").partition(".")
    if match.group(1) is None:
        if len(digits) > 15:
            raise Invalid("integer too long")
        return int(spelled), match.end()
    if len(digits) > 12 or not 1 <= len(fraction) <= 3:
        raise Invalid("bad decimal")
    return float(spelled), match.end()


def _string(text: str, i: int) -> tuple[str, int]:
    chars: list[str] = []
    i += 1
    while i < len(text):
        char = text[i]
        if char == "\\":
            following = text[i + 1 : i + 2]
            if following not in ('"', "\\"):
                raise Invalid("bad escape")
            chars.append(following)
            i += 2
        elif char == '"':
            return "".join(chars), i + 1
        elif not " " <= char <= "~":
            raise Invalid("bad string character")
        else:
            chars.append(char)
            i += 1
    raise Invalid("unterminated string")


def as_directives(members: dict[str, Item]) -> Directives:
    """Dictionary members as `Cache-Control` directives, each directive's value of the type
    its definition implies or dropped (RFC 9213 2.1: `max-age=1.5` is no max-age at all)."""
    out: Directives = {}
    for name, value in members.items():
        if name in _NUMERIC:
            if type(value) is int and value >= 0:
                out[name] = str(value)
        elif name in _FIELD_LIST:
            if value is True:
                out[name] = None
            elif type(value) is str:  # a String, not a Token
                out[name] = value
        elif name in _FLAGS:
            if value is True:
                out[name] = None
        elif value is not False:
            out[name] = None if value is True else str(value)
    return out


def response_directives(headers: Fields, targets: Sequence[str]) -> tuple[Directives, bool]:
    """The directives this cache obeys for a response, and whether they came from a targeted
    field (then `Cache-Control` and `Expires` are ignored: RFC 9213 2.2)."""
    for name in targets:
        lines = headers.getall(name, [])
        if not lines:
            continue
        try:
            members = parse_dictionary(", ".join(line for line in lines if line.strip()))
        except Invalid:
            continue  # "SHOULD be ignored": as if the field were absent
        if members:
            return as_directives(members), True
    return parse_cache_control(headers.getall("Cache-Control", [])), False
