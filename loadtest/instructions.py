"""`make instructions`: CPU instructions per request on the gateway's own hot path.

    .venv/bin/python -m loadtest.instructions [--count 1000] [--cases listener,not_found,cache_hit]

Throughput on a shared machine moves by tens of percent between minutes; an instruction count
does not (the same code counts the same to a fraction of a percent), so it is the measure to
optimise the Python side with. Each case runs the real listener, app, chain and cache policy of
one worker in this process, on connections whose client side is a stand-in transport that
keeps nothing (no client sockets: kernel time is left out, it is what the bench measures). The
store is a private redis-server and the cache is filled from loadtest/upstream.py first; only
near-cache hits are then counted. Each case runs twice under valgrind's callgrind (N and 5N
requests, 20 connections a loop turn); the difference divided by 4N is one request's cost,
start-up excluded.

Cases: `listener` (parsing, the connection's task, one fixed answer: the floor of any request),
`not_found` (routing, a JSON 404, access log, metrics), `cache_hit` (a near-cache hit).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `loadtest.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtest.procs import Children, scratch_dir, start_redis, start_upstream

HERE = Path(__file__).resolve().parent
CASES = {"listener": "/cached/cacheable", "not_found": "/nope", "cache_hit": "/cached/cacheable"}
_CONNECTIONS = 20
_FIXED = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class _Transport:
    """The client side of a connection: takes what the gateway writes and drops it."""

    def write(self, data: bytes) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def drive(case: str, count: int) -> None:
    """Serve `count` requests of `case` in process (the part that runs under callgrind)."""
    from gateway.app import Gateway
    from gateway.config.loader import parse_config
    from gateway.http.incoming import Incoming
    from gateway.http.listener import Listener
    from gateway.registry import Registry
    from gateway.runtime import Runtime
    from gateway.store.factory import open_store
    from gateway.telemetry.logs import AccessLog, setup_logging
    from gateway.telemetry.metrics import Metrics

    setup_logging("warning")
    registry = Registry.discover()
    text = (HERE / "bench.yaml").read_text()
    loaded = parse_config(text, "bench.yaml", registry=registry)
    metrics = Metrics()
    store = open_store(loaded.model.redis, metrics.store_call, metrics.store_breaker_changed)
    runtime = Runtime(loaded, store, metrics)
    await runtime.start()
    gateway = Gateway(runtime, AccessLog(fd=os.open(os.devnull, os.O_WRONLY)))

    async def fixed(incoming: Incoming) -> None:
        incoming.conn.write(_FIXED)

    listener = Listener(fixed if case == "listener" else gateway.handle, loaded.model.client)
    connections = []
    for _ in range(_CONNECTIONS):
        connection = listener()
        connection.connection_made(_Transport())  # type: ignore[arg-type]
        connections.append(connection)
    request = (
        f"GET {CASES[case]} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
    ).encode()
    for _ in range(3):  # fills the cache; the entry reaches the near cache on the next hits
        connections[0].data_received(request)
        await asyncio.sleep(0.1)
    for _ in range(count // _CONNECTIONS):
        for connection in connections:
            connection.data_received(request)
        await asyncio.sleep(0)  # every connection's task answers in this turn
    await runtime.stop()
    await store.close()


def _count(case: str, requests: int, env: dict[str, str]) -> int:
    argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    argv += ["-m", "loadtest.instructions", "--drive", case, "--count", str(requests)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    for line in done.stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1])
    raise RuntimeError(f"callgrind gave no count for {case}:\n{done.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="loadtest.instructions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--count", type=int, default=1000, help="N (the runs serve N and 5N)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"of {','.join(CASES)}")
    parser.add_argument("--drive", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        import uvloop

        uvloop.run(drive(args.drive, args.count))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    cases = [case for case in args.cases.split(",") if case]
    if unknown := sorted(set(cases) - set(CASES)):
        parser.error(f"unknown cases {unknown}")
    with scratch_dir("gw-instructions-") as work, Children() as children:
        redis_url = start_redis(children, work, work / "redis.log")
        port, _ = start_upstream(children, work / "upstream.log")
        env = dict(os.environ, REDIS_URL=redis_url, UPSTREAM_PORT=str(port), GW_ACCESS_LOG="true")
        print(f"instructions per request (callgrind; {args.count} and {5 * args.count} requests)")
        for case in cases:
            low, high = _count(case, args.count, env), _count(case, 5 * args.count, env)
            print(f"  {case:10s} {round((high - low) / (4 * args.count)):>8,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
