"""`make demo`: the demo upstream and the gateway with config.example.yaml, until Ctrl-C.

Ports: the gateway on `LISTEN` (127.0.0.1:8080), its admin listener on `ADMIN_LISTEN`
(127.0.0.1:9901), the demo upstream on `UPSTREAM` (http://127.0.0.1:9000): the variables that
config.example.yaml reads, e.g. `make demo LISTEN=127.0.0.1:8180`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, NamedTuple
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config.example.yaml"


class Port(NamedTuple):
    what: str
    host: str
    port: int
    variable: str  # the environment variable that chooses it
    spelling: str  # how that variable's value is written

    def choice(self, port: int) -> str:
        return f"{self.variable}={self.spelling.format(host=self.host, port=port)}"


def _ports(env: dict[str, str]) -> tuple[Port, Port, Port]:
    upstream = urlsplit(env.get("UPSTREAM") or "http://127.0.0.1:9000")
    listen = (env.get("LISTEN") or "127.0.0.1:8080").rpartition(":")
    admin = (env.get("ADMIN_LISTEN") or "127.0.0.1:9901").rpartition(":")
    return (
        Port(
            "demo upstream",
            upstream.hostname or "127.0.0.1",
            upstream.port or 80,
            "UPSTREAM",
            "http://{host}:{port}",
        ),
        Port("gateway", listen[0].strip("[]"), int(listen[2]), "LISTEN", "{host}:{port}"),
        Port("admin", admin[0].strip("[]"), int(admin[2]), "ADMIN_LISTEN", "{host}:{port}"),
    )


def _busy(port: Port) -> bool:
    family = socket.AF_INET6 if ":" in port.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((port.host, port.port))
        except OSError:
            return True
    return False


def busy_message(busy: list[Port]) -> str:
    """One line: which ports are taken, how to find and stop the holder, how to choose others."""
    names = ", ".join(f"{p.port} ({p.what})" for p in busy)
    ports = "port {} is" if len(busy) == 1 else "ports {} are"
    others = " ".join(p.choice(p.port + 100) for p in busy)
    return (
        f"make demo: {ports.format(names)} already in use (another `make demo` still running?): "
        f"stop it with Ctrl-C (`ss -ltnp 'sport = :{busy[0].port}'` shows what holds it), "
        f"or choose other ports: make demo {others}"
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # `kill` stops the demo as cleanly as Ctrl-C


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    env = dict(os.environ)
    upstream, listen, admin = ports = _ports(env)
    busy = [port for port in ports if _busy(port)]
    if busy:
        print(busy_message(busy), file=sys.stderr)
        return 1
    children: list[subprocess.Popen[str]] = []
    try:
        children.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "demo.upstream",
                    "--host",
                    upstream.host,
                    "--port",
                    str(upstream.port),
                ],
                cwd=ROOT,
                env=env,
                text=True,
            )
        )
        if not _listening(children[0], upstream):
            return 1  # it said why
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(CONFIG), "--log-format", "text"],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        children.append(gateway)
        if not _serving(gateway):
            print("the gateway did not start (see above)", file=sys.stderr)
            return 1
        _announce(_demo_session(env), _url(listen), _url(admin), _url(upstream))
        gateway.wait()
    except KeyboardInterrupt:
        pass
    finally:
        _stop(children)
    return 0


def _url(port: Port) -> str:
    host = "127.0.0.1" if port.host in ("0.0.0.0", "") else port.host
    return f"http://[{host}]:{port.port}" if ":" in host else f"http://{host}:{port.port}"


def _listening(process: subprocess.Popen[str], port: Port, timeout: float = 15) -> bool:
    """Wait until the demo upstream accepts connections, or has exited."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection((port.host, port.port), timeout=0.5).close()
        except OSError:
            time.sleep(0.05)  # nothing to be told by: a started server announces nothing
        else:
            return True
    return False


def _serving(gateway: subprocess.Popen[str]) -> bool:
    """Relay the gateway's log until it says it serves; then keep relaying in the background."""
    stream = gateway.stderr
    if stream is None:
        return False
    for line in stream:
        sys.stderr.write(line)
        if "worker(s); admin on" in line:
            threading.Thread(target=_relay, args=(stream,), daemon=True).start()
            return True
    return False


def _demo_session(env: dict[str, str]) -> str:
    created = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "session",
            "create",
            "-c",
            str(CONFIG),
            "--field",
            "user_id=42",
            "--field",
            "role=admin",
            "--ttl",
            "1h",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    return created.stdout.strip() or "<run: gateway session create --field user_id=42>"


def _announce(sid: str, gateway: str, admin: str, upstream: str) -> None:
    print(
        f"""
Gateway on {gateway} (admin {admin}), demo upstream on {upstream}.
Try:
  curl -i {gateway}/api/catalog                   # X-Cache: MISS, then HIT with Age
  curl -i {gateway}/api/account                   # 401: no session
  curl -i -H 'Authorization: Bearer {sid}' {gateway}/api/account
  curl -i --cookie 'sid={sid}' -H 'X-User-Id: 1' {gateway}/api/account   # spoof removed
  curl -i -X POST -d hello {gateway}/anything     # echo, with RateLimit headers
  curl -s {admin}/metrics | grep gateway_requests_total
  curl -s {admin}/-/routes
  curl -s -X POST {admin}/-/cache/purge -d '{{"route": "catalog"}}'
Access log lines follow. Ctrl-C stops both.
""",
        flush=True,
    )


def _stop(children: list[subprocess.Popen[str]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGINT)
    for child in children:
        try:
            child.wait(timeout=35)
        except subprocess.TimeoutExpired:
            child.kill()


def _relay(stream: IO[str]) -> None:
    for line in stream:
        sys.stderr.write(line)


if __name__ == "__main__":
    sys.exit(main())
