"""GPU work wattcap does not manage: admission plans around it, and it never
sheds a managed job beyond what a measured overdraw requires (issue #14).

The core's half is a property over the same sites the shedding property
draws; the edge's half (`unmanaged_load`, the controller's status) is plain
examples on API dicts.
"""

from __future__ import annotations

import dataclasses

import pytest
from core_snapshots import CAP_DROP_NOW, MEASURED_OVERDRAW, MIXED, snapshots
from hypothesis import given, settings
from hypothesis import strategies as st

from wattcap.admission import (
    PREEMPT_MEASURED,
    WAITING_FOR_POWER,
    NodeState,
    QueuedJob,
    RunningJob,
    Snapshot,
    decide,
)
from wattcap.controller import ControllerMemory, SiteState, cycle
from wattcap.forecast import Forecaster
from wattcap.jobs import LABEL_TJ
from wattcap.model import ManifestError, PowerPolicy, parse_power_policy
from wattcap.telemetry import Reading
from wattcap.unmanaged import pod_gpus, unmanaged_load

SITES = snapshots((MEASURED_OVERDRAW, CAP_DROP_NOW, MEASURED_OVERDRAW, CAP_DROP_NOW, MIXED))


@settings(max_examples=200, deadline=None)
@given(SITES, st.floats(0.0, 2e6))
def test_unmanaged_watts_never_shed_a_job_on_their_own(snap: Snapshot, unmanaged: float) -> None:
    """Whatever unmanaged work is planned at (a reserve, TDP while unmeasured),
    the jobs shed are exactly those shed without it: only the measured site
    power, which holds what unmanaged work really draws, sheds for it."""
    without = decide(snap)
    with_it = decide(dataclasses.replace(snap, unmanaged_watts=unmanaged))
    assert [(p.key, p.reason) for p in with_it.preempts] == [
        (p.key, p.reason) for p in without.preempts
    ]


@settings(max_examples=200, deadline=None)
@given(SITES, st.floats(0.0, 2e6))
def test_admissions_fit_under_the_cap_with_unmanaged_work_planned(
    snap: Snapshot, unmanaged: float
) -> None:
    """What is admitted fits under the usable cap now on top of idle power,
    running work and the unmanaged figure; and that figure is in the
    projection the status reports."""
    d = decide(dataclasses.replace(snap, unmanaged_watts=unmanaged))
    pol = snap.policy
    gone = {p.key for p in d.preempts}
    idle = pol.idle_site_watts(len(snap.nodes), sum(n.gpus_total for n in snap.nodes))
    running = sum(
        pol.job_site_watts(j.gpus, j.gpu_watts) for j in snap.running if j.key not in gone
    )
    before = idle + unmanaged + running
    added = sum(a.site_watts for a in d.admits)
    assert d.unmanaged_watts == unmanaged
    assert d.projected_site_watts == pytest.approx(before + added, rel=1e-9, abs=1e-6)
    if d.admits:
        ecap = pol.effective_cap_at(snap.now_s)
        assert before + added <= ecap + 1e-6
        assert max(before, snap.measured_site_watts or 0.0) + added <= ecap + 1e-6


POL = PowerPolicy(
    cap_watts=12_000, pue=1.0, node_base_watts=0.0, gpu_idle_watts=100.0, gpu_tdp_watts=700.0,
    safety_margin=0.0, grace_period_s=0.0,
)  # fmt: skip
NOW = 1_782_864_000.0


def _site(queued: list[QueuedJob], running: list[RunningJob], **kw: object) -> Snapshot:
    nodes = [NodeState("a", 8, 8 - sum(r.gpus for r in running)), NodeState("b", 8, 4)]
    return Snapshot(NOW, POL, nodes, running, queued, **kw)  # type: ignore[arg-type]


def test_a_reserve_takes_headroom_a_job_would_otherwise_get() -> None:
    """16 GPUs idle at 100 W: 1.6 kW. A 4-GPU job at 700 W adds 2.4 kW: it fits
    the 12 kW cap, and waits for power once 9 kW are held for inference."""
    job = QueuedJob("ml/x", 1, 4, 700.0, 0, NOW - 60, 3600)
    assert [a.key for a in decide(_site([job], [])).admits] == ["ml/x"]
    d = decide(_site([job], [], unmanaged_watts=9_000.0))
    assert not d.admits and d.waits[0].reason == WAITING_FOR_POWER
    assert d.projected_site_watts == pytest.approx(1_600 + 9_000)


def test_a_measured_overdraw_sheds_only_what_it_requires() -> None:
    """Unmanaged pods draw 2 kW over the cap (measured, past grace): of two
    preemptible jobs worth 2.4 kW each, one is shed, not both; a TDP-sized
    unmanaged figure in the plan adds no second victim."""
    run = [
        RunningJob("ml/low", 1, 4, 700.0, 0, True, NOW - 600, NOW + 3600, ("a",), 700.0),
        RunningJob("ml/high", 1, 4, 700.0, 5, True, NOW - 900, NOW + 3600, ("a",), 700.0),
    ]
    for unmanaged in (0.0, 4 * 600.0, 50_000.0):
        snap = _site(
            [], run, measured_site_watts=14_000.0, over_cap_since_s=NOW - 120,
            unmanaged_watts=unmanaged,
        )  # fmt: skip
        d = decide(snap)
        assert [(p.key, p.reason) for p in d.preempts] == [("ml/low", PREEMPT_MEASURED)]


def _pod(name: str, node: str, gpus: int, labels: dict | None = None, ns: str = "infer") -> dict:
    return {
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {
            "nodeName": node,
            "containers": [{"resources": {"requests": {"nvidia.com/gpu": str(gpus)}}}],
        },
    }


def test_unmanaged_pods_are_planned_at_measured_power_and_tdp_when_unmeasured() -> None:
    pods = [
        _pod("serve-0", "a", 2),  # measured 300 W a GPU
        _pod("serve-1", "a", 1),  # no sample: TDP
        _pod("tj-pod", "a", 4, {LABEL_TJ: "x"}),  # wattcap's own (label kept by match_owned)
        _pod("elsewhere", "z", 8),  # not a node of the site
        _pod("cpu", "a", 0),
    ]
    reading = Reading(True, 5_000.0, {("infer", "serve-0"): [300.0, 300.0]})
    u = unmanaged_load(POL, {"a", "b"}, pods, reading)
    assert (u.gpus, u.pods, u.source) == (3, 2, "Measured+TDP")
    assert u.watts == pytest.approx(2 * (300 - 100) + (700 - 100))
    # without a good reading every GPU is at TDP
    u = unmanaged_load(POL, {"a", "b"}, pods, Reading(False, error="down"))
    assert (u.watts, u.source) == (pytest.approx(3 * 600.0), "TDP")
    # a reserve: the floor with Measured, the whole plan with Reserve
    floor = dataclasses.replace(POL, unmanaged_reserve_watts=5_000.0)
    assert unmanaged_load(floor, {"a"}, pods, reading).watts == 5_000.0
    fixed = dataclasses.replace(POL, unmanaged_reserve_watts=500.0, unmanaged_plan="Reserve")
    u = unmanaged_load(fixed, {"a"}, pods, reading)
    assert (u.watts, u.gpus, u.source) == (500.0, 3, "Reserve")
    assert unmanaged_load(POL, {"a"}, [], None).status() == {
        "watts": 0.0, "gpus": 0, "pods": 0, "source": "None",
    }  # fmt: skip


def test_pod_gpus_counts_sidecars_and_the_largest_init_container() -> None:
    pod = {
        "spec": {
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}],
            "initContainers": [
                {"restartPolicy": "Always", "resources": {"requests": {"nvidia.com/gpu": "2"}}},
                {"resources": {"requests": {"nvidia.com/gpu": "4"}}},
            ],
        }
    }
    assert pod_gpus(pod) == 4
    pod["spec"]["initContainers"][1]["resources"]["requests"]["nvidia.com/gpu"] = "2"
    assert pod_gpus(pod) == 3


def test_policy_parses_unmanaged_and_names_a_bad_field() -> None:
    pol = parse_power_policy(
        {"capWatts": 1e5, "unmanaged": {"reserveWatts": 3000, "planGpusAt": "Reserve"}}
    )
    assert (pol.unmanaged_reserve_watts, pol.unmanaged_plan) == (3000.0, "Reserve")
    assert parse_power_policy({"capWatts": 1e5}).unmanaged_plan == "Measured"
    with pytest.raises(ManifestError, match=r"spec\.unmanaged\.planGpusAt"):
        parse_power_policy({"capWatts": 1e5, "unmanaged": {"planGpusAt": "Idle"}})
    with pytest.raises(ManifestError, match=r"spec\.unmanaged\.reserveWatts"):
        parse_power_policy({"capWatts": 1e5, "unmanaged": {"reserveWatts": -1}})


def _node(name: str) -> dict:
    return {
        "metadata": {"name": name},
        "status": {
            "allocatable": {"nvidia.com/gpu": "8"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def test_the_cycle_reports_unmanaged_work_and_plans_around_it() -> None:
    """An inference pod holds 4 GPUs of node a with no Prometheus: planned at
    TDP, reported in status.unmanaged, and a job that fits the cap with the
    pod at idle waits for power."""
    pol = dataclasses.replace(POL, cap_watts=5_000.0)
    tj = {
        "apiVersion": "wattcap.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "x", "namespace": "ml", "uid": "u1",
                     "creationTimestamp": "2026-07-01T00:00:00Z", "generation": 1},
        "spec": {"replicas": 1, "gpusPerReplica": 4,
                 "template": {"spec": {"containers": [{"name": "m", "image": "t:1"}]}}},
    }  # fmt: skip
    mem = ControllerMemory(Forecaster(700, 100))
    plan = cycle(SiteState(pol, [_node("a")], [_pod("serve", "a", 4)], [tj], {}), mem, NOW)
    assert plan.policy_status["unmanaged"] == {
        "watts": 2_400.0, "gpus": 4, "pods": 1, "source": "TDP",
    }  # fmt: skip
    assert plan.policy_status["projectedWatts"] == pytest.approx(800 + 2_400)
    assert not plan.create_jobs
    assert plan.tj_status[("ml", "x")]["reason"] == WAITING_FOR_POWER
