"""The soak's processes and the helpers around them: a Redis that survives a restart with its
data, the gateways (two `gateway run`, same Redis), and small HTTP reads."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config.units import parse_duration
from loadtest.procs import Child, Children, StartupError, redis_ping, wait_until


def report_dir(parent: Path) -> Path:
    """A fresh `soak-<timestamp>` directory under `parent`."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(100):
        path = parent / (f"soak-{stamp}" if n == 0 else f"soak-{stamp}-{n}")
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"cannot create a report directory under {parent}")


def start_redis(children: Children, port: int, workdir: Path, log: Path) -> Child:
    """redis-server on `port`, persisting to `workdir` (a restart reloads what it had)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise StartupError("redis-server is not installed (`make test` installs it)")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--logfile", ""]
    child = children.spawn("redis-server", argv, log=log)
    wait_until(child, lambda: redis_ping(port), "answering PING", timeout=30)
    return child


def read_json(url: str) -> dict[str, int]:
    """GET `url` as JSON ({} when nothing answered)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.loads(response.read()))
    except (OSError, ValueError):
        return {}


def http_status(url: str, timeout: float = 5.0) -> int | None:
    """The status of GET `url`, None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


@dataclass
class Gateway:
    """One `gateway run` of the soak: its ports, files and current process."""

    name: str
    port: int
    admin_port: int
    env: dict[str, str]
    config: Path
    child: Child | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def timeouts(doc: dict[str, Any]) -> tuple[float, dict[str, float]]:
    """(the upstream's read timeout, per route the longest an answer may take by the config
    and the docs): redis.timeout + the upstream's connect and read timeouts; on a cached route
    twice the upstream's, as a collapsed miss first waits for the leader's upstream request
    (docs/policies/cache.md, "Misses collapse")."""
    [upstream] = doc["upstreams"].values()
    connect = parse_duration(upstream["timeouts"]["connect"])
    read = parse_duration(upstream["timeouts"]["read"])
    longest = parse_duration(doc["redis"]["timeout"]) + connect + read
    bounds = {}
    for route in doc["routes"]:
        cached = any("cache" in policy for policy in route.get("policies", []))
        bounds[route["name"]] = longest + (connect + read if cached else 0.0)
    return read, bounds
