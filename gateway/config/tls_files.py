"""The TLS files a config names: they exist, keys match certificates, CA files hold CAs.

Checked at `gateway check`, at start and at reload, on the raw data so that these problems are
told with the config's other problems in one pass.
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.config.certs import CertProblem
from gateway.config.models import TLSConfig, UpstreamConfig
from gateway.http import tls
from gateway.upstream.tls import client_context


def tls_file_problems(data: dict[str, Any], base: str) -> list[CertProblem]:
    """The problems of the TLS files named in parsed config `data` (relative paths from `base`),
    for each section whose own shape is valid."""
    found: list[CertProblem] = []
    section = _valid(TLSConfig, data.get("tls"))
    if section is not None:
        found += tls.problems(section, base)
    upstreams = data.get("upstreams")
    for name, raw in (upstreams if isinstance(upstreams, dict) else {}).items():
        upstream = _valid(UpstreamConfig, raw)
        if upstream is not None and any(t.startswith("https:") for t in upstream.targets):
            try:
                client_context(upstream.tls, base, ("upstreams", name, "tls"))
            except CertProblem as exc:
                found.append(exc)
    return found


_M = typing.TypeVar("_M", bound=BaseModel)


def _valid(model: type[_M], raw: Any) -> _M | None:
    """`raw` validated, less its invalid keys (reported by the whole config's validation)."""
    for _ in range(2):
        if not isinstance(raw, dict):
            return None
        try:
            return model.model_validate(raw)
        except ValidationError as exc:
            bad = {error["loc"][0] for error in exc.errors() if error["loc"]}
            raw = {key: value for key, value in raw.items() if key not in bad}
    return None
