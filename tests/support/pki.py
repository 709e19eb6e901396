"""Certificates made by the tests (trustme), never committed: a CA, leaves, client certificates."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import trustme
from cryptography import x509


class Pki:
    """A CA whose files live in `folder`; `leaf()` writes a certificate and key beside it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca = trustme.CA()
        self.ca_path = folder / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))

    def leaf(self, name: str, *hosts: str, **kwargs: str) -> tuple[Path, Path, int]:
        """Issue a certificate for `hosts` into `<name>.pem` / `<name>.key` (overwriting);
        returns the paths and the leaf's serial number."""
        cert = self.ca.issue_cert(*hosts, **kwargs)  # type: ignore[arg-type]
        cert_path, key_path = self.folder / f"{name}.pem", self.folder / f"{name}.key"
        for index, blob in enumerate(cert.cert_chain_pems):
            blob.write_to_path(str(cert_path), append=index > 0)
        cert.private_key_pem.write_to_path(str(key_path))
        return cert_path, key_path, serial(cert.cert_chain_pems[0].bytes())

    def client(self, *, cert: str | None = None, **kwargs: object) -> ssl.SSLContext:
        """A client context trusting this CA; with `cert`, presenting `<cert>.pem/.key`."""
        ctx = ssl.create_default_context(cafile=str(self.ca_path))
        for key, value in kwargs.items():
            setattr(ctx, key, value)
        if cert is not None:
            ctx.load_cert_chain(self.folder / f"{cert}.pem", self.folder / f"{cert}.key")
        return ctx


def serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


async def served_serial(port: int, ctx: ssl.SSLContext, name: str | None) -> int:
    """The serial of the certificate a new connection to `port` gets when asking for `name`."""
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=name or ""
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        writer.close()


async def exchange(
    port: int, ctx: ssl.SSLContext | None, data: bytes, name: str = "localhost"
) -> bytes:
    """Send `data` on a new connection and read until the server closes it (or 5s)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=name if ctx else None
    )
    try:
        writer.write(data)
        out = b""
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                out += chunk
        return out
    finally:
        writer.close()
