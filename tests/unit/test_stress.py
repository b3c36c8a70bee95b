"""Stress traces (`sim/stress.py`): seeded and deterministic, every knob does
what it says, and what is written reads back through the simulator's own
loaders (trace and PowerPolicy)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np
import pytest

from wattcap.model import validate_cap_against_site
from wattcap.sim.run import load_policy
from wattcap.sim.stress import StressSpec, family, stress_trace
from wattcap.sim.synth import offered_load
from wattcap.sim.trace import load_trace

SMALL = StressSpec(jobs=300, nodes=16)


def _class_rel_sd(jobs) -> dict[str, float]:
    by: dict[str, list[float]] = defaultdict(list)
    for j in jobs:
        by[j.workload_class].append(j.gpu_watts)
    return {c: float(np.std(w) / np.mean(w)) for c, w in by.items() if len(w) > 1}


def test_same_spec_same_trace_and_seed_changes_it():
    a, b = stress_trace(SMALL), stress_trace(SMALL)
    assert a.jobs == b.jobs and a.hints == b.hints and a.manifest == b.manifest
    c = stress_trace(dataclasses.replace(SMALL, seed=1))
    assert c.jobs != a.jobs


def test_written_files_read_back_through_the_simulators_loaders(tmp_path):
    s = stress_trace(dataclasses.replace(SMALL, hint_share=0.5, est_share=0.5))
    trace_path, policy_path = s.write(tmp_path)
    jobs = load_trace(trace_path, nodes=SMALL.nodes, gpus_per_node=SMALL.gpus_per_node)
    assert jobs == s.jobs
    policy = load_policy(policy_path)
    assert policy == s.policy
    validate_cap_against_site(policy, SMALL.nodes, SMALL.nodes * SMALL.gpus_per_node)
    header = trace_path.read_text().splitlines()[0].split(",")
    assert "gpu_watts_hint" in header


def test_no_spread_puts_every_job_at_its_class_mean_and_spread_widens_classes():
    flat = stress_trace(dataclasses.replace(SMALL, spread=0.0))
    levels: dict[str, set[float]] = defaultdict(set)
    for j in flat.jobs:
        levels[j.workload_class].add(j.gpu_watts)
    assert all(len(w) == 1 for w in levels.values())
    wide = stress_trace(dataclasses.replace(SMALL, jobs=2000, spread=0.3))
    sds = _class_rel_sd(wide.jobs)
    assert max(sds.values()) > 0.15  # the widest class (0.3 before clipping to idle..TDP)
    assert max(sds.values()) < 0.4
    assert min(sds.values()) < 0.12  # the narrowest: spread / 5


def test_number_of_classes():
    for n in (1, 3, 12):
        s = stress_trace(dataclasses.replace(SMALL, jobs=600, classes=n))
        assert len({j.workload_class for j in s.jobs}) == n


def test_shares_of_hints_estimates_and_non_preemptible_jobs_are_exact():
    spec = dataclasses.replace(
        SMALL, hint_share=0.25, est_share=0.6, non_preemptible_share=0.3, hint_error=0.0
    )
    s = stress_trace(spec)
    n = spec.jobs
    assert sum(h is not None for h in s.hints) == round(0.25 * n)
    assert sum(j.est_duration_s is not None for j in s.jobs) == round(0.6 * n)
    assert sum(not j.preemptible for j in s.jobs) == round(0.3 * n)
    # no hint error: a hint is the job's true power
    assert all(h == j.gpu_watts for h, j in zip(s.hints, s.jobs, strict=True) if h is not None)
    # non-preemptible work is ranked above preemptible work
    assert min(j.priority for j in s.jobs if not j.preemptible) > max(
        j.priority for j in s.jobs if j.preemptible
    )


def test_estimate_error():
    exact = stress_trace(dataclasses.replace(SMALL, est_share=1.0, est_error=0.0))
    assert all(j.est_duration_s == j.duration_s for j in exact.jobs)
    noisy = stress_trace(dataclasses.replace(SMALL, est_share=1.0, est_error=0.7))
    ratios = np.log([j.est_duration_s / j.duration_s for j in noisy.jobs])
    assert 0.4 < float(np.std(ratios)) < 1.0


def test_sizes_fit_the_site_and_follow_the_mix():
    spec = dataclasses.replace(SMALL, sizes=((2, 1.0), (32, 1.0)))
    s = stress_trace(spec)
    assert {j.gpus for j in s.jobs} == {2, 32}
    for j in s.jobs:
        assert j.gpus_per_replica <= spec.gpus_per_node
        assert j.gpus <= spec.nodes * spec.gpus_per_node
    with pytest.raises(ValueError, match="GPUs"):
        stress_trace(dataclasses.replace(SMALL, sizes=((12, 1.0),)))


def test_heavy_tailed_durations_have_a_longer_tail_and_the_load_is_on_target():
    light = stress_trace(dataclasses.replace(SMALL, jobs=2000, heavy_tail=False))
    heavy = stress_trace(dataclasses.replace(SMALL, jobs=2000, heavy_tail=True))

    def tail(jobs) -> float:
        d = np.array([j.duration_s for j in jobs])
        return float(np.percentile(d, 99) / np.percentile(d, 50))

    assert tail(heavy.jobs) > 2 * tail(light.jobs)
    for s in (light, heavy):
        assert max(j.duration_s for j in s.jobs) <= s.spec.max_duration_s
        got = offered_load(s.jobs, s.spec.nodes, s.spec.gpus_per_node)
        assert got == pytest.approx(s.spec.load, rel=0.1)


def test_cap_and_demand_response_windows():
    spec = dataclasses.replace(SMALL, dr_windows=2, dr_hours=3.0, dr_depth=0.5, cap_share=0.4)
    p = stress_trace(spec).policy
    idle = p.idle_site_watts(spec.nodes, spec.nodes * spec.gpus_per_node)
    tdp = p.pue * spec.nodes * (p.node_base_watts + spec.gpus_per_node * p.gpu_tdp_watts)
    assert p.cap_watts == pytest.approx(idle + 0.4 * (tdp - idle), abs=1.0)
    assert len(p.cap_schedule) == 2
    for w in p.cap_schedule:
        assert w.end_s - w.start_s == 3 * 3600
        assert w.cap_watts == pytest.approx(idle + 0.5 * (p.cap_watts - idle), abs=1.0)
    assert not stress_trace(dataclasses.replace(SMALL, dr_windows=0)).policy.cap_schedule


def test_the_family_has_at_least_twelve_distinct_traces():
    specs = family()
    assert len(specs) >= 12
    assert len({s.name for s in specs}) == len(specs)
    assert len({dataclasses.replace(s, name="") for s in specs}) == len(specs)
