"""A private Prometheus (Debian's `prometheus`, installed by `make test`) scraping loopback
targets every second, and its HTTP query API."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.ports import free_port
from tests.support.redis_server import start_until


class Prometheus:
    """`prometheus` scraping `target` (host:port) at `path`, with a bearer `token` if given."""

    def __init__(self, target: str, *, path: str = "/metrics", token: str | None = None) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gw-prometheus-"))
        auth = f"    authorization: {{credentials: {token}}}\n" if token else ""
        (self.dir / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: gateway\n"
            f"    metrics_path: {path}\n"
            f"{auth}"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.process: subprocess.Popen[str] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is needed by this test: `make test` installs it")
        self.process = start_until(
            [
                binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            "Server is ready to receive web requests",
            "prometheus",
        )
        return self

    async def api(self, path: str, **params: str) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}/api/v1/{path}", params=params) as response,
        ):
            body = await response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus refused {path} {params}: {body}")
        return body["data"]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        shutil.rmtree(self.dir, ignore_errors=True)
