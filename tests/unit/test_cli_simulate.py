"""`wattcap simulate` end to end, run as a user runs it, checked by the independent checker.

The fixture (tests/data) is a power-bound 4 x 8-GPU site with a demand-response
window 02:00-03:00 and 60 jobs of three classes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cli_runs import POLICY, SITE, START, TRACE, wattcap_cli

from wattcap.sim.check import check, load_schedule
from wattcap.sim.report import SUMMARY_KEYS
from wattcap.sim.run import load_policy, parse_start
from wattcap.sim.trace import load_trace


def simulate(scheduler: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return wattcap_cli(
        *("simulate", "--trace", str(TRACE), "--policy", str(POLICY), *SITE),
        *("--scheduler", scheduler, "--schedule-out", str(out), *extra),
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    out = {}
    d = tmp_path_factory.mktemp("sim")
    for name in ("wattcap", "gpu-only"):
        sched = d / f"{name}.csv"
        r = simulate(name, sched, "--json")
        assert r.returncode == 0, r.stderr
        out[name] = (json.loads(r.stdout), sched)
    return out


def _check(sched: Path):
    return check(
        load_trace(TRACE),
        load_schedule(sched),
        load_policy(POLICY),
        nodes=4,
        gpus_per_node=8,
        start_epoch_s=parse_start(START),
    )


def test_wattcap_stays_under_the_cap_where_gpu_only_does_not(runs):
    wc, _ = runs["wattcap"]
    go, _ = runs["gpu-only"]
    assert wc["seconds_over_cap"] == 0.0
    assert go["seconds_over_cap"] > 0.0 and go["worst_overshoot_w"] > 0.0
    assert wc["completed_jobs"] == go["completed_jobs"] == 60


@pytest.mark.parametrize("name", ["wattcap", "gpu-only"])
def test_schedule_passes_the_checker_and_summary_agrees(runs, name):
    summary, sched = runs[name]
    assert tuple(summary) == SUMMARY_KEYS  # stable keys, stable order
    res = _check(sched)
    assert res.problems == []
    assert res.max_gpus_on_a_node <= 8
    for key in (
        "horizon_s",
        "seconds_over_cap",
        "worst_overshoot_w",
        "worst_overshoot_pct",
        "energy_mwh",
        "cap_used_while_waiting",
        "queue_nonempty_s",
        "wait_p50_s",
        "wait_p95_s",
        "completed_jobs",
        "preemptions",
        "gpu_utilisation",
    ):
        assert getattr(res, key) == pytest.approx(summary[key], rel=1e-9, abs=1e-6), key


def test_schedule_rows_follow_format(runs):
    _, sched = runs["wattcap"]
    lines = sched.read_text().splitlines()
    assert lines[0] == "job_id,start_s,end_s,nodes,outcome,gpu_limit_w"
    ids = {r.job_id for r in load_schedule(sched)}
    assert ids == {j.job_id for j in load_trace(TRACE)}


def test_text_summary_and_plot(tmp_path):
    png = tmp_path / "power.png"
    r = simulate("static-tdp", tmp_path / "s.csv", "--plot", str(png))
    assert r.returncode == 0, r.stderr
    for words in ("over cap", "cap used while jobs wait", "p50", "p95", "completed", "MWh"):
        assert words in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
