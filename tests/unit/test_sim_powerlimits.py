"""The simulator under power limits: GPUs draw min(natural, limit), throttled jobs run
slower by the fitted model and never finish sooner than their natural duration, and the
independent checker recomputes the same power curve from the schedule's gpu_limit_w."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_sim_engine import T0, job_st

from wattcap.model import CapWindow, PowerLimits, PowerPolicy
from wattcap.powerlimit import slowdown
from wattcap.sim.check import ScheduleRow, check
from wattcap.sim.engine import SimConfig, simulate
from wattcap.sim.report import summarize
from wattcap.sim.schedulers import make_scheduler
from wattcap.sim.trace import TraceJob

LIMITS = PowerLimits(enabled=True)


def run(jobs, policy, nodes=1, gpn=8, seed=0, checkpoint_every_s=0.0):
    cfg = SimConfig(nodes, gpn, T0, seed=seed, checkpoint_every_s=checkpoint_every_s)
    return simulate(jobs, policy, make_scheduler("wattcap", policy), cfg)


def rows(res) -> list[ScheduleRow]:
    return [
        ScheduleRow(s.job_id, s.start_s, s.end_s, list(s.nodes), s.outcome, s.gpu_limit_w)
        for s in res.segments
    ]


def window_policy(limits: PowerLimits) -> PowerPolicy:
    # one 8-GPU job at 600 W: idle 8 x 70 x 1.2 + 800 x 1.2 = 1632 W, 6432 W running;
    # the window takes a quarter of the headroom above idle away
    idle = 1.2 * (800 + 8 * 70)
    full = idle + 1.2 * 8 * (600 - 70)
    win = CapWindow(T0 + 1000, T0 + 2000, idle + 0.75 * (full - idle), "evening-peak")
    at_tdp = idle + 1.2 * 8 * (700 - 70)  # what the job is planned at before it is measured
    return PowerPolicy(cap_watts=at_tdp * 1.05, cap_schedule=(win,), power_limits=limits)


JOB = TraceJob("a", 0.0, 3000.0, 1, 8, "llm", 0, 600.0, preemptible=True)


def test_a_window_is_met_by_throttling_and_the_job_finishes_later() -> None:
    pol = window_policy(LIMITS)
    res = run([JOB], pol)
    segs = [s for s in res.segments if s.job_id == "a"]
    assert [s.outcome for s in segs] == ["continued", "continued", "completed"]
    assert segs[0].gpu_limit_w is None and segs[2].gpu_limit_w is None
    limit = segs[1].gpu_limit_w
    assert limit is not None and 350.0 <= limit < 600.0
    assert 1000.0 - 15.0 <= segs[1].start_s <= 1000.0 and segs[1].end_s >= 2000.0
    wall = sum(s.end_s - s.start_s for s in segs)
    work = sum((s.end_s - s.start_s) / slowdown(600.0, s.gpu_limit_w) for s in segs)
    assert work == pytest.approx(3000.0, rel=1e-9)
    assert wall > 3000.0
    assert res.preemptions == 0 and res.seconds_over_cap == 0.0
    assert res.throttle_lost_gpu_s == pytest.approx(8 * (wall - 3000.0), rel=1e-6)
    c = check([JOB], rows(res), pol, nodes=1, gpus_per_node=8, start_epoch_s=T0)
    assert c.problems == [] and c.seconds_over_cap == 0.0 and c.completed_jobs == 1


def test_without_limits_the_same_window_preempts() -> None:
    res = run([JOB], window_policy(PowerLimits()))
    assert res.preemptions == 1 and res.throttle_lost_gpu_s == 0.0
    assert all(s.gpu_limit_w is None for s in res.segments)


def test_checkpoint_loss_makes_a_preempted_job_redo_work() -> None:
    res = run([JOB], window_policy(PowerLimits()), checkpoint_every_s=600.0)
    first, second = [s for s in res.segments if s.job_id == "a"]
    ran = first.end_s - first.start_s
    assert res.checkpoint_lost_gpu_s == pytest.approx(8 * (ran % 600.0))
    assert second.end_s - second.start_s == pytest.approx(3000.0 - ran + ran % 600.0)
    c = check(
        [JOB],
        rows(res),
        window_policy(PowerLimits()),
        nodes=1,
        gpus_per_node=8,
        start_epoch_s=T0,
        redo=True,
    )
    assert c.problems == []


def test_the_checker_sums_limited_draws_and_refuses_a_throttled_job_finishing_early() -> None:
    pol = window_policy(LIMITS)
    win = pol.cap_schedule[0]
    limited = [
        ScheduleRow("a", 0.0, 1000.0, ["node-0"], "continued", None),
        ScheduleRow("a", 1000.0, 2500.0, ["node-0"], "continued", 450.0),
        ScheduleRow("a", 2500.0, 4000.0, ["node-0"], "completed", None),
    ]
    c = check([JOB], limited, pol, nodes=1, gpus_per_node=8, start_epoch_s=T0)
    assert c.seconds_over_cap == 0.0  # 450 W under the window's cap; 600 W would be over
    assert win.cap_watts < 1.2 * (800 + 8 * 70) + 1.2 * 8 * (600 - 70)
    assert any("completed after" in p for p in c.problems)  # 1500 s at 450 W is less work
    unlimited = [dataclasses.replace(r, gpu_limit_w=None) for r in limited]
    c = check([JOB], unlimited, pol, nodes=1, gpus_per_node=8, start_epoch_s=T0)
    assert c.seconds_over_cap == 1000.0
    bad = [*limited[:1], dataclasses.replace(limited[1], nodes=["node-1"]), *limited[2:]]
    c = check([JOB], bad, pol, nodes=2, gpus_per_node=8, start_epoch_s=T0)
    assert any("resumes elsewhere" in p for p in c.problems)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    jobs=st.lists(job_st, min_size=1, max_size=25, unique_by=lambda j: j.job_id),
    seed=st.integers(0, 3),
    frac=st.sampled_from([0.3, 0.5, 0.8]),
)
def test_throttled_schedules_pass_the_checker_and_never_finish_early(jobs, seed, frac):
    pol = PowerPolicy(
        cap_watts=16000.0,
        cap_schedule=(CapWindow(T0 + 7200, T0 + 10800, 11000.0, "dr"),),
        max_wait_s=6 * 3600.0,
        power_limits=PowerLimits(enabled=True, min_fraction=frac),
    )
    res = run(jobs, pol, nodes=4, seed=seed)
    s = summarize(res, nodes=4, gpus_per_node=8, seed=seed)
    c = check(jobs, rows(res), pol, nodes=4, gpus_per_node=8, start_epoch_s=T0)
    assert c.problems == []
    assert c.completed_jobs == len(jobs)
    for key in ("seconds_over_cap", "energy_mwh", "horizon_s", "wait_p95_s"):
        if s[key] is None:
            assert getattr(c, key) is None
        else:
            assert getattr(c, key) == pytest.approx(s[key], rel=1e-9, abs=1e-6), key
    by_job: dict[str, float] = {}
    for seg in res.segments:
        by_job[seg.job_id] = by_job.get(seg.job_id, 0.0) + (seg.end_s - seg.start_s)
    for j in jobs:
        assert by_job[j.job_id] >= j.duration_s - 1e-6


def test_lost_work_has_one_definition_for_the_levers_and_the_simulator() -> None:
    """A preempted job loses the time it stands stopped plus the work it does again; a
    throttled one the time it falls behind. The simulator accounts what the levers cost
    (powerlimit.preempted_lost_s / throttled_lost_s), so the bench compares like with like:
    with limits on, the lost work of this window is less than preempting loses."""
    from wattcap.levers import Candidate, Site, preempt_cost, throttle_cost
    from wattcap.powerlimit import preempted_lost_s, throttled_lost_s

    site = Site(1.2, 70.0, 700.0, 0.5, None, 1800.0, True)
    c = Candidate("a", 8, 600.0, 0, True, 500.0, 1000.0)
    assert preempt_cost(c, site) == 8 * preempted_lost_s(1000.0, 500.0)
    assert throttle_cost(c, 450.0) == pytest.approx(8 * throttled_lost_s(600.0, 450.0, 1000.0))

    off = run([JOB], window_policy(PowerLimits()), checkpoint_every_s=600.0)
    first, second = [s for s in off.segments if s.job_id == "a"]
    # stopped while the window lasts (it ends at 2000 s), as the levers cost it
    stopped = min(second.start_s, 2000.0) - first.end_s
    assert stopped > 0 and off.stopped_lost_gpu_s == pytest.approx(8 * stopped)
    on = run([JOB], window_policy(LIMITS), checkpoint_every_s=600.0)
    assert on.stopped_lost_gpu_s == 0.0 and on.checkpoint_lost_gpu_s == 0.0
    lost_off = off.stopped_lost_gpu_s + off.checkpoint_lost_gpu_s + off.throttle_lost_gpu_s
    lost_on = on.stopped_lost_gpu_s + on.checkpoint_lost_gpu_s + on.throttle_lost_gpu_s
    assert 0 < lost_on < lost_off
