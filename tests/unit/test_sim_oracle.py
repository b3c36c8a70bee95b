"""The clairvoyant `oracle` scheduler: it plans every job at its true power for
its true run, so it never goes over the cap, never needs to preempt, and on a
trace a forecaster could learn perfectly it uses at least as much of the cap
while jobs wait as wattcap does. Its schedules are held to the independent
checker, which reads only the trace and the schedule."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from statistics import fmean

import pytest
from cli_runs import DATA, POLICY, SITE, TRACE, wattcap_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wattcap.model import CapWindow, PowerPolicy, parse_time
from wattcap.sim.check import ScheduleRow, check, load_schedule
from wattcap.sim.engine import SimConfig, simulate
from wattcap.sim.report import summarize
from wattcap.sim.run import load_policy
from wattcap.sim.schedulers import SCHEDULERS, make_scheduler
from wattcap.sim.trace import TraceJob, load_trace

T0 = parse_time("2026-07-01T00:00:00Z", "start")


def run(jobs, policy, scheduler, nodes=4, gpn=8, seed=0):
    cfg = SimConfig(nodes, gpn, T0, seed=seed)
    return simulate(jobs, policy, make_scheduler(scheduler, policy, jobs), cfg)


def rows(res) -> list[ScheduleRow]:
    return [
        ScheduleRow(s.job_id, s.start_s, s.end_s, list(s.nodes), s.outcome) for s in res.segments
    ]


def test_oracle_is_a_scheduler_choice():
    assert "oracle" in SCHEDULERS


def test_oracle_plans_each_job_at_its_own_power_not_its_class():
    """Two jobs of one class and size, queued together: the first draws 600 W
    a GPU, the second 100 W. Under the cap there is room for the first and the
    second together, not for two of the first. The oracle starts both at once;
    a scheduler that planned the second at the first's power (one forecast per
    class and size) would hold it until the first ends."""
    policy = PowerPolicy(cap_watts=1.2 * (800 + 8 * 70) + 1.2 * 4 * (530 + 30) + 100)
    jobs = [
        TraceJob("a-hot", 0.0, 3600.0, 1, 4, "x", 0, 600.0),
        TraceJob("b-cool", 0.0, 3600.0, 1, 4, "x", 0, 100.0),
    ]
    res = run(jobs, policy, "oracle", nodes=1)
    assert res.first_start == {"a-hot": 0.0, "b-cool": 0.0}
    assert res.seconds_over_cap == 0.0


def test_oracle_runs_a_non_preemptible_job_only_where_its_whole_run_fits():
    """A job that fits the base cap but not a window ahead is held until the
    window is over if its true run would reach into it, and started at once if
    its true run ends before the window opens, whatever its estimate says."""
    idle = 1.2 * (800 + 8 * 70)
    window = CapWindow(T0 + 3600, T0 + 7200, idle + 1000.0, "dr")
    policy = PowerPolicy(cap_watts=idle + 5000.0, cap_schedule=(window,))
    jobs = [
        # 1.2 x 8 x 330 = 3168 W above idle: fits 5000 W, not the window's 1000 W
        TraceJob("short", 0.0, 3000.0, 1, 8, "x", 0, 400.0, est_duration_s=99999.0),
        TraceJob("long", 3100.0, 1000.0, 1, 8, "x", 0, 400.0, est_duration_s=10.0),
    ]
    res = run(jobs, policy, "oracle", nodes=1)
    assert res.first_start["short"] == 0.0
    assert res.first_start["long"] == 7200.0
    assert res.seconds_over_cap == 0.0 and res.preemptions == 0


job_st = st.builds(
    lambda i, s, d, r, g, c, p, w, pre: TraceJob(f"j{i}", s, d, r, g, c, p, w, preemptible=pre),
    st.integers(0, 10**6),
    st.floats(0, 20000).map(round),
    st.floats(1, 8000).map(round),
    st.integers(1, 2),
    st.sampled_from([1, 2, 4]),
    st.sampled_from(["a", "b"]),
    st.integers(0, 2),
    st.floats(80, 700),
    st.booleans(),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    jobs=st.lists(job_st, min_size=1, max_size=30, unique_by=lambda j: j.job_id),
    cap=st.sampled_from([14000.0, 16000.0]),
)
def test_oracle_never_goes_over_the_cap_nor_preempts(jobs, cap):
    """On random traces with a demand-response window and a preemptible mix,
    the checker, recomputing site power from the trace and the schedule, finds
    no second over the cap; the oracle preempts nothing and finishes every job."""
    policy = PowerPolicy(
        cap_watts=cap,
        cap_schedule=(CapWindow(T0 + 7200, T0 + 10800, cap - 4000.0, "dr"),),
        max_wait_s=6 * 3600.0,
    )
    res = run(jobs, policy, "oracle")
    c = check(jobs, rows(res), policy, nodes=4, gpus_per_node=8, start_epoch_s=T0)
    assert c.problems == []
    assert c.seconds_over_cap == 0.0
    assert c.preemptions == 0
    assert c.completed_jobs == len(jobs)
    s = summarize(res, nodes=4, gpus_per_node=8, seed=0)
    assert s["seconds_over_cap"] == 0.0
    assert s["cap_used_while_waiting"] == pytest.approx(c.cap_used_while_waiting, abs=1e-9) or (
        s["cap_used_while_waiting"] is None and c.cap_used_while_waiting is None
    )


def _learnable(jobs: list[TraceJob]) -> list[TraceJob]:
    """Every job at its class's mean power, with its true duration as its estimate."""
    by_class: dict[str, list[float]] = defaultdict(list)
    for j in jobs:
        by_class[j.workload_class].append(j.gpu_watts)
    mean = {c: fmean(w) for c, w in by_class.items()}
    return [
        dataclasses.replace(j, gpu_watts=mean[j.workload_class], est_duration_s=j.duration_s)
        for j in jobs
    ]


def test_oracle_uses_at_least_the_cap_wattcap_uses_on_a_learnable_trace():
    jobs = _learnable(load_trace(DATA / "sim_trace.csv"))
    policy = load_policy(DATA / "sim_policy.yaml")
    out = {}
    for name in ("wattcap", "oracle"):
        res = run(jobs, policy, name)
        out[name] = summarize(res, nodes=4, gpus_per_node=8, seed=0)
    assert out["oracle"]["seconds_over_cap"] == 0.0
    assert out["oracle"]["cap_used_while_waiting"] >= out["wattcap"]["cap_used_while_waiting"]


def test_simulate_cli_runs_the_oracle(tmp_path):
    sched = tmp_path / "oracle.csv"
    r = wattcap_cli(
        *("simulate", "--trace", str(TRACE), "--policy", str(POLICY), *SITE),
        *("--scheduler", "oracle", "--schedule-out", str(sched), "--json"),
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["scheduler"] == "oracle"
    c = check(
        load_trace(DATA / "sim_trace.csv"),
        load_schedule(sched),
        load_policy(DATA / "sim_policy.yaml"),
        nodes=4,
        gpus_per_node=8,
        start_epoch_s=T0,
    )
    assert c.problems == [] and c.seconds_over_cap == 0.0
    assert summary["seconds_over_cap"] == 0.0
    assert summary["completed_jobs"] == c.completed_jobs


def test_the_oracle_replay_decides_as_deciding_at_every_tick_would():
    """The replay skips cycles it judges cannot act; with one forecast per job
    (not per class) the oracle must still admit the same jobs at the same
    moments as deciding at every control tick on the whole queue."""
    jobs = load_trace(DATA / "sim_trace.csv")
    policy = load_policy(DATA / "sim_policy.yaml")
    acts = {}
    for every in (False, True):
        log: list = []
        cfg = SimConfig(4, 8, T0, decision_log=log, every_tick=every)
        simulate(jobs, policy, make_scheduler("oracle", policy, jobs), cfg)
        acts[every] = [x for x in log if x[1] or x[2]]
    assert acts[False], "the trace admits nothing: the comparison would be empty"
    assert acts[False] == acts[True]
