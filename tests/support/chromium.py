"""Headless Chromium (Debian's `chromium`, installed by `make test`) loading a page the way an
operator's browser would: scripts run for a few seconds of virtual time, then the DOM is read.

Every request the browser makes is in its NetLog, so a test can check that a page asked no
other host for anything.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

QUIET = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    # The browser's own calls home (none reach anything: there is no network but loopback).
    "--disable-features=AutofillServerCommunication,NetworkTimeServiceQuerying,"
    "OptimizationHints,MediaRouter,Translate",
    "--no-pings",
)


def binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RuntimeError("chromium is needed by this test: `make test` installs it (apt-get)")
    return found


@dataclass
class Rendered:
    dom: str
    requests: list[tuple[str, str]]
    """`(url, initiator)` of every request the page made: the page itself (initiator "") and
    what its markup and scripts asked for. The browser's own background calls (update checks,
    time queries: no initiator origin, no frame) are not the page's and are left out."""

    def hosts(self) -> set[str]:
        return {urlsplit(url).netloc for url, _ in self.requests}


async def render(
    url: str, *, budget_ms: int = 5000, screenshot: Path | None = None, size: str = "1360,900"
) -> Rendered:
    """Load `url` in a fresh profile, let its scripts run for `budget_ms` of virtual time."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        netlog = Path(profile) / "netlog.json"
        argv = [
            binary(),
            *QUIET,
            f"--user-data-dir={profile}/data",
            f"--log-net-log={netlog}",
            f"--virtual-time-budget={budget_ms}",
            f"--window-size={size}",
        ]
        argv += [f"--screenshot={screenshot}"] if screenshot is not None else ["--dump-dom"]
        process = await asyncio.create_subprocess_exec(
            *argv, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        try:
            async with asyncio.timeout(90):
                out, err = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        if process.returncode != 0:
            raise RuntimeError(f"chromium exited {process.returncode}:\n{err.decode()[-2000:]}")
        return Rendered(out.decode(errors="replace"), _requested(netlog))


def _requested(netlog: Path) -> list[tuple[str, str]]:
    """The page's requests in a NetLog: its URL_REQUEST_START_JOB events carry the URL, the
    request type and the initiator (the origin whose document asked for it)."""
    text = netlog.read_text(encoding="utf-8", errors="replace").rstrip().rstrip(",")
    if not text.endswith("}"):
        text += "]}"  # a log cut short at exit: close its event list
    out = []
    for event in json.loads(text).get("events", []):
        params = event.get("params") or {}
        url, kind = params.get("url"), params.get("request_type")
        if not isinstance(url, str) or kind is None:
            continue
        initiator = params.get("initiator", "not an origin")
        if kind != "other" or initiator != "not an origin":
            out.append((url, "" if initiator == "not an origin" else initiator))
    return out
