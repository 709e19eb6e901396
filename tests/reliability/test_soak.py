"""The short fault soak (`loadtest/soak.py --faults short`), as CI runs it: under a steady
load over two gateways sharing one Redis, Redis is SIGKILLed and restarted twice, gateway B's
whole process group is SIGKILLed and restarted, and the upstream stalls past its timeout;
nothing may hang, every answer is one documented for its moment, every fault is recovered
from, every request the queue route accepted reaches the upstream, and the local limits stay
under their over-admission bound while Redis is down.

Behaviour only, at a low rate: CI machines are shared and slow; `make soak` runs the long one.
The judgement itself (what is documented when, the over-admission arithmetic) is tested first
on made-up outcomes, without processes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loadtest.soakjudge import LocalLimit, active, over_admission, undocumented
from loadtest.soakload import Fault, Outcome
from loadtest.soakprocs import timeouts
from loadtest.soakreport import Run, must_be_zero, verdict

ROOT = Path(__file__).resolve().parents[2]
REDIS = Fault("redis", 10.0, ended=15.0, kind="redis", restarted=14.8)
GATEWAY_B = Fault("gateway", 30.0, ended=36.0, kind="gateway", gateway=1, restarted=33.0)
UPSTREAM = Fault("upstream", 50.0, ended=55.0, kind="upstream")
FAULTS = [REDIS, GATEWAY_B, UPSTREAM]


def answer(
    route: str, due: float, status: int | None, code: str | None = None, **kw: object
) -> Outcome:
    outcome = Outcome(due, route, status=status, code=code, seconds=0.01)
    for name, value in kw.items():
        setattr(outcome, name, value)
    return outcome


@pytest.mark.parametrize(
    ("outcome", "why"),
    [
        (answer("strict", 12.0, 503, "rate_limit_unavailable"), None),
        (answer("strict", 17.5, 503, "rate_limit_unavailable"), None),  # within the grace
        (answer("strict", 25.0, 503, "rate_limit_unavailable"), "503 rate_limit_unavailable"),
        (answer("account", 12.0, 503, "session_store_unavailable"), None),
        (answer("queued", 12.0, 503, "queue_unavailable"), None),
        (answer("passthrough", 12.0, 503, "rate_limit_unavailable"), "on passthrough"),
        (answer("passthrough", 52.0, 504, "gateway_timeout"), None),
        (answer("passthrough", 49.0, 504, "gateway_timeout", seconds=2.0), None),  # in flight
        (answer("passthrough", 20.0, 504, "gateway_timeout"), "(no fault)"),
        (answer("queued", 52.0, 504, "gateway_timeout"), "on queued"),  # 202 once stored
        (answer("cached", 31.0, None, failure="connection: ClientOSError", gateway=1), None),
        (answer("cached", 31.0, None, failure="connection: ClientOSError"), "gateway up"),
        (answer("cached", 40.0, None, failure="connection: X", gateway=1), "gateway up"),
        (answer("local", 5.0, 429, "rate_limited"), None),
        (answer("passthrough", 5.0, 429, "rate_limited"), "429"),
        (answer("account", 5.0, 200, wrong="identity not forwarded"), "wrong 200"),
        (answer("passthrough", 5.0, 500, "internal"), "500 internal"),
        (answer("passthrough", 5.0, None, failure="hung"), None),  # counted on its own
    ],
)
def test_an_answer_is_judged_against_the_faults_it_overlapped(
    outcome: Outcome, why: str | None
) -> None:
    found = undocumented(outcome, active(outcome, FAULTS))
    if why is None:
        assert found is None
    else:
        assert found is not None
        assert why in found


def test_over_admission_is_what_was_admitted_while_redis_was_down_against_the_limit() -> None:
    window = LocalLimit("local", "sliding_window", 20, window=10.0)
    bucket = LocalLimit("bucket", "token_bucket", 8, rate=2.0)
    outcomes = [answer("local", 10.0 + i / 10, 200) for i in range(24)]  # 24 in 2.4 s
    outcomes += [answer("local", 9.0, 200), answer("local", 14.9, 200)]  # before, after: no
    outcomes += [answer("bucket", 10.0 + i / 10, 200 if i < 12 else 429) for i in range(40)]
    rows = {row["route"]: row for row in over_admission(outcomes, FAULTS, [window, bucket])}
    assert rows["local"]["admitted"] == 24
    assert rows["local"]["allowed"] == 20
    assert rows["local"]["ratio"] == 1.2
    assert rows["bucket"]["sent"] == 40
    assert rows["bucket"]["admitted"] == 12
    assert rows["bucket"]["allowed"] == pytest.approx(8 + 2.0 * 4.8, abs=0.1)

    run = Run({"workers": 2}, outcomes, [REDIS], [], "", "", {}, [window, bucket], gateways=2)
    assert run.bound == 1.25
    assert must_be_zero(run)["local limits over the over-admission bound in an outage"] == 0
    run.limits = [LocalLimit("local", "sliding_window", 16, window=10.0)]  # 24 / 16 = 1.5
    assert must_be_zero(run)["local limits over the over-admission bound in an outage"] == 1
    assert not verdict(run)["ok"]


def test_a_request_hangs_past_its_routes_timeouts_plus_one_second() -> None:
    text = (ROOT / "loadtest" / "soak.yaml").read_text()
    doc = yaml.safe_load(re.sub(r"\$\{[^}]*\}", "1", text))  # ports and URLs do not matter
    read, bounds = timeouts(doc)
    assert read == 2.0  # the short schedule's 5 s stall outlasts it: 504 is the answer
    assert bounds["passthrough"] == 0.25 + 1.0 + 2.0  # redis.timeout + connect + read
    # A collapsed cache miss waits for the leader's upstream request, then may make its own.
    assert bounds["cached"] == 0.25 + 2 * (1.0 + 2.0)


@pytest.mark.soak
def test_short_fault_soak_recovers_from_every_fault(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "loadtest.soak", "--faults", "short", "--rate", "50"]
    argv += ["--reports", str(tmp_path)]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    [report] = list(tmp_path.iterdir())
    assert report.name.startswith("soak-")
    for name in ("report.md", "report.json", "redis.log", "upstream.log"):
        assert (report / name).is_file(), f"{name} missing: {output}"
    for gateway in ("a", "b"):
        assert (report / f"gateway-{gateway}.log").is_file(), output
        assert (report / f"gateway-{gateway}.yaml").is_file(), output
    verdict = json.loads((report / "report.json").read_text())["verdict"]
    assert verdict["ok"], output
    assert not any(verdict["must_be_zero"].values()), verdict["must_be_zero"]
    assert not verdict["undocumented"], verdict["undocumented"]
    assert len(verdict["recoveries"]) == 4
    assert all(r["first_healthy_second"] is not None for r in verdict["recoveries"])
    assert verdict["requests"] >= 55 * 50 * 0.95
    # The faults were felt, and answered as documented for their moment.
    routes = verdict["by_route"]
    assert routes["strict"].get("503"), routes
    assert routes["account"].get("503"), routes
    assert routes["passthrough"].get("504"), routes  # stalled past the read timeout
    assert routes["passthrough"].get("connection"), routes  # gateway B down
    assert routes["local"].get("429"), routes
    assert routes["bucket"].get("429"), routes
    # The local limits admitted something while Redis was down, and no more than the bound.
    rows = verdict["over_admission"]
    assert {(row["outage"], row["route"]) for row in rows} == {
        (1, "local"),
        (1, "bucket"),
        (2, "local"),
        (2, "bucket"),
    }
    assert all(row["ratio"] <= verdict["over_admission_bound"] for row in rows), rows
    assert all(row["admitted"] for row in rows if row["outage"] == 1), rows
    # The queue route: accepted while Redis was up, 503 while it was down, nothing lost.
    assert routes["queued"].get("202"), routes
    assert routes["queued"].get("503"), routes
    queue = verdict["queue"]
    assert queue["accepted"] == routes["queued"]["202"], queue
    assert queue["lost"] == 0, queue
    print(f"soak figures: queue {queue}, over-admission {rows}")
