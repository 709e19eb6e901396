"""File descriptors: the open-file limit raised at start, and telling a worker that has none left.

Each client connection holds one descriptor in its worker, each upstream connection (pooled
or in use) one more; see the README's "File descriptors" section for sizing.
"""

from __future__ import annotations

import logging
import os
import resource

log = logging.getLogger("gateway.supervisor")

_SLACK = 2
"""A worker this close to its limit is taken as out of descriptors (libuv briefly frees a
reserved one while it turns connections away)."""


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft `RLIMIT_NOFILE` to the hard limit (workers inherit it); log both and
    return (soft, hard) as they are now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = _nr_open()  # Linux refuses "unlimited"; fs.nr_open is the real ceiling
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("open-file limit: soft %s, hard %s; cannot raise it: %s", soft, hard, exc)
            return soft, hard
        log.info("open-file limit: soft %s raised to the hard limit %s", soft, _shown(hard))
        return target, hard
    log.info("open-file limit: soft %s, hard %s", _shown(soft), _shown(hard))
    return soft, hard


def out_of_fds(pid: int) -> bool:
    """Whether process `pid` holds as many descriptors as its soft limit allows (Linux, from
    /proc; False where that cannot be read)."""
    try:
        with open(f"/proc/{pid}/limits", encoding="ascii") as handle:
            soft = next(line.split()[3] for line in handle if line.startswith("Max open files"))
        if soft == "unlimited":
            return False
        return len(os.listdir(f"/proc/{pid}/fd")) >= int(soft) - _SLACK
    except (OSError, StopIteration, ValueError, IndexError):
        return False


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open", encoding="ascii") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return 1024 * 1024


def _shown(limit: int) -> str:
    return "unlimited" if limit == resource.RLIM_INFINITY else str(limit)
