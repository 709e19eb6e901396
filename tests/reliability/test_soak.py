"""The short fault soak (`loadtest/soak.py --faults short`), as CI runs it: under a steady
load Redis is SIGKILLed and restarted twice and the upstream stalls once; nothing may hang,
no undocumented 5xx, no wrong answer, no dead worker, every fault is recovered from, and every
request the queue route accepted reaches the upstream.

Behaviour only, at a low rate: CI machines are shared and slow; `make soak` runs the long one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.soak
def test_short_fault_soak_recovers_from_every_fault(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "loadtest.soak", "--faults", "short", "--duration", "45"]
    argv += ["--rate", "50", "--reports", str(tmp_path)]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    [report] = list(tmp_path.iterdir())
    assert report.name.startswith("soak-")
    for name in ("report.md", "report.json", "gateway.log", "gateway.yaml", "redis.log"):
        assert (report / name).is_file(), f"{name} missing: {output}"
    verdict = json.loads((report / "report.json").read_text())["verdict"]
    assert verdict["ok"], output
    assert not any(verdict["must_be_zero"].values()), verdict["must_be_zero"]
    assert len(verdict["recoveries"]) == 3
    assert all(r["first_healthy_second"] is not None for r in verdict["recoveries"])
    # The faults were felt, and answered as documented.
    routes = verdict["by_route"]
    assert routes["strict"].get("503"), routes
    assert routes["account"].get("503"), routes
    assert routes["passthrough"].get("504"), routes
    assert not routes["cached"].get("504"), routes  # a stalled upstream: hits still served
    assert verdict["requests"] >= 45 * 50 * 0.95
    # The queue route: accepted while Redis was up, 503 while it was down, nothing lost.
    assert routes["queued"].get("202"), routes
    assert routes["queued"].get("503"), routes
    queue = verdict["queue"]
    assert queue["accepted"] == routes["queued"]["202"], queue
    assert queue["lost"] == 0, queue
    print(f"soak queue figures: {queue}")
