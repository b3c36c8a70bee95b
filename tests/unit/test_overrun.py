"""A job running past its declared expectedDuration plus the policy's
overrunGrace: stopped by Kubernetes (Stop, the default) or re-planned as
open-ended and shed first if preemptible (Replan)."""

from __future__ import annotations

from test_controller import NOW, job, mem, node, site, site_policy, tj

from wattcap.controller import cycle
from wattcap.model import CapWindow, parse_power_policy


def ready(name: str, node_name: str) -> dict:
    """A Job of `name` running on `node_name`, its pod ready."""
    j = job(name, [node_name])
    j["status"]["ready"] = 1
    return j


def declared(name: str, seconds: int | None, **kw: object) -> dict:
    t = tj(name, **kw)  # type: ignore[arg-type]
    if seconds is not None:
        t["spec"]["expectedDuration"] = seconds
    return t


def test_stop_is_the_default_and_sets_the_jobs_active_deadline() -> None:
    assert parse_power_policy({"capWatts": 1e6}).overrun_action == "Stop"
    pol = site_policy(20_000, overrun_grace_s=300.0)
    tjs = [declared("timed", 3600), declared("open", None)]
    plan = cycle(site(pol, [node("a"), node("b")], [], tjs, {}), mem(), NOW)
    by_name = {j["metadata"]["name"]: j["spec"] for j in plan.create_jobs}
    assert by_name["timed"]["activeDeadlineSeconds"] == 3600 + 300
    assert "activeDeadlineSeconds" not in by_name["open"], "nothing declared: nothing to enforce"


def test_replan_leaves_the_job_running_without_a_deadline() -> None:
    pol = site_policy(20_000, overrun_action="Replan")
    plan = cycle(site(pol, [node("a")], [], [declared("timed", 3600)], {}), mem(), NOW)
    (created,) = plan.create_jobs
    assert "activeDeadlineSeconds" not in created["spec"]


def test_replan_plans_an_overrunning_job_open_ended_and_sheds_it_first() -> None:
    """`late` (priority 5, preemptible) declared 600 s and has run 1,201 s,
    past 600 s + 600 s of grace; `early` (priority 0, preemptible) declared
    nothing. A cap drop needs one job shed: `late` goes, though the usual
    order would shed `early`."""
    t = NOW + 1201  # the Jobs were created at NOW
    drop = (CapWindow(t - 1, t + 3600, 7_000, "dr"),)
    pol = site_policy(20_000, overrun_action="Replan", overrun_grace_s=600.0, cap_schedule=drop)
    tjs = [declared("late", 600, pre=True, prio=5), declared("early", None, pre=True, prio=0)]
    jobs = {("ml", "late"): ready("late", "a"), ("ml", "early"): ready("early", "b")}
    plan = cycle(site(pol, [node("a"), node("b")], [], tjs, jobs), mem(), t)
    assert plan.suspend_jobs == [("ml", "late")]
    # without the drop it runs on, open-ended, and says so
    calm = site_policy(20_000, overrun_action="Replan", overrun_grace_s=600.0)
    m = mem()
    plan = cycle(site(calm, [node("a"), node("b")], [], tjs, jobs), m, t)
    assert not plan.suspend_jobs
    st = plan.tj_status[("ml", "late")]
    assert st["reason"] == "OverranExpectedDuration" and "first to be shed" in st["message"]
    assert plan.tj_status[("ml", "early")].get("reason") != "OverranExpectedDuration"


def test_within_the_grace_nothing_changes() -> None:
    t = NOW + 1199
    pol = site_policy(20_000, overrun_action="Replan", overrun_grace_s=600.0)
    tjs = [declared("late", 600, pre=True, prio=5)]
    plan = cycle(site(pol, [node("a")], [], tjs, {("ml", "late"): ready("late", "a")}), mem(), t)
    assert plan.tj_status[("ml", "late")].get("reason") != "OverranExpectedDuration"


def test_a_declared_job_stopped_by_its_deadline_starts_before_a_window_it_ends_before() -> None:
    """Issue 16: a forecast end near a cap drop is planned through the window
    (forecasts run short), but a declared expectedDuration under Stop is ended
    by its Job's deadline, so it is planned to that deadline. A job declared
    for 50 min, 70 min ahead of a window it cannot fit under, waited forever."""
    drop = (CapWindow(NOW + 7200, NOW + 14_400, 3_000, "dr"),)
    pol = site_policy(20_000, overrun_grace_s=600.0, default_duration_s=3000.0, cap_schedule=drop)
    tjs = [declared("timed", 3000), declared("guessed", None)]
    plan = cycle(site(pol, [node("a"), node("b")], [], tjs, {}), mem(), NOW)
    assert [j["metadata"]["name"] for j in plan.create_jobs] == ["timed"]
    assert plan.tj_status[("ml", "guessed")]["reason"] == "WaitingForCapWindow"


def test_a_running_jobs_own_deadline_bounds_how_far_into_a_window_it_is_planned() -> None:
    """`timed` runs on a, planned to end at NOW + 3600; a window at NOW + 3900
    caps the site at 7.5 kW, where idle (2.4 kW) and `next` (4.8 kW) fit only
    if timed's 4.8 kW is gone. Its Job's activeDeadlineSeconds says by when it
    surely is; without one its end is a forecast and held through the window."""
    drop = (CapWindow(NOW + 3900, NOW + 14_400, 7_500, "dr"),)
    pol = site_policy(20_000, cap_schedule=drop)
    tjs = [declared("timed", 3600), declared("next", 7200, created="2026-07-01T00:00:01Z")]

    def admitted(deadline: int | None) -> list[str]:
        running = ready("timed", "a")
        if deadline is not None:
            running["spec"]["activeDeadlineSeconds"] = deadline
        nodes = [node("a"), node("b"), node("c")]
        plan = cycle(site(pol, nodes, [], tjs, {("ml", "timed"): running}), mem(), NOW)
        return [j["metadata"]["name"] for j in plan.create_jobs]

    assert admitted(3600 + 100) == ["next"]  # stopped 200 s before the drop
    assert admitted(3600 + 600) == []  # may run 300 s into the window
    assert admitted(None) == []  # a forecast end, 300 s before the drop
