"""HTTPS on the public listener: certificates, SNI, versions, mTLS, reload, redirect, bad input.

Certificates come from `trustme`, made per test; nothing is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from gateway.process.server import listening_socket, redirect_server, serve
from tests.support.harness import InProcessGateway, start_gateway
from tests.support.pki import Pki, exchange, served_serial
from tests.support.upstream import Upstream

GET = b"GET /api/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def config(pki: Pki, tls: str = "", rest: str = "") -> str:
    return (
        f"""\
tls:
  cert: {pki.folder / "default.pem"}
  key: {pki.folder / "default.key"}
{tls}upstreams:
  backend: {{targets: ["UPSTREAM_URL"]}}
routes:
  - name: api
    match: {{path: /api}}
    upstream: backend
"""
        + rest
    )


Start = Callable[..., Awaitable[InProcessGateway]]


@pytest.fixture
async def start(upstream: Upstream, pki: Pki) -> AsyncIterator[Start]:
    started: list[InProcessGateway] = []

    async def run(text: str) -> InProcessGateway:
        file = pki.folder / "gw.yaml"
        file.write_text(text.replace("UPSTREAM_URL", upstream.url))
        gateway = await start_gateway(text, upstream.url, file=str(file))
        started.append(gateway)
        return gateway

    yield run
    for gateway in started:
        await gateway.close()


def port_of(gateway: InProcessGateway) -> int:
    return urlsplit(gateway.url).port or 0


async def get(url: str, ctx: ssl.SSLContext | None, **kwargs: object) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, ssl=ctx if ctx is not None else False, **kwargs) as response,  # type: ignore[arg-type]
    ):
        body = await response.json(content_type=None)
        return response.status, body


async def test_https_forwards_with_x_forwarded_proto_https_and_alpn(
    pki: Pki, start: Start, upstream: Upstream
) -> None:
    pki.leaf("default", "localhost", "127.0.0.1")
    gateway = await start(config(pki))
    assert gateway.url.startswith("https://")
    status, body = await get(
        gateway.url + "/api/x", pki.client(), headers={"X-Forwarded-Proto": "http"}
    )
    assert status == 200
    assert body["headers"]["X-Forwarded-Proto"] == "https"  # the client's own is replaced
    ctx = pki.client()
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port_of(gateway), ssl=ctx, server_hostname="localhost"
    )
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "http/1.1"
    writer.close()
    [line] = gateway.access_lines()
    assert line["status"] == 200


async def test_sni_exact_names_and_wildcards_choose_their_certificate(
    pki: Pki, start: Start
) -> None:
    _, _, default = pki.leaf("default", "localhost", "127.0.0.1")
    _, _, api = pki.leaf("api", "api.example.com")
    _, _, wild = pki.leaf("wild", "*.wild.example.com")
    _, _, exact = pki.leaf("exact", "special.wild.example.com")
    tls = f"""\
  sni:
    - {{hosts: ["*.wild.example.com"], cert: {pki.folder / "wild.pem"}, key: {pki.folder / "wild.key"}}}
    - {{hosts: [api.example.com, Special.Wild.Example.com], cert: {pki.folder / "api.pem"}, key: {pki.folder / "api.key"}}}
"""
    gateway = await start(config(pki, tls))
    port = port_of(gateway)
    # Certificates are checked by the client only where they fit the name asked for.
    loose = pki.client(check_hostname=False)
    expected = {
        "api.example.com": api,
        "API.example.com": api,
        "x.wild.example.com": wild,
        "special.wild.example.com": api,  # an exact name wins over a wildcard
        "a.b.wild.example.com": default,  # a wildcard covers one label
        "wild.example.com": default,
        "other.example.com": default,
        None: default,  # no SNI at all
    }
    for name, serial in expected.items():
        assert await served_serial(port, loose, name) == serial, name
    assert exact != api
    # Each served certificate verifies for its name.
    assert await served_serial(port, pki.client(), "x.wild.example.com") == wild


async def test_min_version_13_refuses_a_tls12_client(pki: Pki, start: Start) -> None:
    pki.leaf("default", "localhost")
    gateway = await start(config(pki, '  min_version: "1.3"\n'))
    port = port_of(gateway)
    old = pki.client(maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await served_serial(port, old, "localhost")
    assert await served_serial(port, pki.client(), "localhost")


async def test_min_version_12_is_the_default(pki: Pki, start: Start) -> None:
    pki.leaf("default", "localhost")
    gateway = await start(config(pki))
    port = port_of(gateway)
    assert await served_serial(
        port, pki.client(maximum_version=ssl.TLSVersion.TLSv1_2), "localhost"
    )
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await served_serial(port, pki.client(maximum_version=ssl.TLSVersion.TLSv1_1), "localhost")


async def test_mtls_refuses_clients_without_a_certificate_from_client_ca(
    pki: Pki, start: Start, tmp_path: Path
) -> None:
    pki.leaf("default", "localhost")
    pki.leaf("alice", "alice@example.org", common_name="alice", organization_name="Example")
    (tmp_path / "other").mkdir()
    stranger = Pki(tmp_path / "other")
    stranger.leaf("mallory", "mallory@example.org", common_name="mallory")
    gateway = await start(config(pki, f"  client_ca: {pki.ca_path}\n"))
    port = port_of(gateway)
    # TLS 1.3 clients learn of the refusal on their first read: either way, no answer.
    for ctx in (pki.client(), _presenting(pki, stranger, "mallory")):
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            assert await exchange(port, ctx, GET) == b""
    answer = await exchange(port, pki.client(cert="alice"), GET)
    assert answer.startswith(b"HTTP/1.1 200 ")


def _presenting(pki: Pki, other: Pki, name: str) -> ssl.SSLContext:
    ctx = pki.client()
    ctx.load_cert_chain(other.folder / f"{name}.pem", other.folder / f"{name}.key")
    return ctx


async def test_tls_subject_keys_a_rate_limit_and_is_never_taken_from_a_header(
    pki: Pki, start: Start
) -> None:
    pki.leaf("default", "localhost", "127.0.0.1")
    pki.leaf("alice", "alice@example.org", common_name="alice")
    pki.leaf("bob", "bob@example.org", common_name="bob")
    rest = """\
    policies:
      - rate_limit: {algorithm: sliding_window, limit: 1, window: 1m, key: tls.subject}
"""
    gateway = await start(config(pki, f"  client_ca: {pki.ca_path}\n", rest))
    url = gateway.url + "/api/x"
    alice, bob = pki.client(cert="alice"), pki.client(cert="bob")
    assert (await get(url, alice))[0] == 200
    spoof = {"X-TLS-Subject": "CN=bob", "X-Client-Cert": "CN=bob"}
    assert (await get(url, alice, headers=spoof))[0] == 429
    assert (await get(url, bob))[0] == 200
    assert (await get(url, bob))[0] == 429


async def test_reload_serves_new_certificates_to_new_connections(pki: Pki, start: Start) -> None:
    _, _, first = pki.leaf("default", "localhost")
    gateway = await start(config(pki))
    port = port_of(gateway)
    ctx = pki.client()
    # A keep-alive connection made before the reload...
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
    )
    assert await served_serial(port, ctx, "localhost") == first
    _, _, second = pki.leaf("default", "localhost")
    async with gateway.admin("POST", "/-/reload") as response:
        assert response.status == 200, await response.text()
    assert await served_serial(port, ctx, "localhost") == second
    # ... keeps its certificate and goes on serving.
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    from cryptography import x509

    assert x509.load_der_x509_certificate(der).serial_number == first
    writer.write(GET)
    assert (await reader.read(65536)).startswith(b"HTTP/1.1 200 ")
    writer.close()


@pytest.mark.parametrize("damage", ["mismatched key", "missing file", "garbage key"])
async def test_reload_is_refused_on_a_bad_key_and_the_old_certificate_serves(
    pki: Pki, start: Start, damage: str
) -> None:
    _, key, first = pki.leaf("default", "localhost")
    gateway = await start(config(pki))
    port = port_of(gateway)
    if damage == "mismatched key":
        _, other_key, _ = pki.leaf("other", "localhost")
        key.write_bytes(other_key.read_bytes())
        expected = f"tls.key: the key {key} does not match the certificate"
    elif damage == "missing file":
        key.unlink()
        expected = f"tls.key: cannot read {key}: No such file or directory"
    else:
        key.write_text("not a key\n")
        expected = f"tls.key: {key} holds no usable PEM private key"
    async with gateway.admin("POST", "/-/reload") as response:
        assert response.status == 400
        body = await response.json()
    assert any(expected in problem for problem in body["problems"]), body
    assert any(problem.startswith(f"{pki.folder / 'gw.yaml'}:3: ") for problem in body["problems"])
    assert await served_serial(port, pki.client(), "localhost") == first


async def test_reload_cannot_turn_tls_off(pki: Pki, start: Start) -> None:
    pki.leaf("default", "localhost")
    gateway = await start(config(pki))
    text = (pki.folder / "gw.yaml").read_text()
    (pki.folder / "gw.yaml").write_text(text.split("upstreams:", 1)[1].join(["upstreams:", ""]))
    async with gateway.admin("POST", "/-/reload") as response:
        assert response.status == 400
        assert "turning TLS on or off takes a restart" in await response.text()


@pytest.mark.parametrize(
    "data",
    [
        GET,  # plain HTTP to the TLS port
        b"\x16\x03\x01\x00\x05garbage" + bytes(range(256)),  # a broken ClientHello
        bytes(range(256)) * 4,
    ],
    ids=["plain-http", "broken-hello", "garbage"],
)
async def test_plain_http_or_garbage_to_the_tls_port_is_closed_quietly(
    pki: Pki, start: Start, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    pki.leaf("default", "localhost")
    gateway = await start(config(pki))
    port = port_of(gateway)
    with caplog.at_level(logging.DEBUG):
        try:
            answer = await exchange(port, None, data)
        except ConnectionError:
            answer = b""
        assert b"HTTP/1.1" not in answer
        # The listener still serves.
        assert (await exchange(port, pki.client(), GET)).startswith(b"HTTP/1.1 200 ")
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert noisy == []


async def test_redirect_http_answers_308_to_https(pki: Pki, upstream: Upstream) -> None:
    pki.leaf("default", "localhost")
    text = config(pki) + "redirect_http: 127.0.0.1:8080\nlisten: 127.0.0.1:8443\n"
    gateway = await start_gateway(text, upstream.url)
    redirect = redirect_server(gateway.loaded.model)
    assert redirect is not None
    sock = listening_socket("127.0.0.1:0", reuse_port=False)
    await serve(redirect, sock)
    port = sock.getsockname()[1]
    try:
        answer = await exchange(
            port,
            None,
            b"GET /api/x?a=1&b=%20 HTTP/1.1\r\nHost: Example.com:8080\r\nConnection: close\r\n\r\n",
        )
        head = answer.split(b"\r\n\r\n")[0].decode()
        assert head.startswith("HTTP/1.1 308 ")
        assert "Location: https://example.com:8443/api/x?a=1&b=%20" in head.split("\r\n")
        answer = await exchange(
            port, None, b"POST / HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\n\r\nab"
        )
        assert "Location: https://a.example:8443/" in answer.decode()
        answer = await exchange(
            port, None, b"GET / HTTP/1.1\r\nHost: bad/host\r\nConnection: close\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert upstream.hits == {}
    finally:
        await redirect.shutdown(1)
        await gateway.close()
