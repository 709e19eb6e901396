"""TLS as operators meet it: `gateway check`, a start refused, workers, SIGHUP and admin reload."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.harness import GatewayProcess
from tests.support.pki import Pki, served_serial
from tests.support.ports import free_port
from tests.support.upstream import Upstream

ROOT = Path(__file__).resolve().parents[2]


def gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, cwd=ROOT
    )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    pki = Pki(tmp_path)
    pki.leaf("default", "localhost", "127.0.0.1")
    pki.leaf("api", "api.example.com")
    return pki


def write(pki: Pki, tls: str, upstream: str = "", listen: str = "127.0.0.1:8443") -> Path:
    config = pki.folder / "gw.yaml"
    config.write_text(
        f"""\
listen: {listen}
tls:
{tls}upstreams:
  backend: {{targets: ["http://127.0.0.1:9000"]}}
{upstream}routes:
  - {{name: api, match: {{path: /api}}, upstream: backend}}
"""
    )
    return config


def test_check_accepts_good_files_relative_to_the_config(pki: Pki) -> None:
    config = write(
        pki,
        "  cert: default.pem\n  key: default.key\n  client_ca: ca.pem\n"
        "  sni: [{hosts: [api.example.com], cert: api.pem, key: api.key}]\n",
        "  secure:\n    targets: [https://127.0.0.1:9443]\n"
        "    tls: {ca: ca.pem, server_name: internal.example, cert: api.pem, key: api.key}\n",
    )
    result = gateway("check", "-c", str(config))
    assert result.returncode == 0, result.stderr


def test_check_names_file_line_key_path_and_file_of_each_problem(pki: Pki) -> None:
    folder = pki.folder
    (folder / "notes.txt").write_text("hello\n")
    config = write(
        pki,
        f"  cert: {folder}/default.pem\n"
        f"  key: {folder}/api.key\n"
        "  min_version: 1.1\n"
        f"  client_ca: {folder}/default.pem\n"
        f"  sni: [{{hosts: [api.example.com], cert: {folder}/missing.pem, key: {folder}/api.key}}]\n",
        f"  secure:\n    targets: [https://127.0.0.1:9443]\n    tls: {{ca: {folder}/notes.txt}}\n",
    )
    result = gateway("check", "-c", str(config))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines == [
        f"{config}:4: tls.key: the key {folder}/api.key does not match the certificate {folder}/default.pem",
        f'{config}:5: tls.min_version: unsupported TLS version 1.1 (use "1.2" or "1.3")',
        f"{config}:6: tls.client_ca: {folder}/default.pem holds a certificate that is not a CA",
        f"{config}:7: tls.sni[0].cert: cannot read {folder}/missing.pem: No such file or directory",
        f"{config}:12: upstreams.secure.tls.ca: {folder}/notes.txt holds no usable PEM certificate (NO_CERTIFICATE_OR_CRL_FOUND)",
        f"{config}: 5 problems; nothing started",
    ]


def test_redirect_http_needs_tls(tmp_path: Path) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(
        "redirect_http: 127.0.0.1:8080\n"
        "upstreams: {backend: {targets: ['http://127.0.0.1:9000']}}\n"
        "routes: [{name: api, upstream: backend}]\n"
    )
    result = gateway("check", "-c", str(config))
    assert result.returncode == 2
    assert f"{config}:1: redirect_http: redirects to HTTPS, so it needs a tls section" in (
        result.stderr
    )


def test_run_refuses_to_start_with_a_key_that_does_not_match(pki: Pki) -> None:
    config = write(pki, "  cert: default.pem\n  key: api.key\n", listen=f"127.0.0.1:{free_port()}")
    result = gateway("run", "-c", str(config))
    assert result.returncode == 2
    assert "tls.key: the key" in result.stderr
    assert "nothing started" in result.stderr


async def test_workers_serve_tls_and_reload_certificates_on_sighup_and_admin(
    pki: Pki, upstream: Upstream, redis_url: str
) -> None:
    port, admin, plain = free_port(), free_port(), free_port()
    config = pki.folder / "gw.yaml"
    config.write_text(
        f"""\
listen: 127.0.0.1:{port}
redirect_http: 127.0.0.1:{plain}
workers: 2
redis: {{url: "{redis_url}"}}
admin: {{listen: 127.0.0.1:{admin}}}
tls: {{cert: default.pem, key: default.key}}
upstreams:
  backend: {{targets: ["{upstream.url}"]}}
routes:
  - {{name: api, match: {{path: /api}}, upstream: backend}}
"""
    )
    process = await GatewayProcess(str(config)).start()
    try:
        assert len(process.worker_pids()) == 2
        ctx = pki.client()
        connector = aiohttp.TCPConnector(force_close=True, ssl=ctx)  # spread over workers
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(12):
                async with session.get(f"https://127.0.0.1:{port}/api/x") as response:
                    assert response.status == 200
                    body = await response.json()
                    assert body["headers"]["X-Forwarded-Proto"] == "https"
            async with session.get(
                f"http://127.0.0.1:{plain}/api/y", allow_redirects=False
            ) as response:
                assert response.status == 308
                assert response.headers["Location"] == f"https://127.0.0.1:{port}/api/y"

        # SIGHUP: every worker serves the new certificate to new connections.
        _, _, second = pki.leaf("default", "localhost", "127.0.0.1")
        mark = len(process.stderr_lines)
        assert process.process is not None
        os.kill(process.process.pid, signal.SIGHUP)
        await process.wait_for("config reloaded in 2 worker(s)", after=mark)
        serials = {await served_serial(port, ctx, "localhost") for _ in range(12)}
        assert serials == {second}

        # A key that does not match: refused with the reason; the certificate serves on.
        (pki.folder / "default.key").write_bytes((pki.folder / "api.key").read_bytes())
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{admin}/-/reload") as response,
        ):
            assert response.status == 400
            text = await response.text()
        assert "tls.key: the key" in text
        assert "does not match the certificate" in text
        serials = {await served_serial(port, ctx, "localhost") for _ in range(6)}
        assert serials == {second}
    finally:
        assert await process.stop() == 0


async def test_a_taken_redirect_http_port_stops_the_start_with_nothing_left(
    pki: Pki, tmp_path: Path
) -> None:
    port, admin, plain = free_port(), free_port(), free_port()
    config = write(pki, "  cert: default.pem\n  key: default.key\n", listen=f"127.0.0.1:{port}")
    text = config.read_text()
    config.write_text(
        f"redirect_http: 127.0.0.1:{plain}\nadmin: {{listen: 127.0.0.1:{admin}}}\n{text}"
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", plain))
        taken.listen()
        process = GatewayProcess(str(config), env={"TMPDIR": str(run_dir)})
        await process.start(wait=False)
        assert process.process is not None
        try:
            code = await process.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.process.pid, signal.SIGKILL)
    assert code == 1
    assert f"cannot serve 127.0.0.1:{plain} (redirect_http): " in process.stderr
    assert os.listdir(run_dir) == []  # no worker was started
