"""The simulator held to the operator: the same cluster states, the same decisions.

The simulator keeps its own state (queue order, planned runs, preempted
jobs) and hands `admission.decide` a snapshot built from it; the operator
builds its snapshot from the cluster's objects (`controller.cycle`). Both
call the same core, so any difference is in what each believes about the
site. At every cycle of a replay (deciding every control period, on the
whole queue, as the operator does), the cluster the operator would see in
the simulator's state (`operator_view.py`) is handed to `controller.cycle`,
which must admit the same jobs on the same nodes and preempt the same jobs,
for the same reasons.

The sites differ from the operator's in one way on purpose: the policy's
`maxTerminationGracePeriod` is 0. The simulator stops a shed job at once,
so it has no pods' termination grace to react ahead of (the operator's
`_reaction`); with none, the two plan alike.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from operator_view import key_of, memory, site_state

import wattcap.admission as admission
import wattcap.controller as controller
from wattcap.controller import cycle
from wattcap.forecast import moments
from wattcap.model import CapWindow, PowerPolicy, parse_time
from wattcap.sim.engine import SimConfig, _Engine
from wattcap.sim.run import load_policy
from wattcap.sim.schedulers import (
    SIM_NAMESPACE,
    JobView,
    Scheduler,
    WattcapScheduler,
    make_scheduler,
)
from wattcap.sim.trace import TraceJob, load_trace
from wattcap.telemetry import Reading

DATA = Path(__file__).resolve().parents[1] / "data"
T0 = parse_time("2026-07-01T00:00:00Z", "start")


def _acts(dec: admission.Decision, operator: bool) -> tuple:
    name = key_of if operator else str
    admits = tuple((name(a.key), tuple(a.nodes)) for a in dec.admits)
    preempts = tuple(sorted((name(p.key), p.reason) for p in dec.preempts))
    return admits, preempts


class UnmeteredWattcap(WattcapScheduler):
    """The simulator's wattcap scheduler on a site with no meter (the
    operator with no Prometheus reading: every running job is planned at
    what it was admitted with). Not a fake of any part: both sides run
    their real forecaster on the same history, which nothing measured
    changes during the replay."""

    measures = False


def seeded(policy: PowerPolicy) -> UnmeteredWattcap:
    """An unmetered wattcap whose forecaster has seen class `a` draw 300 W
    per GPU, give or take 10 % (so siteChance plans it as a mean and a
    spread), for 5 to 40 minutes (so a preemptible job is planned shorter
    than one that cannot be shed), and class `b` once (a spread assumed
    from one sample)."""
    sched = UnmeteredWattcap(policy)
    runs = (300.0, 2400.0, 600.0, 900.0, 1200.0, 1800.0, 450.0)
    for w, d in zip((270.0, 330.0, 300.0, 285.0, 315.0, 240.0, 360.0), runs, strict=True):
        sched.forecaster.observe("a", w, d, None, namespace=SIM_NAMESPACE)
    sched.forecaster.observe("b", 450.0, 1800.0, None, namespace=SIM_NAMESPACE)
    return sched


def replay_both(
    jobs: list[TraceJob],
    policy: PowerPolicy,
    nodes: int,
    gpus_per_node: int,
    scheduler: str | Scheduler,
) -> list[tuple[float, tuple, tuple]]:
    """Replay `jobs` deciding every period; at each cycle, decide the same
    state as the operator too. Returns (time, simulator's acts, operator's
    acts) for every cycle where either acted."""
    cfg = SimConfig(nodes, gpus_per_node, T0, every_tick=True)
    sched = make_scheduler(scheduler, policy) if isinstance(scheduler, str) else scheduler
    eng = _Engine(jobs, policy, sched, cfg)
    real = admission.decide
    seen: list[tuple[float, tuple, tuple]] = []

    def both(snap: admission.Snapshot, **kw: bool) -> admission.Decision:
        dec = real(snap, **kw)
        plan = cycle(site_state(eng), memory(eng), snap.now_s)
        assert plan.errors == [], plan.errors
        assert plan.decision is not None
        sim, op = _acts(dec, False), _acts(plan.decision, True)
        if sim != ((), ()) or op != ((), ()):
            seen.append((snap.now_s - T0, sim, op))
        return dec

    with pytest.MonkeyPatch.context() as mp:  # the replay's decide only, this replay only
        mp.setattr(admission, "decide", both)
        eng.run()
    return seen


def _first_difference(seen: list[tuple[float, tuple, tuple]]) -> str | None:
    for t, sim, op in seen:
        if sim != op:
            return f"at +{t:.0f} s the simulator decided {sim}, the operator {op}"
    return None


@pytest.mark.parametrize("scheduler", ["static-tdp", "gpu-only"])
def test_the_replay_of_the_test_trace_decides_as_the_operator(scheduler) -> None:
    """sim_trace.csv on its 4 x 8-GPU site, with its demand-response window:
    jobs are admitted, shed by the window and resumed."""
    jobs = load_trace(DATA / "sim_trace.csv")
    policy = dataclasses.replace(load_policy(DATA / "sim_policy.yaml"), max_termination_grace_s=0)
    seen = replay_both(jobs, policy, 4, 8, scheduler)
    assert any(sim[0] for _, sim, _ in seen), "nothing admitted: the comparison would be empty"
    if scheduler == "static-tdp":
        assert any(sim[1] for _, sim, _ in seen), "nothing preempted: resumption is not reached"
    assert _first_difference(seen) is None, _first_difference(seen)


job_st = st.builds(
    lambda i, s, d, r, g, c, p, pre, est: TraceJob(
        f"j{i}", s, d, r, g, c, p, 400.0, preemptible=pre, est_duration_s=est
    ),
    st.integers(0, 10**6),
    st.integers(0, 120).map(lambda k: 60.0 * k),  # arrivals over two hours, some at once
    st.integers(10, 7200).map(float),
    st.integers(1, 3),
    st.sampled_from([1, 2, 4, 8]),
    st.sampled_from(["a", "b"]),
    st.integers(0, 2),
    st.booleans(),
    st.one_of(st.none(), st.integers(5, 7200).map(float)),
)


def _random_policy(nodes, cap_gpus, window, pue, base, ordering, backfill, max_wait_min):
    idle_site = pue * (nodes * base + nodes * 8 * 70.0)
    cap = idle_site + pue * cap_gpus * (700.0 - 70.0)
    schedule = ()
    if window is not None:
        start, length = window
        low = idle_site + 0.4 * (cap - idle_site)
        schedule = (CapWindow(T0 + 60 * start, T0 + 60 * (start + length), low, "dr"),)
    return PowerPolicy(
        cap_watts=cap,
        cap_schedule=schedule,
        pue=pue,
        node_base_watts=base,
        gpu_idle_watts=70.0,
        gpu_tdp_watts=700.0,
        ordering=ordering,
        backfill=backfill,
        max_wait_s=60.0 * max_wait_min,
        reservation_depth=2,
        max_termination_grace_s=0,
    )


random_sites = given(
    jobs=st.lists(job_st, min_size=1, max_size=14, unique_by=lambda j: j.job_id),
    nodes=st.integers(1, 4),
    cap_gpus=st.integers(4, 32),
    window=st.one_of(st.none(), st.tuples(st.integers(0, 90), st.integers(5, 60))),
    pue=st.sampled_from([1.0, 1.25]),
    base=st.sampled_from([0.0, 400.0]),
    ordering=st.sampled_from(["PriorityFIFO", "FIFO"]),
    backfill=st.booleans(),
    max_wait_min=st.sampled_from([20, 240]),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@random_sites
def test_random_sites_decide_as_the_operator(jobs, nodes, **site) -> None:
    """Random traces on random sites (sizes, PUE, node base power, ordering,
    backfill, a demand-response window that sheds): every state the replay
    passes through is decided alike by the operator."""
    policy = _random_policy(nodes, **site)
    seen = replay_both(jobs, policy, nodes, 8, "static-tdp")
    assert _first_difference(seen) is None, _first_difference(seen)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@random_sites
def test_random_sites_with_a_forecast_distribution_decide_as_the_operator(
    jobs, nodes, **site
) -> None:
    """siteChance with history: the simulator plans class `a` as a mean and
    a spread (`Forecaster.distribution`); the operator, handed the same
    forecaster, must plan its queued jobs and its running ones (from the
    forecast it stored on their Jobs) at the same distribution, so both
    admit the same jobs on the same sites."""
    policy = _random_policy(nodes, **site)
    seen = replay_both(jobs, policy, nodes, 8, seeded(policy))
    assert _first_difference(seen) is None, _first_difference(seen)


def test_the_test_trace_with_a_forecast_distribution_decides_as_the_operator() -> None:
    """sim_trace.csv's classes given a spread history: the replay admits
    jobs charged at a spread (so the comparison is not empty) and the
    operator decides every state alike."""
    jobs = [dataclasses.replace(j, workload_class="a") for j in load_trace(DATA / "sim_trace.csv")]
    policy = dataclasses.replace(load_policy(DATA / "sim_policy.yaml"), max_termination_grace_s=0)
    assert policy.admission_model == "siteChance"
    seen = replay_both(jobs, policy, 4, 8, seeded(policy))
    assert any(sim[0] for _, sim, _ in seen), "nothing admitted: the comparison would be empty"
    assert _first_difference(seen) is None, _first_difference(seen)


def test_hinted_jobs_are_planned_from_the_namespaces_hint_record_as_the_operator_plans_them() -> (
    None
):
    """Every other job of the test trace carries a hint (its true power, off
    by up to 10 %), and the namespace's record of checked hints is honest:
    the simulator and the operator both plan those jobs from class and hint
    together (`hinted`), each hint its own forecast, and decide alike."""
    jobs = [
        dataclasses.replace(
            j, workload_class="a", gpu_watts_hint=None if k % 2 else j.gpu_watts * (0.9 + 0.02 * k)
        )
        for k, j in enumerate(load_trace(DATA / "sim_trace.csv")[:10])
    ]
    policy = dataclasses.replace(load_policy(DATA / "sim_policy.yaml"), max_termination_grace_s=0)
    sched = seeded(policy)
    for r in (0.95, 1.0, 1.05, 0.98, 1.02, 1.0):
        sched.forecaster.observe("c", 400.0 * r, 600.0, None, SIM_NAMESPACE, hint_gpu_watts=400.0)
    hinted = JobView("j", "a", 1, 8, 0, True, 0.0, None, 300.0)
    assert sched.forecast(hinted).source == "hinted"
    higher = dataclasses.replace(hinted, key="k", gpu_watts_hint=400.0)
    assert sched.forecast(higher).gpu_watts > sched.forecast(hinted).gpu_watts
    assert sched.shape(hinted) != sched.shape(dataclasses.replace(hinted, gpu_watts_hint=310.0))
    seen = replay_both(jobs, policy, 4, 8, sched)
    assert any(sim[0] for _, sim, _ in seen), "nothing admitted: the comparison would be empty"
    assert _first_difference(seen) is None, _first_difference(seen)


def test_a_job_a_window_can_shed_is_planned_shorter_as_the_operator_plans_it() -> None:
    """Simulator and operator plan a preemptible job, under a policy that
    preempts, for its class's 70th percentile of duration, and any other
    job for the 90th: the replays above compare their decisions, this pins
    the durations they decide with."""
    policy = dataclasses.replace(load_policy(DATA / "sim_policy.yaml"), max_termination_grace_s=0)
    assert policy.preemption
    sched = seeded(policy)
    view = JobView("j", "a", 1, 8, 0, True, 0.0)
    assert sched.duration(view) == 1200.0  # the 5th of class a's seven runs
    assert sched.duration(dataclasses.replace(view, preemptible=False)) == 2400.0
    kept = seeded(dataclasses.replace(policy, preemption=False))
    assert kept.duration(view) == 2400.0  # never shed: planned through windows


def test_a_measured_running_job_is_planned_as_the_simulator_plans_it() -> None:
    """siteChance, once a running job has steady samples: the operator plans it
    at what the simulator's scheduler does from the same samples (`tighten`,
    `Forecaster.measured`): their mean, here above what it was admitted at
    (the plan follows the draw), with the spread of that level."""
    policy = dataclasses.replace(load_policy(DATA / "sim_policy.yaml"), max_termination_grace_s=0)
    sched = seeded(policy)
    jobs = [TraceJob("big", 0.0, 7200.0, 1, 8, "a", 0, 420.0, preemptible=True)]
    eng = _Engine(jobs, policy, sched, SimConfig(4, 8, T0, every_tick=True))
    real, seen = admission.decide, []
    draws = [410.0, 425.0, 418.0, 431.0, 409.0, 422.0, 415.0, 428.0]

    def spy(snap: admission.Snapshot, **kw: bool) -> admission.Decision:
        seen.append(snap)
        return real(snap, **kw)

    def once_running(snap: admission.Snapshot, **kw: bool) -> admission.Decision:
        dec = real(snap, **kw)
        if snap.running and not seen:
            state = site_state(eng)
            state.reading = Reading(ok=True, site_watts=None)
            mem = memory(eng)
            # a warm-up sample (left out as ramp-up), then eight steady ones
            samples = [(snap.now_s - 400.0, 150.0)]
            samples += [(snap.now_s - 300.0 + 15.0 * k, w) for k, w in enumerate(draws)]
            mem.samples[(SIM_NAMESPACE, "big")] = samples
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(controller, "decide", spy)
                cycle(state, mem, snap.now_s)
        return dec

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(admission, "decide", once_running)
        eng.run()
    assert seen, "the job never ran"
    (job,) = seen[0].running
    plan = eng.jobs[0].plan
    want = sched.tighten(plan, *moments(draws))
    assert want.gpu_watts > plan.calibrated_gpu_watts  # it draws more than admitted
    assert (job.gpu_watts, job.spread_gpu_watts) == (want.gpu_watts, want.spread_gpu_watts)
    assert job.forecast_gpu_watts == round(plan.calibrated_gpu_watts, 1)
