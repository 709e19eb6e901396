"""Measurements for bench.py: wrk (or the asyncio generator) at full speed, the asyncio
generator at a fixed rate, and NGINX as a private reverse proxy to compare with."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import ssl
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadtest import loadgen
from loadtest.procs import Child, Children, http_ok, wait_until

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_PERCENTILE = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(frozen=True)
class Sample:
    """One measurement: throughput, latency percentiles in ms, and what went wrong."""

    rps: float
    p50: float
    p99: float
    bad_status: int = 0
    errors: int = 0
    requests: int = 0
    cpu_us: float = float("nan")
    """CPU time the serving processes spent per answered request, in microseconds: unlike
    throughput, barely moved by neighbours competing for the cores."""


def median(samples: Sequence[Sample]) -> Sample:
    """Each field's median over the rounds (the fields may come from different rounds)."""
    return Sample(
        rps=statistics.median(s.rps for s in samples),
        p50=statistics.median(s.p50 for s in samples),
        p99=statistics.median(s.p99 for s in samples),
        bad_status=sum(s.bad_status for s in samples),
        errors=sum(s.errors for s in samples),
        requests=sum(s.requests for s in samples),
        cpu_us=statistics.median(s.cpu_us for s in samples),
    )


def spread(samples: Sequence[Sample]) -> float:
    """Half the range of the rounds' throughput over its median: how noisy the row was."""
    values = [s.rps for s in samples]
    middle = statistics.median(values)
    return (max(values) - min(values)) / 2 / middle if middle else float("nan")


def process_tree(pids: Sequence[int]) -> list[int]:
    """The given processes and all their descendants (gateway workers, NGINX workers)."""
    out: list[int] = []
    todo = list(pids)
    while todo:
        pid = todo.pop()
        out.append(pid)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as handle:
                    todo.extend(int(child) for child in handle.read().split())
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by `pids` (Linux /proc; 0 where unreadable)."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{pid}/stat") as handle:
                # Fields after the ")" that ends the command name: utime and stime are 12, 13.
                fields = handle.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk_version() -> str | None:
    """wrk's version line, or None when wrk is not installed."""
    binary = shutil.which("wrk")
    if binary is None:
        return None
    # `wrk --version` prints its banner (and a usage text) and exits 1.
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr or "wrk").splitlines()[0]
    return first.split(" Copyright")[0].strip()


def parse_wrk(text: str) -> Sample:
    """Requests/s, p50, p99, non-2xx and socket errors from `wrk --latency` output."""
    rps = _RPS.search(text)
    if rps is None:
        raise ValueError(f"no Requests/sec in wrk output:\n{text}")
    latency = {int(p): float(v) * _UNITS[unit] for p, v, unit in _PERCENTILE.findall(text)}
    non_2xx = _NON_2XX.search(text)
    sockets = _SOCKET.search(text)
    requests = re.search(r"(\d+) requests in", text)
    return Sample(
        rps=float(rps[1]),
        p50=latency.get(50, float("nan")),
        p99=latency.get(99, float("nan")),
        bad_status=int(non_2xx[1]) if non_2xx else 0,
        errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
        requests=int(requests[1]) if requests else 0,
    )


def full_speed(
    url: str,
    headers: Mapping[str, str],
    *,
    duration: float,
    connections: int,
    threads: int,
    use_wrk: bool,
    context: ssl.SSLContext | None = None,
) -> Sample:
    """Closed loop at full speed: wrk when `use_wrk`, else the asyncio generator (which checks
    an https server's certificate against `context`; wrk checks none), keep-alive both."""
    if use_wrk:
        argv = ["wrk", f"-t{threads}", f"-c{max(connections, threads)}", f"-d{duration:g}s"]
        argv += ["--latency", "--timeout", "5s"]
        for name, value in headers.items():
            argv += ["-H", f"{name}: {value}"]
        out = subprocess.run(
            [*argv, url], capture_output=True, text=True, timeout=duration + 60, check=False
        )
        if out.returncode != 0:
            raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
        return parse_wrk(out.stdout)
    target = loadgen.Target(url, headers, context)
    return _sample(loadgen.run(loadgen.closed_loop(target, connections, duration)))


def at_rate(
    url: str,
    headers: Mapping[str, str],
    *,
    rate: float,
    duration: float,
    context: ssl.SSLContext | None = None,
) -> Sample:
    """Open loop at `rate` requests/s (the asyncio generator; wrk has no fixed rate)."""
    target = loadgen.Target(url, headers, context)
    return _sample(loadgen.run(loadgen.fixed_rate(target, rate, duration)))


def _sample(result: loadgen.Result) -> Sample:
    return Sample(
        rps=result.rps,
        p50=result.percentile(50),
        p99=result.percentile(99),
        bad_status=result.bad_status,
        errors=result.errors,
        requests=result.requests,
    )


_NGINX_CONF = """\
{master}
daemon off;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log {access_log};
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 1024;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


def start_nginx(
    children: Children, workdir: Path, *, port: int, upstream_port: int, workers: int, log: bool
) -> Child:
    """NGINX as a reverse proxy with upstream keep-alive, as a private foreground process on
    `port`; everything it writes stays in `workdir` (no root paths). It keeps up to 1024 idle
    upstream connections, like the gateway's default pool, so the concurrency sweep compares
    like with like."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(
        _NGINX_CONF.format(
            # One process serves when one worker is asked for: nothing to fork, nothing to
            # switch users for. More workers need the master process.
            master="master_process off;" if workers == 1 else "",
            workers=workers,
            dir=workdir,
            access_log=f"{workdir}/access.log combined buffer=64k flush=1s" if log else "off",
            upstream_port=upstream_port,
            port=port,
        )
    )
    argv = [binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
    child = children.spawn("nginx", argv, log=workdir / "stderr.log", group=True)
    wait_until(child, lambda: http_ok(f"http://127.0.0.1:{port}/fast"), "serving")
    return child


def nginx_installed() -> bool:
    """True when an nginx binary is on PATH (or at Debian's /usr/sbin/nginx)."""
    return shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()
