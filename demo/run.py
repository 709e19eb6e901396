"""`make demo`: the demo upstream and the gateway with config.example.yaml, until Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config.example.yaml"
GATEWAY = "http://127.0.0.1:8080"
ADMIN = "http://127.0.0.1:9901"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # `kill` stops the demo as cleanly as Ctrl-C


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    env = dict(os.environ)
    children: list[subprocess.Popen[str]] = []
    try:
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "demo.upstream", "--port", "9000"],
                cwd=ROOT,
                env=env,
                text=True,
            )
        )
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
        _announce(_demo_session(env))
        gateway.wait()
    except KeyboardInterrupt:
        pass
    finally:
        _stop(children)
    return 0


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


def _announce(sid: str) -> None:
    print(
        f"""
Gateway on {GATEWAY} (admin {ADMIN}), demo upstream on http://127.0.0.1:9000.
Try:
  curl -i {GATEWAY}/api/catalog                   # X-Cache: MISS, then HIT with Age
  curl -i {GATEWAY}/api/account                   # 401: no session
  curl -i -H 'Authorization: Bearer {sid}' {GATEWAY}/api/account
  curl -i --cookie 'sid={sid}' -H 'X-User-Id: 1' {GATEWAY}/api/account   # spoof removed
  curl -i -X POST -d hello {GATEWAY}/anything     # echo, with RateLimit headers
  curl -s {ADMIN}/metrics | grep gateway_requests_total
  curl -s {ADMIN}/-/routes
  curl -s -X POST {ADMIN}/-/cache/purge -d '{{"route": "catalog"}}'
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
