"""The bench's asyncio load generator against an https server (the TLS row's fixed rate)."""

from __future__ import annotations

import asyncio
import ssl

import trustme

from loadtest import loadgen


async def test_https_target_verifies_the_server_and_keeps_connections_alive() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    async with server:
        target = loadgen.Target(f"https://127.0.0.1:{port}/fast", {}, client_context)
        result = await loadgen.closed_loop(target, 2, 0.5)
        assert result.errors == 0
        assert result.bad_status == 0
        assert len(result.latencies) > 20
        assert connections == 2  # one handshake per client, then keep-alive

        # A certificate the client does not trust: every connection fails, nothing is counted.
        untrusting = loadgen.Target(f"https://127.0.0.1:{port}/fast", {})
        refused = await loadgen.closed_loop(untrusting, 1, 0.2)
        assert refused.errors > 0
        assert not refused.latencies
