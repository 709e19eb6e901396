"""`make bench BENCH_ARGS="--profile passthrough,session"`: where a gateway worker spends its
time under full load, sampled by py-spy.

py-spy attaches to the running worker(s) from outside (no code change, no restart) while the
load generator drives the row at full speed. The samples are written in the collapsed-stack
format (`profile-<row>-<pid>.txt`, which speedscope.app and flamegraph.pl open), and the
heaviest functions are printed: by own time, and by total time among the project's own code.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")
_OWN = ("gateway/", "policies/")


def py_spy() -> str | None:
    """The py-spy binary (PATH, or next to this interpreter), or None."""
    found = shutil.which("py-spy")
    beside = Path(sys.executable).with_name("py-spy")
    return found or (str(beside) if beside.exists() else None)


def _parse(frame: str) -> tuple[str, bool]:
    """(`function (short/path.py)`, whether the frame is this project's code)."""
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip(), False
    path = m["file"]
    own = path.startswith(_OWN) or any(f"/{o}" in path for o in _OWN)
    short = path if own else "/".join(path.split("/")[-2:])
    return f"{m['func']} ({short})", own


def summarize(files: Sequence[Path], top: int = 12) -> str:
    """The heaviest functions of collapsed-stack files: own time, and total time of frames
    in gateway/ or policies/ (the code this project can change)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            samples += n
            frames = [_parse(f) for f in stack.split(";")]
            own[frames[-1][0]] += n
            for name in {name for name, mine in frames if mine}:
                total[name] += n
    if not samples:
        return "  no samples (is the worker busy? can py-spy attach: ptrace permissions?)"
    lines = [f"  {samples} samples; own time:"]
    lines += [f"    {n / samples:6.1%}  {name}" for name, n in own.most_common(top)]
    lines.append("  total time, gateway/ and policies/ frames:")
    # The worker's entry frames sit under almost everything and say nothing.
    telling = [(k, n) for k, n in total.most_common() if "gateway/worker.py" not in k][:top]
    lines += [f"    {n / samples:6.1%}  {name}" for name, n in telling]
    return "\n".join(lines)


def profile(
    pids: Sequence[int], drive: Callable[[], object], *, duration: float, out: Path, label: str
) -> str:
    """Sample `pids` with py-spy while `drive()` loads them; returns the printed summary."""
    spy = py_spy()
    if spy is None:
        return "  py-spy is not installed (pip install py-spy)"
    files = [out / f"profile-{label}-{pid}.txt" for pid in pids]
    # Sampled slightly longer than the load, so the whole run is covered.
    spies = [
        subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--duration", str(int(duration) + 1), "--rate",
             "200", "--format", "raw", "--nonblocking", "--output", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid, path in zip(pids, files, strict=True)
    ]  # fmt: skip
    time.sleep(0.3)  # let py-spy attach before the load starts
    try:
        drive()
    finally:
        errors = []
        for spy_process in spies:
            try:
                _, err = spy_process.communicate(timeout=duration + 30)
            except subprocess.TimeoutExpired:
                spy_process.kill()
                err = "timed out"
            if spy_process.returncode:
                errors.append(err.strip().splitlines()[-1] if err.strip() else "failed")
    if errors:
        return "  py-spy: " + "; ".join(errors)
    return summarize([f for f in files if f.exists()]) + f"\n  stacks: {out}/profile-{label}-*.txt"
