"""An aiohttp application with the gateway's policies in it, from the gateway's own config.

    .venv/bin/python examples/aiohttp_app.py    # config.example.yaml, port 8000
    curl -i localhost:8000/hello                # RateLimit headers of `per-client`
    curl -i localhost:8000/catalog              # X-Cache: MISS, then HIT (one handler run)
    curl -i localhost:8000/account              # 401 until a session exists

`GATEWAY_CONFIG` names the file (default `config.example.yaml`), `PORT` the port. With the same
`REDIS_URL` as a `gateway run` of that file, `per-client` is one bucket for the app and the edge.
"""

from __future__ import annotations

import os
import secrets

from aiohttp import web

from gateway.aiohttp import Policies

policies = Policies.from_config(os.environ.get("GATEWAY_CONFIG", "config.example.yaml"))
catalog_calls = web.AppKey("catalog_calls", list[int])


@policies.chain("hello", "per-client")
async def hello(request: web.Request) -> web.Response:
    return web.json_response({"hello": "world"})


@policies.chain("catalog", "per-client", {"cache": {"ttl": "30s"}})
async def catalog(request: web.Request) -> web.Response:
    calls = request.app[catalog_calls]
    calls.append(1)
    return web.json_response({"items": ["tea", "coffee"], "handler_runs": len(calls)})


async def account(request: web.Request) -> web.Response:
    # Set by the session policy from the session hash; a client's own copies were removed.
    return web.json_response(
        {"user_id": request.headers.get("X-User-Id"), "session": request["session"]}
    )


async def login(request: web.Request) -> web.Response:
    """Writes a session as a login service would (`HSET session:<id> ...` plus a TTL)."""
    session_id = secrets.token_urlsafe(24)
    store = request.app[policies.store_key]
    await store.hset(f"session:{session_id}", {"user_id": "42", "role": "admin"}, ttl=3600)
    response = web.json_response({"id": session_id})
    response.set_cookie("sid", session_id, httponly=True)
    return response


def make_app() -> web.Application:
    app = web.Application(
        middlewares=[
            # By aiohttp route name: the same declarations as a route's `policies` in YAML.
            policies.middleware(
                routes={
                    "account": [
                        {"session": {"cookie": "sid", "forward": {"user_id": "X-User-Id"}}},
                        "per-client",
                    ]
                }
            )
        ]
    )
    app[catalog_calls] = []
    app.cleanup_ctx.append(policies.cleanup_ctx)  # opens and closes the one store
    app.router.add_get("/hello", hello)
    app.router.add_get("/catalog", catalog)
    app.router.add_get("/account", account, name="account")
    app.router.add_post("/login", login)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
