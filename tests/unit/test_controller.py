"""The operator's cycle without a cluster: API JSON in, planned writes out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from operator_view import node

from wattcap.controller import (
    ANN_FORECAST,
    ANN_PLACEMENT,
    LABEL_TJ,
    ControllerMemory,
    SiteState,
    cycle,
    job_name,
)
from wattcap.forecast import Forecaster
from wattcap.model import CapWindow, PowerLimits, PowerPolicy
from wattcap.priorities import TENANT_USABLE_LABEL, parse_priority_classes

NOW = 1_782_864_000.0


def site_policy(cap: float, **kw: object) -> PowerPolicy:
    """A toy site: PUE 1, no node base power, 100 W idle, 700 W TDP, no margin."""
    base: dict[str, object] = dict(
        pue=1.0, node_base_watts=0, gpu_idle_watts=100, gpu_tdp_watts=700, safety_margin=0.0
    )
    return PowerPolicy(cap_watts=cap, **{**base, **kw})  # type: ignore[arg-type]


POLICY = site_policy(20_000)


# PriorityClasses marked for wattcap, "prio-N" of value N (`tj(prio=N)` names one)
CLASSES = parse_priority_classes(
    {
        "metadata": {"name": f"prio-{v}", "labels": {TENANT_USABLE_LABEL: "true"}},
        "value": v,
    }
    for v in range(1, 11)
)


def site(*args: Any, **kw: Any) -> SiteState:
    """A SiteState whose cluster has the PriorityClasses `tj(prio=N)` names."""
    kw.setdefault("priority_classes", CLASSES)
    return SiteState(*args, **kw)


def priority_fields(prio: int) -> dict[str, Any]:
    """A positive priority comes from a class; a negative one lowers the ceiling of 0."""
    if prio > 0:
        return {"priorityClassName": f"prio-{prio}"}
    return {"priority": prio} if prio < 0 else {}


def tj(
    name: str,
    gpus: int = 8,
    replicas: int = 1,
    prio: int = 0,
    pre: bool = False,
    status: dict[str, Any] | None = None,
    created: str = "2026-07-01T00:00:00Z",
    **spec: Any,
) -> dict:
    """A TrainingJob as the API returns it; `spec` adds or overrides spec fields."""
    return {
        "apiVersion": "wattcap.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": f"uid-{name}",
            "creationTimestamp": created,
        },
        "spec": {
            "replicas": replicas,
            "gpusPerReplica": gpus,
            **priority_fields(prio),
            "preemptible": pre,
            "template": {"spec": {"containers": [{"name": "main", "image": "trainer:1"}]}},
            **spec,
        },
        "status": status or {},
    }


def job(
    owner: str,
    nodes: list[str],
    suspend: bool = False,
    active: int = 1,
    conditions: list[dict] | None = None,
    gpu_watts: float = 700,
) -> dict:
    return {
        "metadata": {
            "name": job_name(owner),
            "namespace": "ml",
            "creationTimestamp": "2026-07-01T00:00:00Z",
            "labels": {LABEL_TJ: owner},
            "annotations": {
                ANN_PLACEMENT: json.dumps(nodes),
                ANN_FORECAST: json.dumps({"gpuWatts": gpu_watts, "durationSeconds": 3600}),
            },
            "ownerReferences": [{"kind": "TrainingJob", "name": owner}],
        },
        "spec": {"suspend": suspend},
        "status": {"active": active, "conditions": conditions or []},
    }


def mem() -> ControllerMemory:
    return ControllerMemory(Forecaster(700, 100))


def test_admit_creates_a_pinned_owned_job_and_reports_it() -> None:
    state = site(POLICY, [node("a"), node("b")], [], [tj("bert", replicas=2)], {})
    plan = cycle(state, mem(), NOW)
    (created,) = plan.create_jobs
    assert created["metadata"]["name"] == "bert"
    assert created["metadata"]["ownerReferences"][0]["uid"] == "uid-bert"
    assert created["spec"]["parallelism"] == 2
    pod = created["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["a", "b"]
    assert "podAntiAffinity" in pod["affinity"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
    st = plan.tj_status[("ml", "bert")]
    assert st["phase"] == "Admitted" and sorted(st["placement"]) == ["a", "b"]
    assert st["forecast"]["kilowatts"] == "11.2"  # prior: 16 GPUs x 700 W


def test_restart_adopts_existing_jobs_instead_of_creating_twice() -> None:
    """Status lost (still empty) but the Job exists: it is running, not queued."""
    state = site(
        POLICY,
        [node("a"), node("b")],
        [],
        [tj("bert"), tj("gpt")],
        {("ml", "bert"): job("bert", ["a"])},
    )
    plan = cycle(state, mem(), NOW)
    assert [j["metadata"]["name"] for j in plan.create_jobs] == ["gpt"]
    assert plan.tj_status[("ml", "bert")]["phase"] == "Running"
    assert plan.create_jobs[0]["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["b"], (
        "node a is held by the adopted job"
    )


def test_completion_and_failure_flow_back() -> None:
    done = job("ok", ["a"], active=0, conditions=[{"type": "Complete", "status": "True"}])
    bad = job(
        "bad",
        ["b"],
        active=0,
        conditions=[{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
    )
    state = site(
        POLICY,
        [node("a"), node("b")],
        [],
        [tj("ok"), tj("bad")],
        {("ml", "ok"): done, ("ml", "bad"): bad},
    )
    plan = cycle(state, mem(), NOW)
    assert plan.tj_status[("ml", "ok")]["phase"] == "Succeeded"
    assert plan.tj_status[("ml", "bad")]["phase"] == "Failed"
    assert plan.tj_status[("ml", "bad")]["reason"] == "BackoffLimitExceeded"


def test_cap_drop_suspends_lowest_priority_preemptible_job() -> None:
    pol = site_policy(20_000, cap_schedule=(CapWindow(NOW - 1, NOW + 3600, 7_000, "dr"),))
    tjs = [tj("low", pre=True, prio=0), tj("high", pre=True, prio=5)]
    jobs = {("ml", "low"): job("low", ["a"]), ("ml", "high"): job("high", ["b"])}
    plan = cycle(site(pol, [node("a"), node("b")], [], tjs, jobs), mem(), NOW)
    # idle 1600 + 2 x 4800 = 11200 W > 7000 W: shedding one job leaves 6400 W
    assert plan.suspend_jobs == [("ml", "low")]
    st = plan.tj_status[("ml", "low")]
    assert st["phase"] == "Preempted" and st["preemptions"] == 1


def test_power_limits_are_not_used_where_nothing_can_confirm_them() -> None:
    """No Prometheus configured, so no node agent's enforced limit can be read: with
    powerLimits enabled the operator still preempts (throttling on paper would leave
    the site over its cap) and says why."""
    limits = PowerLimits(enabled=True)
    pol = site_policy(
        20_000, cap_schedule=(CapWindow(NOW - 1, NOW + 3600, 10_000, "dr"),), power_limits=limits
    )
    tjs = [tj("low", pre=True, prio=0), tj("high", pre=True, prio=5)]
    jobs = {("ml", "low"): job("low", ["a"]), ("ml", "high"): job("high", ["b"])}
    plan = cycle(site(pol, [node("a"), node("b")], [], tjs, jobs), mem(), NOW)
    assert plan.suspend_jobs == [("ml", "low")]
    assert plan.decision.gpu_limits == {}
    (cond,) = [c for c in plan.policy_status["conditions"] if c["type"] == "PowerLimitsApplied"]
    assert cond["status"] == "False" and cond["reason"] == "NotMeasured"


def test_preempted_job_is_resumed_in_place_not_recreated() -> None:
    tjs = [tj("p", pre=True, status={"phase": "Preempted", "preemptions": 1})]
    jobs = {("ml", "p"): job("p", ["a"], suspend=True, active=0)}
    plan = cycle(site(POLICY, [node("a"), node("b")], [], tjs, jobs), mem(), NOW)
    assert not plan.create_jobs
    ((ns, name, patch),) = plan.resume_jobs
    assert (ns, name, patch["spec"]["suspend"]) == ("ml", "p", False)


def test_waiting_job_reports_reason_forecast_and_estimated_start() -> None:
    tjs = [tj("run"), tj("wait", created="2026-07-01T00:00:01Z")]
    jobs = {("ml", "run"): job("run", ["a"])}
    pol = site_policy(8_000)
    plan = cycle(site(pol, [node("a"), node("b")], [], tjs, jobs), mem(), NOW)
    st = plan.tj_status[("ml", "wait")]
    assert st["phase"] == "Queued" and st["reason"] == "WaitingForPower"
    assert "site projected 6.4 kW + 4.8 kW > usable cap 8.0 kW" in st["message"]
    assert st["estimatedStart"] == "2026-07-01T01:00:00Z"  # when "run" is planned to end
    assert plan.policy_status["queuedJobs"] == 1


def test_foreign_gpu_pods_reduce_free_gpus() -> None:
    pod = {
        "metadata": {"name": "other", "labels": {}},
        "spec": {
            "nodeName": "a",
            "containers": [{"resources": {"requests": {"nvidia.com/gpu": "8"}}}],
        },
    }
    plan = cycle(site(POLICY, [node("a")], [pod], [tj("x")], {}), mem(), NOW)
    assert not plan.create_jobs
    assert plan.tj_status[("ml", "x")]["reason"] == "WaitingForGPUs"


def reading(values: dict[tuple[str, str], list[float]], site: float) -> Any:
    from wattcap.telemetry import Reading

    return Reading(True, site, values)


def pod_of(owner: str, name: str, node_name: str) -> dict:
    return {
        "metadata": {"name": name, "namespace": "ml", "labels": {LABEL_TJ: owner}},
        "spec": {"nodeName": node_name, "containers": []},
    }


def test_measured_over_cap_sheds_once_per_grace_period() -> None:
    pol = site_policy(12_000, grace_period_s=10.0)
    tjs = [tj("a", pre=True, prio=0), tj("b", pre=True, prio=1)]
    jobs = {
        ("ml", "a"): job("a", ["a"], gpu_watts=300),
        ("ml", "b"): job("b", ["b"], gpu_watts=300),
    }
    pods = [pod_of("a", "a-0", "a"), pod_of("b", "b-0", "b")]
    m = mem()
    hot = reading({("ml", "a-0"): [690.0] * 8, ("ml", "b-0"): [690.0] * 8}, 12_640.0)
    for t in (0, 5):  # over the cap, within grace: nothing shed yet, nothing admitted
        plan = cycle(site(pol, [node("a"), node("b")], pods, tjs, jobs, hot), m, NOW + t)
        assert not plan.suspend_jobs
    plan = cycle(site(pol, [node("a"), node("b")], pods, tjs, jobs, hot), m, NOW + 11)
    assert plan.suspend_jobs == [("ml", "a")]
    assert plan.tj_status[("ml", "a")]["reason"] == "MeasuredOverCap"
    # the next cycle still reads the old figure (pods stopping, scrape lag): no second shed
    plan = cycle(site(pol, [node("a"), node("b")], pods, tjs, jobs, hot), m, NOW + 13)
    assert not plan.suspend_jobs


def test_preempted_job_is_reforecast_from_its_own_measurements() -> None:
    m = mem()
    m.samples[("ml", "p")] = [(NOW - 60 + i, 650.0) for i in range(5)]
    t = tj("p", pre=True, status={"phase": "Preempted", "preemptions": 1})
    t["spec"]["gpuWattsHint"] = 300
    pol = site_policy(5_000)
    plan = cycle(
        site(pol, [node("a")], [], [t], {("ml", "p"): job("p", ["a"], suspend=True, active=0)}),
        m,
        NOW,
    )
    st = plan.tj_status[("ml", "p")]
    assert st["forecast"]["gpuWatts"] >= 650.0  # not the 300 W hint it overshot
    assert st["phase"] == "Preempted" and not plan.resume_jobs  # the hint would have fit


def test_preempted_job_holds_power_until_its_pods_are_gone() -> None:
    tjs = [tj("p", pre=True, status={"phase": "Preempted", "preemptions": 1}), tj("w")]
    jobs = {("ml", "p"): job("p", ["a"], suspend=True, active=1)}  # pods still stopping
    pol = site_policy(8_000)
    plan = cycle(site(pol, [node("a"), node("b")], [], tjs, jobs), mem(), NOW)
    # idle 1.6 kW + draining p 4.8 kW: w (4.8 kW) waits, p is neither resumed nor re-preempted
    assert not plan.create_jobs and not plan.resume_jobs and not plan.suspend_jobs
    assert plan.tj_status[("ml", "w")]["reason"] == "WaitingForPower"
    assert ("ml", "p") not in plan.tj_status


def test_a_reason_nobody_waits_for_any_more_is_cleared_from_the_policy_status() -> None:
    """The policy's status is merge-patched: a reason left out would keep its old count."""
    tjs = [tj("run"), tj("wait", created="2026-07-01T00:00:01Z")]
    jobs = {("ml", "run"): job("run", ["a"])}
    pol = site_policy(8_000)
    waiting = cycle(site(pol, [node("a"), node("b")], [], tjs, jobs), mem(), NOW)
    assert waiting.policy_status["waitingByReason"]["WaitingForPower"] == 1
    done = cycle(site(pol, [node("a"), node("b")], [], tjs[:1], jobs), mem(), NOW)
    assert done.policy_status["waitingByReason"]["WaitingForPower"] == 0


def test_an_over_drawer_is_shed_before_a_bystander_and_its_class_learns_the_overdraw() -> None:
    """`liar` (priority 5, not preemptible, class `liar-class` with a 300 W
    hint) was admitted at 300 W a GPU and draws 690 W; `bystander` (priority 0,
    preemptible) was admitted at 700 W and draws 690 W. Measured over the cap
    past the grace, `liar` is suspended, not the bystander; and its class's
    next forecast is what it drew, not the hint, though it never finished."""
    pol = site_policy(12_000, grace_period_s=10.0)
    liar = tj("liar", pre=False, prio=5)
    liar["spec"].update(workloadClass="liar-class", gpuWattsHint=300)
    tjs = [liar, tj("bystander", pre=True, prio=0)]
    jobs = {
        ("ml", "liar"): job("liar", ["a"], gpu_watts=300),
        ("ml", "bystander"): job("bystander", ["b"], gpu_watts=700),
    }
    pods = [pod_of("liar", "liar-0", "a"), pod_of("bystander", "bystander-0", "b")]
    m = mem()
    before = m.forecaster.forecast("liar-class", 300, namespace="ml")
    hot = reading({("ml", "liar-0"): [690.0] * 8, ("ml", "bystander-0"): [690.0] * 8}, 12_640.0)
    for t in (0, 5):
        cycle(site(pol, [node("a"), node("b")], pods, tjs, jobs, hot), m, NOW + t)
    plan = cycle(site(pol, [node("a"), node("b")], pods, tjs, jobs, hot), m, NOW + 11)
    assert plan.suspend_jobs == [("ml", "liar")]
    assert "over-drawers are shed first" in plan.tj_status[("ml", "liar")]["message"]
    after = m.forecaster.forecast("liar-class", 300, namespace="ml")
    assert before.source == "hint" and after.source == "history"
    assert after.gpu_watts >= 690.0 > before.gpu_watts
    # and its namespace's record of hints learns the lie: 690 W drawn on a 300 W claim
    assert m.forecaster.hint_record("ml") == (1, pytest.approx(2.3), 0.0)


def test_a_status_write_keeps_the_parsed_spec_and_a_spec_edit_is_parsed_again(
    monkeypatch,
) -> None:
    """Keyed by resourceVersion, every status write (status is a subresource: a new
    resourceVersion, the same generation) made the next cycle parse that TrainingJob
    again: after a cycle that writes thousands of statuses, thousands of parses. The
    API server moves `generation` with every spec edit and only then, so the parse is
    kept across status writes, and a stale parse is never planned from: each edit of
    the spec (a new generation) is planned from the new spec in its first cycle."""
    from wattcap import controller

    calls: list[int] = []
    real = controller.parse_training_job

    def counted(obj: dict) -> object:
        calls.append(obj["spec"]["gpusPerReplica"])
        return real(obj)

    monkeypatch.setattr(controller, "parse_training_job", counted)
    m = mem()
    obj = tj("a", gpus=2)
    obj["metadata"].update(resourceVersion="7", generation=1)
    ref = ("ml", "a")
    plan = cycle(site(POLICY, [node("n1")], [], [obj], {}), m, NOW)
    for k, rv in enumerate(("8", "9", "10")):  # its status written: new resourceVersions
        obj = {**obj, "status": plan.tj_status[ref], "metadata": {**obj["metadata"]}}
        obj["metadata"]["resourceVersion"] = rv
        plan = cycle(site(POLICY, [node("n1")], [], [obj], {}), m, NOW + 15 * (k + 1))
    assert calls == [2], calls
    assert plan.tj_status[ref]["totalGPUs"] == 2
    for gen, gpus in ((2, 4), (3, 1), (4, 2)):  # edits of the spec, each a new generation
        obj = tj("a", gpus=gpus, status=plan.tj_status[ref])
        obj["metadata"].update(resourceVersion=str(10 + gen), generation=gen)
        plan = cycle(site(POLICY, [node("n1")], [], [obj], {}), m, NOW + 60 * gen)
        assert plan.tj_status[ref]["totalGPUs"] == gpus, (gen, plan.tj_status[ref])
        assert plan.tj_status[ref]["forecast"]["jobWatts"] > 0
    assert calls == [2, 4, 1, 2], calls


def test_an_unchanged_trainingjob_is_parsed_once_and_an_edited_one_again(monkeypatch) -> None:
    """A big site's cycle re-parsed every TrainingJob; an object the API server serves at
    the same generation (and uid) has the same spec, so its parsed spec is kept. An
    edit (a new generation) is planned from the new spec at once."""
    from wattcap import controller

    calls: list[str] = []
    real = controller.parse_training_job

    def counted(obj: dict) -> object:
        calls.append(obj["metadata"]["name"])
        return real(obj)

    monkeypatch.setattr(controller, "parse_training_job", counted)
    m = mem()
    small = tj("a", gpus=2)
    small["metadata"].update(resourceVersion="7", generation=1)
    for k in range(3):
        plan = cycle(site(POLICY, [node("n1")], [], [small], {}), m, NOW + 15 * k)
    assert calls == ["a"], calls
    assert plan.tj_status[("ml", "a")]["totalGPUs"] == 2
    bigger = tj("a", gpus=4)
    bigger["metadata"].update(resourceVersion="8", generation=2)
    plan = cycle(site(POLICY, [node("n1")], [], [bigger], {}), m, NOW + 60)
    assert calls == ["a", "a"]
    assert plan.tj_status[("ml", "a")]["totalGPUs"] == 4
    recreated = tj("a", gpus=1)
    recreated["metadata"].update(resourceVersion="8", generation=1, uid="uid-a-2")
    plan = cycle(site(POLICY, [node("n1")], [], [recreated], {}), m, NOW + 75)
    assert plan.tj_status[("ml", "a")]["totalGPUs"] == 1
