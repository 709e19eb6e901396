"""Answering a request from a stored entry: 304 for matching validators, 206 for one byte
range of a stored 200, else the stored response. No I/O."""

from __future__ import annotations

import re

from multidict import CIMultiDict

from gateway.api import Request, Response
from policies.cache.entry import Entry
from policies.cache.freshness import age_header, not_modified
from policies.cache.syntax import opaque_tag, parse_http_date

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.I)


def from_entry(request: Request, entry: Entry, *, age: float, result: str, now: float) -> Response:
    """The answer to `request` from `entry` (fresh, or allowed stale)."""
    headers = request.headers
    if_none_match = headers.get("If-None-Match")
    if_modified_since = headers.get("If-Modified-Since")
    conditional = if_none_match is not None or if_modified_since is not None
    if (
        conditional
        and 200 <= entry.status < 300
        and not_modified(
            method=request.method,
            if_none_match=if_none_match,
            if_modified_since=if_modified_since,
            etag=entry.etag,
            last_modified=entry.modified_at(),
            now=now,
        )
    ):
        return entry.not_modified(age=age, result=result)
    head = request.method == "HEAD"
    spec = headers.get("Range")
    if spec is not None and not head and entry.status == 200:
        partial = _partial(entry, spec, headers.get("If-Range"), age=age, result=result)
        if partial is not None:
            return partial
    return entry.response(age=age, result=result, head=head)


def _partial(
    entry: Entry, spec: str, if_range: str | None, *, age: float, result: str
) -> Response | None:
    """A single byte range of the stored body (RFC 9110 14), or None to send it whole."""
    if if_range is not None and not _if_range_holds(entry, if_range):
        return None
    match = _RANGE.match(spec)
    if match is None:
        return None  # several ranges, another unit: the whole body is a valid answer
    first, last = match.groups()
    size = len(entry.body)
    if not first and not last:
        return None
    if not first:
        start, end = max(0, size - int(last)), size - 1
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return None
    if start >= size or size == 0:
        headers: CIMultiDict[str] = CIMultiDict(
            {"Content-Range": f"bytes */{size}", "X-Cache": result}
        )
        return Response(416, headers)
    response = entry.response(age=age, result=result, head=False)
    response.status = 206
    response.body = entry.body[start : end + 1]
    response.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    response.headers["Age"] = age_header(age)
    return response


def _if_range_holds(entry: Entry, if_range: str) -> bool:
    """RFC 9110 13.1.5: the stored response is still the one the client has part of, by a
    strong comparison of validators."""
    value = if_range.strip()
    if value.startswith('"') or value[:2] in ("W/", "w/"):
        etag = entry.etag
        return (
            etag is not None
            and not value.startswith(("W/", "w/"))
            and not etag.startswith(("W/", "w/"))
            and opaque_tag(etag) == opaque_tag(value)
        )
    # A date: it must be the stored Last-Modified exactly, and that one a strong validator,
    # which an intermediate cache may deduce only from a Date at least 60 s later (8.8.2.2).
    last_modified = entry.header("Last-Modified")
    if last_modified is None or value != last_modified.strip():
        return False
    modified = parse_http_date(last_modified)
    date = parse_http_date(entry.header("Date"))
    return modified is not None and date is not None and date - modified >= 60
