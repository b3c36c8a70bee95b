"""bench/oracle_gap.py: wattcap told one piece of the truth at a time (issue 16)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from wattcap.sim.schedulers import SIM_NAMESPACE, JobView
from wattcap.sim.stress import StressSpec, stress_trace

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def gap():
    sys.path.insert(0, str(BENCH))
    try:
        import oracle_gap

        yield oracle_gap
    finally:
        sys.path.remove(str(BENCH))


def _view(j) -> JobView:
    return JobView(
        j.job_id, j.workload_class, j.replicas, j.gpus_per_replica, j.priority,
        j.preemptible, j.submit_s, j.est_duration_s, j.gpu_watts_hint,
    )  # fmt: skip


def test_a_row_is_told_only_the_truth_it_names(gap) -> None:
    """`dur-pre` plans preemptible jobs for their true run time and the others
    as wattcap does; `power` plans every job at its true power with no
    spread; `margin-0` and `rho-0` change only the policy decide plans with;
    `everything` is told all of it at once."""
    st = stress_trace(StressSpec(name="t", jobs=40, spread=0.25))
    pre = next(j for j in st.jobs if j.preemptible)
    non = next(j for j in st.jobs if not j.preemptible)
    told = gap.scheduler("dur-pre", st.policy, st.jobs)
    assert told.duration(_view(pre)) == pre.duration_s
    assert told.duration(_view(non)) == st.policy.default_duration_s  # nothing learned yet
    assert told.forecast(_view(pre)).source == "prior"  # its power is not told
    power = gap.scheduler("power", st.policy, st.jobs)
    f = power.forecast(_view(non))
    assert (f.gpu_watts, f.spread_gpu_watts) == (non.gpu_watts, 0.0)
    assert power.shape(_view(non)) == (non.job_id, non.gpus)
    assert gap.scheduler("margin-0", st.policy, st.jobs).policy.safety_margin == 0.0
    assert gap.scheduler("rho-0", st.policy, st.jobs).policy.class_correlation == 0.0
    assert st.policy.safety_margin > 0.0 and st.policy.class_correlation > 0.0
    every = gap.scheduler("everything", st.policy, st.jobs)
    assert [every.duration(_view(j)) for j in (pre, non)] == [pre.duration_s, non.duration_s]
    assert every.forecast(_view(non)).gpu_watts == non.gpu_watts
    assert (every.policy.safety_margin, every.policy.class_correlation) == (0.0, 0.0)


def test_the_hint_rows_are_told_less(gap) -> None:
    """`no-hints` replays the same jobs with no hint; `hints-unchecked` never
    reads a hint as data, however many were checked."""
    spec = StressSpec(name="t", jobs=40, hint_share=1.0)
    hinted, bare = gap.trace(spec, "wattcap"), gap.trace(spec, "no-hints")
    assert all(j.gpu_watts_hint is not None for j in hinted.jobs)
    assert [dataclasses.replace(j, gpu_watts_hint=None) for j in hinted.jobs] == bare.jobs
    unchecked = gap.scheduler("hints-unchecked", hinted.policy, hinted.jobs)
    for w in range(300, 500, 10):  # a class spread 300 to 490 W, every hint exact
        unchecked.forecaster.observe("c", w, 60.0, None, SIM_NAMESPACE, hint_gpu_watts=w)
    view = dataclasses.replace(_view(hinted.jobs[0]), workload_class="c")
    assert unchecked.forecast(view).source == "history"
    checked = gap.scheduler("wattcap", hinted.policy, hinted.jobs)
    for w in range(300, 500, 10):
        checked.forecaster.observe("c", w, 60.0, None, SIM_NAMESPACE, hint_gpu_watts=w)
    assert checked.forecast(view).source == "hinted"


def test_the_bench_prints_a_row_per_variant() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "oracle_gap.py"), "--only", "base", "--jobs", "30",
         "--variants", "wattcap", "power", "oracle"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    rows = [ln.split()[:2] for ln in out.splitlines() if ln.startswith("base ")]
    assert rows == [["base", "wattcap"], ["base", "power"], ["base", "oracle"]], out
