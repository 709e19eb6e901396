"""Reading TLS files into an `ssl.SSLContext`, with problems an operator can act on.

Each failure is a `CertProblem` naming the config key (`tls.sni[0].key`) and the file, so the
same words reach `gateway check`, the start and a refused reload. Relative paths are relative
to the config file's folder.
"""

from __future__ import annotations

import os
import ssl

from gateway.config.source import Loc


class CertProblem(Exception):
    """A TLS file that cannot serve: `loc` is the config key that names it."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def resolve(base: str, path: str) -> str:
    """`path` as written in the config file in folder `base`."""
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.join(base, path)


def _readable(path: str, loc: Loc) -> None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise CertProblem(loc, f"cannot read {path}: {exc.strerror or exc}") from None


def _no_passphrase() -> bytes:
    # Without a callable, OpenSSL would prompt on the terminal for an encrypted key.
    raise ValueError("encrypted key")


def load_chain(ctx: ssl.SSLContext, cert: str, key: str | None, loc: Loc) -> None:
    """Load a certificate chain (leaf first) and its key; `loc` is the mapping holding them."""
    _readable(cert, (*loc, "cert"))
    if key is not None:
        _readable(key, (*loc, "key"))
    try:
        ctx.load_cert_chain(cert, key, password=_no_passphrase)
    except ValueError:
        raise CertProblem(
            (*loc, "key"), f"the key {key or cert} is encrypted (give an unencrypted key)"
        ) from None
    except ssl.SSLError as exc:
        reason = exc.reason or ""
        if reason == "KEY_VALUES_MISMATCH":
            raise CertProblem(
                (*loc, "key"), f"the key {key} does not match the certificate {cert}"
            ) from None
        if key is None or not _has_pem(cert, "CERTIFICATE"):
            raise CertProblem(
                (*loc, "cert"), f"{cert} holds no usable PEM certificate ({reason or exc})"
            ) from None
        raise CertProblem(
            (*loc, "key"), f"{key} holds no usable PEM private key ({reason or exc})"
        ) from None


def load_ca(ctx: ssl.SSLContext, path: str, loc: Loc) -> None:
    """Trust the CA certificate(s) in `path`; every certificate there must be a CA."""
    _readable(path, loc)
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise CertProblem(
            loc, f"{path} holds no usable PEM certificate ({exc.reason or exc})"
        ) from None
    stats = probe.cert_store_stats()
    if stats["x509_ca"] == 0 or stats["x509_ca"] < stats["x509"]:
        raise CertProblem(loc, f"{path} holds a certificate that is not a CA")
    ctx.load_verify_locations(cafile=path)


def _has_pem(path: str, kind: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return f"-----BEGIN {kind}".encode() in handle.read(1 << 20)
    except OSError:
        return False
