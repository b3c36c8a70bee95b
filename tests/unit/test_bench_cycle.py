"""bench/bench_cycle.py runs: it imports the operator's internals, which move (a helper
it imported was renamed once and the bench broke unseen)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_cycle.py"


def test_the_cycle_bench_runs_on_a_small_site_and_prints_its_figures() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--nodes", "20", "--jobs", "100", "--cycles", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "pure cycle: 100 TrainingJobs, 14 running, 20 nodes" in out, out
    assert "default gc" in out and "ratio operator/baseline" in out, out
    assert "resident memory" in out, out
    assert "status picks" in out and "decide" in out, out
