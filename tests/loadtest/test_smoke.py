"""CI smoke of the load-test runner: a short passthrough run at a low rate.

Checks behaviour only (no wrong answers, reports written), never speed: CI machines are
shared and slow, so `--checks errors` leaves latency and rate to `make loadtest`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_passthrough_smoke_writes_reports_without_errors(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "loadtest.run", "--scenario", "passthrough"]
    argv += ["--duration", "10", "--users", "5", "--rate", "50", "--workers", "1"]
    argv += ["--locust-processes", "1", "--checks", "errors", "--reports", str(tmp_path)]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=150)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    [report] = list(tmp_path.iterdir())
    for name in ("passthrough_stats.csv", "passthrough.html", "summary.md", "gateway.yaml"):
        assert (report / name).is_file(), f"{name} missing from {report}: {output}"
    [outcome] = json.loads((report / "summary.json").read_text())
    assert outcome["scenario"] == "passthrough"
    assert outcome["requests"] >= 100, output  # 10 s at 50/s, with room for a slow start
    assert outcome["failures"] == 0, outcome["failure_reasons"]
