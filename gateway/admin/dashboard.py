"""`GET /-/dashboard`: one self-contained page (dashboard.html) that polls the admin endpoints.

The page holds no data, so it is served without the admin token; everything it shows comes
from `/-/stats` and `/-/top`, which its script calls with `Authorization: Bearer <token>`. The
token reaches the page in the URL fragment (`/-/dashboard#token=...`, which browsers never send
to a server, so it lands in no log) or through the page's own form, and is kept in the tab's
sessionStorage. A Content-Security-Policy admits only the page's own inline script and style
(by hash) and calls to its own origin: nothing is loaded from another host.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from importlib import resources

from aiohttp import web

_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.S)


@cache
def page() -> tuple[bytes, str]:
    """The page and its Content-Security-Policy, read from package data once."""
    body = resources.files(__package__).joinpath("dashboard.html").read_bytes()
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for kind, content in _INLINE.findall(body):
        digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
        hashes[kind].append(f"'sha256-{digest}'")
    policy = "; ".join(
        (
            "default-src 'none'",
            "script-src " + " ".join(hashes[b"script"]),
            "style-src " + " ".join(hashes[b"style"]),
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    return body, policy


async def dashboard(_: web.Request) -> web.Response:
    body, policy = page()
    return web.Response(
        body=body,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": policy,
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
        },
    )
