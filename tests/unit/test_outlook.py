"""The 24 h outlook the operator publishes: cap schedule against its own plan."""

from __future__ import annotations

from test_controller import NOW, job, mem, node, site_policy, tj

from wattcap.admission import Admit, Decision, QueuedJob, RunningJob, Wait
from wattcap.controller import SiteState, cycle
from wattcap.model import CapWindow, format_time
from wattcap.outlook import MAX_STEPS, outlook


def running(key: str, gpus: int, watts: float, end: float, pre: bool = False) -> RunningJob:
    return RunningJob(key, 1, gpus, watts, 0, pre, NOW - 60, end)


def queued(key: str, gpus: int, watts: float, dur: float, **kw: object) -> QueuedJob:
    return QueuedJob(key, 1, gpus, watts, 0, kw.pop("submitted", NOW - 10), dur, **kw)  # type: ignore[arg-type]


def test_steps_follow_running_ends_admissions_reservations_and_cap_edges() -> None:
    # toy site: PUE 1, 100 W idle GPUs, no margin; idle site 1,600 W (16 GPUs)
    pol = site_policy(20_000, cap_schedule=(CapWindow(NOW + 7200, NOW + 10800, 9_000, "dr"),))
    dec = Decision(cap_watts=20_000, effective_cap_watts=20_000, idle_site_watts=1_600)
    dec.admits = [Admit("ml/new", ("b",), 8 * 300)]
    dec.waits = [Wait("ml/res", "WaitingForGPUs", "x", NOW + 3600)]
    run = [running("ml/run", 8, 600, NOW + 3600, pre=True)]
    q = [queued("ml/new", 8, 400, 1800), queued("ml/res", 8, 500, 3600)]
    got = outlook(dec, pol, run, q, NOW)
    by_at = {s["at"]: s for s in got["steps"]}
    at = lambda dt: format_time(NOW + dt)  # noqa: E731
    assert list(by_at) == [at(0), at(1800), at(3600), at(7200), at(7200 + 3600)]
    # now: idle + running 8 x 500 + admitted 8 x 300
    assert by_at[at(0)]["plannedWatts"] == 1_600 + 4_000 + 2_400
    assert by_at[at(0)]["committedWatts"] == 1_600 + 2_400  # the running job is preemptible
    assert by_at[at(1800)]["plannedWatts"] == 1_600 + 4_000  # the admission ends
    assert by_at[at(3600)]["plannedWatts"] == 1_600 + 3_200  # reservation replaces "run"
    assert by_at[at(7200)]["capWatts"] == 9_000 and by_at[at(7200)]["plannedWatts"] == 1_600
    drop = got["nextCapDrop"]
    assert drop == {"at": at(7200), "capWatts": 9_000, "window": "dr", "headroomWatts": 7_400}


def test_no_window_ahead_means_no_cap_drop() -> None:
    pol = site_policy(20_000)
    dec = Decision(cap_watts=20_000, effective_cap_watts=20_000, idle_site_watts=0)
    got = outlook(dec, pol, [], [], NOW)
    assert got["nextCapDrop"] is None
    assert [s["at"] for s in got["steps"]] == [format_time(NOW)]


def test_past_max_wait_counts_the_policy_default_and_each_jobs_max_delay() -> None:
    pol = site_policy(20_000, max_wait_s=3600)
    dec = Decision(cap_watts=20_000, effective_cap_watts=20_000)
    q = [
        queued("ml/old", 8, 400, 60, submitted=NOW - 4000),
        queued("ml/young", 8, 400, 60, submitted=NOW - 100),
        queued("ml/impatient", 8, 400, 60, submitted=NOW - 200, max_delay_s=100),
    ]
    dec.waits = [Wait(j.key, "WaitingForPower", "x", None) for j in q]
    assert outlook(dec, pol, [], q, NOW)["pastMaxWait"] == 2


def test_a_busy_plan_is_published_as_an_envelope_that_never_looks_safer() -> None:
    pol = site_policy(1e6, cap_schedule=(CapWindow(NOW + 100, NOW + 160, 5_000, "blip"),))
    dec = Decision(cap_watts=1e6, effective_cap_watts=1e6)
    run = [running(f"ml/j{i}", 1, 200 + i, NOW + 60 * (i + 1)) for i in range(400)]
    got = outlook(dec, pol, run, [], NOW)
    steps = got["steps"]
    assert len(steps) == MAX_STEPS
    assert steps[0]["plannedWatts"] >= sum(100 + i for i in range(400)) - 1e-6
    assert min(s["capWatts"] for s in steps) == 5_000  # a one-minute window still shows


def test_the_cycle_publishes_the_outlook_in_policy_status() -> None:
    pol = site_policy(20_000, cap_schedule=(CapWindow(NOW + 600, NOW + 1200, 5_000, "dr"),))
    tjs = [tj("run"), tj("wait", created="2026-07-01T00:00:01Z")]
    jobs = {("ml", "run"): job("run", ["a"])}
    plan = cycle(SiteState(pol, [node("a"), node("b")], [], tjs, jobs), mem(), NOW)
    got = plan.policy_status["outlook"]
    assert got["steps"][0]["at"] == format_time(NOW)
    assert got["nextCapDrop"]["window"] == "dr"


def test_alert_gauges_follow_the_published_outlook() -> None:
    from prometheus_client import REGISTRY

    from wattcap import metrics

    def value(name: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"site": "site"})

    pol = site_policy(20_000, cap_schedule=(CapWindow(NOW + 600, NOW + 1200, 5_000, "dr"),))
    dec = Decision(cap_watts=20_000, effective_cap_watts=20_000, idle_site_watts=1_600)
    q = [queued("ml/old", 8, 400, 60, submitted=NOW - 90_000)]
    dec.waits = [Wait("ml/old", "WaitingForPower", "x", None)]
    metrics.record_outlook({"outlook": outlook(dec, pol, [], q, NOW)}, "site")
    assert value("wattcap_cap_drop_timestamp_seconds") == NOW + 600
    assert value("wattcap_cap_drop_watts") == 5_000
    assert value("wattcap_cap_drop_headroom_watts") == 5_000 - 1_600
    assert value("wattcap_jobs_past_max_wait") == 1
    metrics.record_outlook(
        {"outlook": outlook(Decision(), site_policy(20_000), [], [], NOW)}, "site"
    )
    assert value("wattcap_cap_drop_timestamp_seconds") == float("inf")
    assert value("wattcap_jobs_past_max_wait") == 0


def test_each_cycle_stamps_its_time_for_the_staleness_alert() -> None:
    import time

    from prometheus_client import REGISTRY

    from wattcap import metrics

    before = time.time()
    metrics.record_cycle(Decision(cap_watts=1.0, effective_cap_watts=1.0), 0, 0.01, "site")
    stamp = REGISTRY.get_sample_value("wattcap_last_cycle_timestamp_seconds", {"site": "site"})
    assert stamp >= before
