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
from typing import Any, TextIO

_PIPE_BUF = 4096


class AccessLog:
    """Writes one line per answered request, JSON (default) or text."""

    def __init__(self, fd: int = 1, text: bool = False) -> None:
        self._fd = fd
        self._text = text
        self._pending: list[str] = []
        self._scheduled = False

    def write(self, record: dict[str, Any]) -> None:
        if self._text:
            line = " ".join(f"{key}={value}" for key, value in record.items() if value is not None)
        else:
            line = json.dumps(record, separators=(",", ":"), default=str)
        self._pending.append(line)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
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


def timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
