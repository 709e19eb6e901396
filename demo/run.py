"""`make demo`: the demo upstream and the gateway with config.example.yaml, until Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config.example.yaml"
GATEWAY = "http://127.0.0.1:8080"
ADMIN = "http://127.0.0.1:9901"


def main() -> int:
    env = dict(os.environ)
    upstream = subprocess.Popen(
        [sys.executable, "-m", "demo.upstream", "--port", "9000"], cwd=ROOT, env=env
    )
    gateway = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(CONFIG), "--log-format", "text"],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
    )
    assert gateway.stderr is not None
    for line in gateway.stderr:  # relay the gateway's log until it says it is serving
        sys.stderr.write(line)
        if "worker(s); admin on" in line:
            break
    else:
        upstream.terminate()
        print("the gateway did not start (see above)", file=sys.stderr)
        return 1
    threading.Thread(target=_relay, args=(gateway.stderr,), daemon=True).start()
    session = subprocess.run(
        [sys.executable, "-m", "gateway", "session", "create", "-c", str(CONFIG),
         "--field", "user_id=42", "--field", "role=admin", "--ttl", "1h"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    sid = session.stdout.strip() or "<run: gateway session create --field user_id=42>"
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
    try:
        gateway.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for process in (gateway, upstream):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in (gateway, upstream):
            try:
                process.wait(timeout=35)
            except subprocess.TimeoutExpired:
                process.kill()
    return 0


def _relay(stream: object) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sys.stderr.write(line)


if __name__ == "__main__":
    sys.exit(main())
