"""bench/bench_family.py's duration calibration lines (issue 16, point 3)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def family():
    sys.path.insert(0, str(BENCH))
    try:
        import bench_family

        yield bench_family
    finally:
        sys.path.remove(str(BENCH))


def test_duration_calibration_counts_runs_within_their_plan_against_its_quantile(family):
    plans = [(False, 100.0, 90.0), (False, 100.0, 150.0), (True, 100.0, 100.0)]
    results = [
        {"trace": "t", "scheduler": "wattcap", "duration_plans": plans, "preemption": True},
        {"trace": "t", "scheduler": "oracle", "duration_plans": [], "preemption": True},
        {"trace": "u", "scheduler": "wattcap", "duration_plans": plans, "preemption": False},
    ]
    lines = family.duration_calibration(results)
    assert len(lines) == 3, lines
    assert (
        "non-preemptible  50 % of 2 (target 90 %); preemptible 100 % of 1 (target 70 %)"
        in (lines[1])
    )
    # a policy that never preempts plans a preemptible job as any other
    assert "preemptible 100 % of 1 (target 90 %)" in lines[2]
