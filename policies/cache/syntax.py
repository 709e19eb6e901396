"""Field syntax a cache has to read exactly: Cache-Control, HTTP dates, Age, Vary, entity tags.

Pure functions over header strings (RFC 9110 / RFC 9111), no I/O and no clock. Invalid input is
never an exception: it is whatever RFC 9111 says a cache must make of it (usually "ignore the
directive", for `Expires` "already expired").
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from email.utils import formatdate

MAX_DELTA = 2**31
"""RFC 9111 1.2.2: a delta-seconds too big to represent counts as 2^31."""

_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_OWS = " \t"
_DIGITS = re.compile(r"^[0-9]+$")

Directives = dict[str, str | None]
"""Cache-Control directives by lower-case name: the value (quotes removed) or None."""


def parse_cache_control(lines: Iterable[str]) -> Directives:
    """All `Cache-Control` field lines as one list of directives, first occurrence winning.

    A directive that is not `token` or `token=token` / `token="quoted"` exactly (a space around
    `=`, a single-quoted value) is dropped, and so is anything inside a quoted string: RFC 9111
    5.2 wants `extension="max-age=100"` to set no max-age.
    """
    out: Directives = {}
    for line in lines:
        _parse_line(line, out)
    return out


def _parse_line(text: str, out: Directives) -> None:
    i, end = 0, len(text)
    while i < end:
        while i < end and (text[i] in _OWS or text[i] == ","):
            i += 1
        start = i
        while i < end and text[i] in _TOKEN_CHARS:
            i += 1
        name = text[start:i].lower()
        value: str | None = None
        valid = bool(name)
        if i < end and text[i] == "=":
            i += 1
            if i < end and text[i] == '"':
                value, i, closed = _quoted(text, i)
                valid = valid and closed
            else:
                start = i
                while i < end and text[i] in _TOKEN_CHARS:
                    i += 1
                value = text[start:i]
                valid = valid and bool(value)
        while i < end and text[i] in _OWS:
            i += 1
        if i < end and text[i] != ",":
            valid = False
            i = _skip_to_comma(text, i)
        if valid and name not in out:
            out[name] = value


def _quoted(text: str, i: int) -> tuple[str, int, bool]:
    """The quoted-string starting at `text[i] == '"'`: (value, index after it, closed)."""
    chars: list[str] = []
    i += 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            chars.append(text[i + 1])
            i += 2
            continue
        if char == '"':
            return "".join(chars), i + 1, True
        chars.append(char)
        i += 1
    return "".join(chars), i, False


def _skip_to_comma(text: str, i: int) -> int:
    # Commas inside a quoted string do not end the broken directive.
    while i < len(text) and text[i] != ",":
        if text[i] == '"':
            _, i, _ = _quoted(text, i)
        else:
            i += 1
    return i


def delta_seconds(value: str | None) -> int | None:
    """A directive's delta-seconds (digits only; RFC 9111 accepts the quoted form), else None."""
    if value is None or not _DIGITS.match(value):
        return None
    return min(int(value), MAX_DELTA)


def field_names(value: str | None) -> frozenset[str]:
    """The header names a qualified `no-cache="a, b"` / `private="a"` lists (lower case)."""
    if not value:
        return frozenset()
    return frozenset(name.strip().lower() for name in value.split(",") if name.strip())


def parse_age(lines: list[str]) -> int | None:
    """The `Age` value, or None when absent or invalid (negative, a fraction, a suffix).

    RFC 9111 5.1: a list (one line with commas, or several lines) counts by its first member,
    the rest discarded; an invalid value is ignored (the response counts as not aged).
    """
    if not lines:
        return None
    members = split_list(lines)
    if not members or not _DIGITS.match(members[0]):
        return None
    return min(int(members[0]), MAX_DELTA)


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_LONG_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS = {
    name: index + 1
    for index, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_TIME = r"(\d{2}):(\d{2}):(\d{2})"
# RFC 9110 5.6.7: recipients accept all three formats, and nothing else. Names are matched
# case-insensitively (a lenient reading that costs nothing), every separator exactly.
_IMF = re.compile(rf"^([a-z]{{3}}), (\d{{2}}) ([a-z]{{3}}) (\d{{4}}) {_TIME} gmt$", re.I)
_RFC850 = re.compile(rf"^([a-z]{{6,9}}), (\d{{2}})-([a-z]{{3}})-(\d{{2}}) {_TIME} gmt$", re.I)
_ASCTIME = re.compile(rf"^([a-z]{{3}}) ([a-z]{{3}}) ([ \d]\d) {_TIME} (\d{{4}})$", re.I)


def parse_http_date(value: str | None, now: float | None = None) -> float | None:
    """An HTTP-date as a POSIX timestamp, or None when it is not one.

    `now` resolves RFC 850's two-digit years (RFC 9110 5.6.7: a year more than 50 years in
    the future means the previous century); without it they are read as 19xx/20xx by 70.
    """
    if value is None:
        return None
    text = value.strip()
    match = _IMF.match(text)
    if match:
        day, mday, month, year, hh, mm, ss = match.groups()
        if day.lower() not in _DAYS:
            return None
        return _timestamp(int(year), month, int(mday), int(hh), int(mm), int(ss))
    match = _RFC850.match(text)
    if match:
        day, mday, month, yy, hh, mm, ss = match.groups()
        if day.lower() not in _LONG_DAYS:
            return None
        return _timestamp(_full_year(int(yy), now), month, int(mday), int(hh), int(mm), int(ss))
    match = _ASCTIME.match(text)
    if match:
        day, month, mday, hh, mm, ss, year = match.groups()
        if day.lower() not in _DAYS:
            return None
        return _timestamp(int(year), month, int(mday), int(hh), int(mm), int(ss))
    return None


def _full_year(yy: int, now: float | None) -> int:
    if now is None:
        return 1900 + yy if yy >= 70 else 2000 + yy
    current = int(now // 31_556_952) + 1970
    year = current - current % 100 + yy
    if year > current + 50:
        year -= 100
    return year


def _timestamp(year: int, month: str, day: int, hh: int, mm: int, ss: int) -> float | None:
    number = _MONTHS.get(month.lower())
    if number is None or not (1 <= day <= 31 and hh < 24 and mm < 60 and ss < 61):
        return None
    try:
        return float(calendar.timegm((year, number, day, hh, mm, ss, 0, 0, 0)))
    except (ValueError, OverflowError):
        return None


def format_http_date(timestamp: float) -> str:
    """IMF-fixdate, the form a cache sends (e.g. in If-Modified-Since)."""
    return formatdate(timestamp, usegmt=True)


def split_list(lines: Iterable[str]) -> list[str]:
    """The members of a comma-separated list field, over all its lines, trimmed, empties gone."""
    return [item.strip() for line in lines for item in line.split(",") if item.strip()]


def vary_names(lines: Iterable[str]) -> tuple[str, ...] | None:
    """The request headers a response varies on: sorted, lower case, deduplicated.

    None stands for `Vary: *` (anywhere in the list), which no stored response may satisfy.
    """
    names = {name.lower() for name in split_list(lines)}
    if "*" in names:
        return None
    return tuple(sorted(names))


def entity_tags(value: str) -> list[str] | None:
    """The entity tags an If-None-Match lists, or None for `*`. Commas inside quotes stay."""
    if value.strip() == "*":
        return None
    tags: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            tags.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    tags.append("".join(current).strip())
    return [tag for tag in tags if tag]


def opaque_tag(tag: str) -> str:
    """An entity tag without its weakness prefix and quotes, for the weak comparison.

    Lenient on purpose (`w/`, unquoted tags): a false 304 needs an origin sending two
    spellings of one tag for different content, which no origin does.
    """
    tag = tag.strip()
    if tag[:2] in ("W/", "w/"):
        tag = tag[2:]
    if len(tag) >= 2 and tag[0] == '"' and tag[-1] == '"':
        tag = tag[1:-1]
    return tag
