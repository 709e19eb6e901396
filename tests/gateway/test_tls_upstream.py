"""TLS to upstreams: verification (on by default), CA and server name, the gateway's client
certificate, a certificate that does not verify (502 upstream_tls, nothing sent), session reuse."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import GatewayFactory
from tests.support.pki import Pki
from tests.support.upstream import Upstream


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


async def tls_upstream(
    aiohttp_server: Callable[..., Awaitable[object]],
    pki: Pki,
    *names: str,
    client_ca: Pki | None = None,
) -> tuple[Upstream, str]:
    """An HTTPS upstream with a certificate for `names`; `client_ca`: it requires a client
    certificate signed by that CA."""
    cert, key, _ = pki.leaf("upstream", *names)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca.ca_path)
    backend = Upstream()

    async def tls_info(request: web.Request) -> web.Response:
        sslobj = request.transport.get_extra_info("ssl_object")  # type: ignore[union-attr]
        peer = sslobj.getpeercert()
        return web.json_response(
            {
                "reused": sslobj.session_reused,
                "sni": sslobj.server_hostname if hasattr(sslobj, "server_hostname") else None,
                "peer": dict(x[0] for x in peer["subject"]) if peer else None,
            }
        )

    backend.route("/api/tls", tls_info)
    server = await aiohttp_server(backend.app(), ssl=ctx)
    return backend, f"https://127.0.0.1:{server.port}"  # type: ignore[attr-defined]


def config(url: str, tls: str, keepalive: str = "4s") -> str:
    return f"""\
upstreams:
  backend:
    targets: ["{url}"]
    keepalive: {keepalive}
    tls: {tls}
routes:
  - {{name: api, match: {{path: /api}}, upstream: backend}}
"""


async def test_upstream_verified_with_its_ca_and_server_name(
    aiohttp_server: Callable[..., Awaitable[object]], pki: Pki, make_gateway: GatewayFactory
) -> None:
    backend, url = await tls_upstream(aiohttp_server, pki, "internal.example")
    gateway = await make_gateway(
        config(url, f"{{ca: {pki.ca_path}, server_name: internal.example}}")
    )
    async with gateway.request("GET", "/api/x") as response:
        assert response.status == 200
        assert (await response.json())["path"] == "/api/x"
    assert backend.hits["/api/x"] == 1


@pytest.mark.parametrize(
    "tls",
    [
        "{}",  # the system's CAs do not know this one
        "{ca: CA, server_name: other.example}",  # trusted, but not for this name
        "{ca: CA}",  # trusted, but not for the address the target names
    ],
    ids=["untrusted", "wrong-name", "address-not-in-cert"],
)
async def test_upstream_certificate_that_does_not_verify_is_502_upstream_tls(
    aiohttp_server: Callable[..., Awaitable[object]],
    pki: Pki,
    make_gateway: GatewayFactory,
    tls: str,
) -> None:
    backend, url = await tls_upstream(aiohttp_server, pki, "internal.example")
    gateway = await make_gateway(config(url, tls.replace("CA", str(pki.ca_path))))
    for _ in range(2):
        async with gateway.request("POST", "/api/x", data=b"secret") as response:
            assert response.status == 502
            body = await response.json()
            assert body["error"] == "upstream_tls"
    assert backend.hits == {}  # nothing forwarded


async def test_verify_false_accepts_any_certificate(
    aiohttp_server: Callable[..., Awaitable[object]], pki: Pki, make_gateway: GatewayFactory
) -> None:
    _, url = await tls_upstream(aiohttp_server, pki, "internal.example")
    gateway = await make_gateway(config(url, "{verify: false}"))
    async with gateway.request("GET", "/api/x") as response:
        assert response.status == 200


async def test_gateway_presents_its_client_certificate_to_an_mtls_upstream(
    aiohttp_server: Callable[..., Awaitable[object]],
    pki: Pki,
    make_gateway: GatewayFactory,
    tmp_path: Path,
) -> None:
    (tmp_path / "clients").mkdir()
    clients = Pki(tmp_path / "clients")
    cert, key, _ = clients.leaf("gateway", "gateway.example", common_name="the-gateway")
    _, url = await tls_upstream(aiohttp_server, pki, "127.0.0.1", client_ca=clients)
    gateway = await make_gateway(config(url, f"{{ca: {pki.ca_path}, cert: {cert}, key: {key}}}"))
    async with gateway.request("GET", "/api/tls") as response:
        assert response.status == 200
        assert (await response.json())["peer"]["commonName"] == "the-gateway"


@pytest.mark.parametrize("keepalive", ["0", "4s"], ids=["no-pool", "pool"])
async def test_new_connections_resume_the_tls_session(
    aiohttp_server: Callable[..., Awaitable[object]],
    pki: Pki,
    make_gateway: GatewayFactory,
    keepalive: str,
) -> None:
    _, url = await tls_upstream(aiohttp_server, pki, "127.0.0.1")
    gateway = await make_gateway(config(url, f"{{ca: {pki.ca_path}}}", keepalive))
    pool = gateway.runtime.upstreams["backend"].targets[0]
    reused = []
    for _ in range(3):
        async with gateway.request("GET", "/api/tls") as response:
            assert response.status == 200
            reused.append((await response.json())["reused"])
        # A new connection for the next request even with a pool (as when it is empty).
        while (conn := pool.pooled()) is not None:
            conn.close()
    assert reused == [False, True, True]
