"""Vary: a request's secondary key (RFC 9111 4.1), its selecting headers normalised first.

Two requests select one stored variant when their headers named by `Vary` differ only in
ways their fields' definitions say do not matter. For every field: field lines combined,
whitespace around list commas and empty members dropped. For the content-negotiation fields
(`Accept`, `Accept-Charset`, `Accept-Encoding`, `Accept-Language`, RFC 9110 12.5) also: case
folded, spaces around `;` and `=` dropped, weights written one way (`q=1.0` is no weight,
`q=0.50` is `q=0.5`), parameters sorted, and members sorted by weight then by name (the
order of members with equal weight does not count in RFC 9110). Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Protocol

NO_VARIANT = "-"
"""The variant id of a response without Vary."""

NEGOTIATION = frozenset({"accept", "accept-charset", "accept-encoding", "accept-language"})
_QVALUE = re.compile(r"^(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)$")


class Fields(Protocol):
    def getall(self, key: str, default: list[str]) -> list[str]: ...


def selecting_value(name: str, lines: list[str]) -> str | None:
    """One request header's value as a secondary key (`name` lower case). None when the
    request lacks the header (which matches only requests lacking it too)."""
    if not lines:
        return None
    members = [member.strip() for line in lines for member in line.split(",")]
    members = [member for member in members if member]
    if name in NEGOTIATION:
        return _negotiation(members)
    return ",".join(members)


def _negotiation(members: list[str]) -> str:
    weighted: list[tuple[float, str]] = []
    for member in members:
        value, *params = (part.strip() for part in member.lower().split(";"))
        weight, q = 1.0, ""
        kept: list[str] = []
        for param in params:
            key, _, given = (piece.strip() for piece in param.partition("="))
            if key == "q":
                if not _QVALUE.match(given):
                    # An invalid weight: what the origin makes of it is unknown, so the
                    # value is kept as written, in its order.
                    return ",".join(members).lower()
                weight = float(given)
                q = "" if weight == 1.0 else f"q={weight:g}"
            elif key:
                kept.append(f"{key}={given}")
        kept.sort()
        if q:
            kept.append(q)
        weighted.append((weight, ";".join([value, *kept])))
    weighted.sort(key=lambda pair: (-pair[0], pair[1]))
    return ",".join(text for _, text in weighted)


def variant_id(names: Iterable[str], headers: Fields) -> str:
    """The secondary key of a request for a response varying on `names` (sorted, lower).

    SHA-1 of one line per name, `name=value` or `name\\0absent`: lookup.lua computes the
    same with `redis.sha1hex` (from `selecting_pairs`) when the caller does not know the
    URI's Vary yet.
    """
    lines: list[str] = []
    for name in names:
        value = selecting_value(name, headers.getall(name, []))
        lines.append(f"{name}\x00absent" if value is None else f"{name}={value}")
    if not lines:
        return NO_VARIANT
    return hashlib.sha1("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def selecting_pairs(headers: Iterable[tuple[str, str]]) -> list[str]:
    """Every request header as `[name, selecting value, ...]` (lower-case names, lines
    combined), for a lookup that must find the variant before knowing the Vary names."""
    lines: dict[str, list[str]] = {}
    for name, value in headers:
        lines.setdefault(name.lower(), []).append(value)
    pairs: list[str] = []
    for name, values in lines.items():
        pairs.append(name)
        pairs.append(selecting_value(name, values) or "")
    return pairs
