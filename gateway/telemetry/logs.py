"""Logging: one access line per request on stdout, and the process log on stderr.

Access lines are batched per event-loop turn and written in pieces of at most PIPE_BUF bytes
that end on a line break, so lines of several workers sharing one stdout never interleave.
Only fields listed here are written: never cookies, `Authorization`, session ids or query
strings (they carry tokens).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, TextIO

_PIPE_BUF = 4096


class AccessLog:
    """Writes one line per answered request, JSON (default) or text."""

    def __init__(self, fd: int = 1, text: bool = False) -> None:
        self._fd = fd
        self._text = text
        self._pending: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def request(
        self,
        request_id: str,
        route: str | None,
        method: str,
        path: str,
        status: int,
        sent: int,
        seconds: float,
        upstream_seconds: float | None,
        client_ip: str | None,
        extra: dict[str, Any] | None,
    ) -> None:
        """Record one answered request (fields as documented in SPEC § Logs)."""
        if self._text:
            upstream_text = "-" if upstream_seconds is None else f"{upstream_seconds * 1000:.2f}ms"
            line = (
                f"{timestamp()} {request_id} {route or '-'} {method} {path} {status} {sent}B "
                f"{seconds * 1000:.2f}ms upstream={upstream_text} client={client_ip}"
            )
            if extra:
                line += "".join(f" {key}={value}" for key, value in extra.items())
        else:
            # Formatted by hand (strings escaped by the json module's C encoder): a json.dumps
            # of a dict costs several times more, on every request.
            # Only the path needs escaping: request ids, route names, methods and IPs are
            # validated tokens by the time they get here.
            route_json = "null" if route is None else '"' + route + '"'
            upstream = "null" if upstream_seconds is None else f"{upstream_seconds * 1000:.2f}"
            ip_json = "null" if client_ip is None else '"' + client_ip + '"'
            line = (
                f'{{"ts":"{timestamp()}","request_id":"{request_id}","route":{route_json},'
                f'"method":"{method}","path":{_quote(path)},"status":{status},"bytes":{sent},'
                f'"duration_ms":{seconds * 1000:.2f},"upstream_ms":{upstream},"client_ip":{ip_json}'
            )
            if extra:
                for key, value in extra.items():
                    # Policies' decisions are short strings; json.dumps is for anything else.
                    text = _quote(value) if type(value) is str else json.dumps(value, default=str)
                    line += f",{_quote(key)}:{text}"
            line += "}"
        self._pending.append(line)
        if len(self._pending) == 1:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        lines, self._pending = self._pending, []
        piece: list[bytes] = []
        size = 0
        for line in lines:
            data = line.encode("utf-8", "replace") + b"\n"
            if size + len(data) > _PIPE_BUF and piece:
                self._emit(b"".join(piece))
                piece, size = [], 0
            piece.append(data)
            size += len(data)
        if piece:
            self._emit(b"".join(piece))

    def _emit(self, data: bytes) -> None:
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
        except OSError:
            pass  # a closed stdout must not take requests down with it


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), default=str)


def setup_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Process log on stderr (stdout is for access lines)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "text":
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
        )
    else:
        handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp logs a traceback for every client that goes away mid-response; ours are enough.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)


_second: list[Any] = [-1, ""]  # the last whole second and its formatted prefix
_milli: list[Any] = [-1, ""]  # the last millisecond and its timestamp


def timestamp() -> str:
    """UTC time with milliseconds; formatted once per millisecond (requests share it under
    load), the seconds part once per second."""
    now_ms = int(time.time() * 1000)
    if now_ms != _milli[0]:
        second = now_ms // 1000
        if second != _second[0]:
            _second[0], _second[1] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _milli[0], _milli[1] = now_ms, f"{_second[1]}.{now_ms % 1000:03d}Z"
    return _milli[1]  # type: ignore[no-any-return]
