"""What a tenant declares cannot move its job ahead or lower its bill (the cycle, no cluster).

A hint is floored at the policy's fraction of TDP, maxDelay at the policy's
minimum, and class history is learned only from the operator's own
measurements, never from TrainingJob status, which is a report anyone with
`trainingjobs/status` could write.
"""

from __future__ import annotations

import json
from typing import Any

from test_controller import NOW, job, mem, node, site, site_policy, tj

from wattcap.controller import ANN_FORECAST, ControllerMemory, cycle
from wattcap.forecast import Forecaster
from wattcap.model import format_time


def with_spec(obj: dict[str, Any], **spec: Any) -> dict[str, Any]:
    obj["spec"].update(spec)
    return obj


def test_a_tiny_hint_is_planned_at_the_policy_floor_not_at_idle() -> None:
    """gpuWattsHint: 0.001 on a fresh class would plan 8 GPUs at idle power."""
    pol = site_policy(800 + 1500)  # idle site 800 W (8 GPUs x 100 W), 1.5 kW to spend
    liar = with_spec(tj("liar"), gpuWattsHint=0.001)
    plan = cycle(site(pol, [node("a")], [], [liar], {}), mem(), NOW)
    assert not plan.create_jobs, "8 GPUs at the 350 W floor add 2 kW > 1.5 kW of headroom"
    st = plan.tj_status[("ml", "liar")]
    assert st["phase"] == "Queued"
    assert st["forecast"]["gpuWatts"] == 350.0  # hintFloorFraction 0.5 x TDP 700 W


def test_the_hint_floor_is_the_policys() -> None:
    pol = site_policy(800 + 5000, hint_floor_fraction=0.25)
    liar = with_spec(tj("liar"), gpuWattsHint=0.001)
    plan = cycle(site(pol, [node("a")], [], [liar], {}), mem(), NOW)
    assert plan.tj_status[("ml", "liar")]["forecast"]["gpuWatts"] == 175.0


def test_max_delay_zero_does_not_jump_the_priority_queue() -> None:
    """maxDelay: 0 would mark a low-priority job as starving at once."""
    pol = site_policy(20_000)
    low = with_spec(tj("low", prio=0, created=format_time(NOW - 60)), maxDelay=0)
    high = tj("high", prio=10, created=format_time(NOW - 30))
    plan = cycle(site(pol, [node("a")], [], [low, high], {}), mem(), NOW)
    assert [j["metadata"]["name"] for j in plan.create_jobs] == ["high"]


def test_max_delay_above_the_policy_minimum_still_counts() -> None:
    pol = site_policy(20_000, min_max_delay_s=30.0)
    low = with_spec(tj("low", prio=0, created=format_time(NOW - 60)), maxDelay=45)
    high = tj("high", prio=10, created=format_time(NOW - 30))
    plan = cycle(site(pol, [node("a")], [], [low, high], {}), mem(), NOW)
    assert [j["metadata"]["name"] for j in plan.create_jobs] == ["low"]


def test_class_history_is_never_rebuilt_from_trainingjob_status() -> None:
    """After a restart, a finished TrainingJob whose status claims 8 W must teach nothing."""
    forged = tj("forged", status={"phase": "Succeeded", "measuredWatts": 8.0})
    m = mem()
    cycle(site(site_policy(20_000), [node("a")], [], [forged], {}), m, NOW)
    assert m.forecaster.classes() == {}
    assert m.forecaster.forecast("default", namespace="ml").source == "prior"


def test_a_finished_job_is_learned_from_own_samples_with_the_jobs_forecast() -> None:
    """Calibration compares with the forecast on the operator's Job, not the status copy."""
    done = job("ok", ["a"], active=0, conditions=[{"type": "Complete", "status": "True"}])
    done["metadata"]["annotations"][ANN_FORECAST] = json.dumps({"gpuWatts": 500.0})
    lying = tj("ok", status={"phase": "Running", "forecast": {"gpuWatts": 10_000.0}})
    m = ControllerMemory(Forecaster(700, 100))
    m.samples[("ml", "ok")] = [(NOW - 100 + i, 600.0) for i in range(5)]
    cycle(site(site_policy(20_000), [node("a")], [], [lying], {("ml", "ok"): done}), m, NOW)
    assert m.forecaster.classes() == {"default": 1}
    assert m.forecaster.outcomes == 1 and m.forecaster.misses == 1  # 600 W > 500 W forecast


def test_history_is_kept_per_namespace() -> None:
    done = job("ok", ["a"], active=0, conditions=[{"type": "Complete", "status": "True"}])
    m = ControllerMemory(Forecaster(700, 100))
    m.samples[("ml", "ok")] = [(NOW - 100 + i, 150.0) for i in range(5)]
    cycle(site(site_policy(20_000), [node("a")], [], [tj("ok")], {("ml", "ok"): done}), m, NOW)
    assert m.forecaster.forecast("default", namespace="ml").source == "history"
    assert m.forecaster.forecast("default", namespace="other").source == "pool"
