"""The short fixed-seed campaign that keeps ``make chaos`` honest in CI: every workload on a fresh
3-member ensemble for 75 s of faults of 12 kinds (seed 216), then every checker. ``make chaos``
runs the same thing longer and over more seeds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: a seed whose 75-second plan covers the most fault kinds (12 of 13: a member is paused only
#: past the session timeout) and hits the lock, semaphore and counter processes most (11 faults)
SEED = 216
DURATION = 75


@pytest.mark.ensemble
def test_a_fixed_seed_campaign_finds_no_violation(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "chaos", "--duration", str(DURATION), "--seeds", str(SEED),
         "--out", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=420, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    table, _, payload = run.stdout.partition("\n[")
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr[-4000:]}"
    (result,) = json.loads("[" + payload)
    assert not result["errors"]
    injected = result["faults"]
    assert len(injected) >= 10, table  # the plan's kinds fired (a skipped one is counted apart)
    for report in result["reports"]:
        assert report["violations"] == [], table
        # each workload did its work through the faults, not just survived them
        assert sum(n for op, n in report["ops"].items() if op.endswith(" ok")) >= 10, table
