"""A command's calls to a running gateway's admin listener: the session CLI and `gateway
loadtest` write sessions through it when the gateway keeps them in `memory://`, where no other
process can reach them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from gateway.config.models import GatewayConfig, split_listen


class AdminCallFailed(Exception):
    """The admin listener could not be reached, or answered with an error (its body cut short)."""


def local_admin_url(config: GatewayConfig, override: str | None) -> str | None:
    """`override`, else the config's own admin listener when its store is `memory://` (the
    listener may listen on every address; the command runs beside it); else None."""
    if override:
        return override.rstrip("/")
    if not config.redis.url.startswith("memory:"):
        return None
    host, port = split_listen(config.admin.listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def post_admin(
    config: GatewayConfig, base: str, path: str, body: dict[str, Any], timeout: float = 10.0
) -> dict[str, Any]:
    """POST `body` as JSON to `base + path` with the config's admin token; the JSON answer."""
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    token = config.admin.token
    if token is not None:
        request.add_header("Authorization", f"Bearer {token.get_secret_value()}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            payload: dict[str, Any] = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise AdminCallFailed(f"admin listener {base} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminCallFailed(f"cannot reach the admin listener at {base}: {reason}") from None
    return payload
