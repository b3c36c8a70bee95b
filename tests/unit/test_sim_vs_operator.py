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
from wattcap.controller import cycle
from wattcap.model import CapWindow, PowerPolicy, parse_time
from wattcap.sim.engine import SimConfig, _Engine
from wattcap.sim.run import load_policy
from wattcap.sim.schedulers import make_scheduler
from wattcap.sim.trace import TraceJob, load_trace

DATA = Path(__file__).resolve().parents[1] / "data"
T0 = parse_time("2026-07-01T00:00:00Z", "start")


def _acts(dec: admission.Decision, operator: bool) -> tuple:
    name = key_of if operator else str
    admits = tuple((name(a.key), tuple(a.nodes)) for a in dec.admits)
    preempts = tuple(sorted((name(p.key), p.reason) for p in dec.preempts))
    return admits, preempts


def replay_both(
    jobs: list[TraceJob],
    policy: PowerPolicy,
    nodes: int,
    gpus_per_node: int,
    scheduler: str,
) -> list[tuple[float, tuple, tuple]]:
    """Replay `jobs` deciding every period; at each cycle, decide the same
    state as the operator too. Returns (time, simulator's acts, operator's
    acts) for every cycle where either acted."""
    cfg = SimConfig(nodes, gpus_per_node, T0, every_tick=True)
    eng = _Engine(jobs, policy, make_scheduler(scheduler, policy), cfg)
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


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
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
def test_random_sites_decide_as_the_operator(
    jobs, nodes, cap_gpus, window, pue, base, ordering, backfill, max_wait_min
) -> None:
    """Random traces on random sites (sizes, PUE, node base power, ordering,
    backfill, a demand-response window that sheds): every state the replay
    passes through is decided alike by the operator."""
    idle_site = pue * (nodes * base + nodes * 8 * 70.0)
    cap = idle_site + pue * cap_gpus * (700.0 - 70.0)
    schedule = ()
    if window is not None:
        start, length = window
        low = idle_site + 0.4 * (cap - idle_site)
        schedule = (CapWindow(T0 + 60 * start, T0 + 60 * (start + length), low, "dr"),)
    policy = PowerPolicy(
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
    seen = replay_both(jobs, policy, nodes, 8, "static-tdp")
    assert _first_difference(seen) is None, _first_difference(seen)
