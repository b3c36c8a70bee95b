"""Per-site metrics: two sites in one operator report apart, and a gone site's series go."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from wattcap import metrics
from wattcap.admission import Decision, Wait


def value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_two_sites_report_their_own_cap_queue_and_unmanaged_power() -> None:
    east = Decision(cap_watts=15_000, effective_cap_watts=15_000, unmanaged_watts=300)
    east.waits = [Wait("ml/a", "WaitingForPower", "x", None)]
    west = Decision(cap_watts=10_000, effective_cap_watts=10_000)
    metrics.record_cycle(east, 2, 0.01, "east")
    metrics.record_cycle(west, 1, 0.01, "west")
    metrics.PROMETHEUS_CONFIGURED.labels("east").set(1)
    metrics.PROMETHEUS_CONFIGURED.labels("west").set(0)
    assert value("wattcap_cap_watts", site="east") == 15_000
    assert value("wattcap_cap_watts", site="west") == 10_000
    assert value("wattcap_unmanaged_watts", site="east") == 300
    assert value("wattcap_unmanaged_watts", site="west") == 0
    assert value("wattcap_queue_jobs", reason="WaitingForPower", site="east") == 1
    assert value("wattcap_running_jobs", site="west") == 1
    assert value("wattcap_prometheus_configured", site="west") == 0


def test_a_deleted_sites_series_are_dropped_and_the_others_kept() -> None:
    metrics.record_cycle(Decision(cap_watts=1.0, effective_cap_watts=1.0), 0, 0.01, "gone")
    metrics.record_cycle(Decision(cap_watts=2.0, effective_cap_watts=2.0), 0, 0.01, "kept")
    metrics.count_error("read", "OSError", "gone")
    metrics.forget_site("gone")
    assert value("wattcap_cap_watts", site="gone") is None
    assert value("wattcap_errors_total", step="read", kind="OSError", site="gone") is None
    assert value("wattcap_cycle_duration_seconds_count", site="gone") is None
    assert value("wattcap_cap_watts", site="kept") == 2.0


def test_forget_site_uses_only_the_public_api_of_prometheus_client() -> None:
    """Private attributes (`_metrics`, `_labelnames`, `_lock`) change between
    releases without notice; removing a site's series needs none of them."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(metrics.forget_site).lstrip())
    private = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_")
    }
    assert private == set()


def test_status_refreshes_left_for_later_cycles_are_reported_per_site() -> None:
    """`StatusWrites.deferred`, the due refreshes a cycle's share left for later,
    shows how far behind a site's waiting jobs' text is; a gone site's goes."""
    from kubernetes import client

    from wattcap import handlers
    from wattcap.cluster import Cluster
    from wattcap.controller import Plan, SiteState
    from wattcap.model import PowerPolicy

    class Statuses:
        def patch_namespaced_custom_object_status(self, *_: Any, **__: Any) -> None:
            pass

    def status(message: str) -> dict[str, Any]:
        return {"phase": "Queued", "reason": "WaitingForPower", "message": message}

    refs = [("ns", f"j-{i}") for i in range(20)]
    tjs = [{"metadata": {"namespace": ns, "name": n}, "status": status("old")} for ns, n in refs]
    state = SiteState(PowerPolicy(cap_watts=1e5), [], [], tjs, {})
    cluster = Cluster(client.ApiClient())
    cluster.custom = Statuses()  # type: ignore[assignment]
    cluster.status_writes.refreshes_per_cycle = 16
    handlers._apply_status(cluster, Plan(tj_status={r: status("new") for r in refs}), state, "east")
    assert value("wattcap_status_refreshes_deferred", site="east") == 4
    handlers._apply_status(cluster, Plan(), state, "east")
    assert value("wattcap_status_refreshes_deferred", site="east") == 0
    # a burst of new waiting jobs: first answers beyond their share, reported too
    cluster.status_writes.firsts_per_cycle = 5
    new = {("ns", f"new-{i}"): status("short") for i in range(7)}
    handlers._apply_status(cluster, Plan(tj_status=new), state, "east")
    assert value("wattcap_status_first_answers_deferred", site="east") == 2
    metrics.forget_site("east")
    assert value("wattcap_status_refreshes_deferred", site="east") is None
    assert value("wattcap_status_first_answers_deferred", site="east") is None


def test_writes_that_can_wait_stop_at_the_cycles_time_after_one_chunk() -> None:
    """A slow API server in a burst: past `until`, new waiting jobs' first answers
    stop after their first chunk (progress every cycle) and are counted as left
    for later; an admission's status goes out whatever the time."""
    import time

    from kubernetes import client

    from wattcap import handlers
    from wattcap.cluster import CHUNK, Cluster
    from wattcap.controller import Plan, SiteState
    from wattcap.model import PowerPolicy

    made: list[str] = []

    class Statuses:  # FAKE API: records each write; `until` is already past, no slowness needed
        def patch_namespaced_custom_object_status(self, *a: Any, **__: Any) -> None:
            made.append(a[4])

        def patch_cluster_custom_object_status(self, *a: Any, **__: Any) -> None:
            made.append(f"policy {a[3]}")

    class Events:  # FAKE API, as above
        def create_namespaced_event(self, ns: str, body: Any, **__: Any) -> None:
            made.append(f"event {body.involved_object.name}")

    def waiting(message: str) -> dict[str, Any]:
        return {"phase": "Queued", "reason": "WaitingForPower", "message": message}

    new = {("ns", f"new-{i:02d}"): waiting("short") for i in range(40)}
    admitted = {("ns", "adm"): {"phase": "Admitted", "reason": "Admitted", "message": "go"}}
    state = SiteState(PowerPolicy(cap_watts=1e5), [], [], [], {})
    cluster = Cluster(client.ApiClient())
    cluster.custom = Statuses()  # type: ignore[assignment]
    cluster.core = Events()  # type: ignore[assignment]
    adm = {"metadata": {"namespace": "ns", "name": "adm"}}
    plan = Plan(
        tj_status={**admitted, **new},
        events=[(adm, "Normal", "Admitted", "go")],
        policy_status={"queuedJobs": 40},
    )
    handlers._apply_status(cluster, plan, state, "west", until=time.monotonic())
    # what must go out goes first, so the budget bounds the cycle's tail
    assert made[:3] == ["adm", "event adm", "policy west"]
    del made[1:3]
    assert made[1:] == [f"new-{i:02d}" for i in range(CHUNK)]
    assert value("wattcap_status_first_answers_deferred", site="west") == 40 - CHUNK
    assert cluster.status_sent == (1, CHUNK)  # what a slow cycle's log line reports
    # the next cycle, with time left, answers the rest
    tjs = [{"metadata": {"namespace": "ns", "name": n}, "status": new[("ns", n)]} for n in made[1:]]
    state = SiteState(PowerPolicy(cap_watts=1e5), [], [], tjs, {})
    handlers._apply_status(cluster, Plan(tj_status=new), state, "west")
    assert sorted(made[1:]) == sorted(n for _, n in new)
    assert value("wattcap_status_first_answers_deferred", site="west") == 0
    assert cluster.status_sent == (0, 40 - CHUNK)
    metrics.forget_site("west")


def test_a_slow_cycle_says_where_its_time_went(caplog: Any) -> None:
    """One line per slow cycle: each step's seconds and the writes that took them,
    so a slow API server is told from a big site without a profiler."""
    import logging

    from kubernetes import client

    from wattcap import handlers
    from wattcap.cluster import Cluster
    from wattcap.controller import Plan

    cluster = Cluster(client.ApiClient())
    cluster.status_sent = (40, 16)
    job = {"metadata": {"namespace": "ns", "name": "a"}}
    plan = Plan(create_jobs=[job, job], paced=7, events=[(job, "Normal", "Admitted", "go")] * 2)
    with caplog.at_level(logging.INFO, logger="wattcap"):
        handlers._log_slow(plan, cluster, 2.5, 0.25, 0.5, 1.5)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == (
        "cycle took 2.50 s: read 0.25 s, decide 0.25 s, Jobs 1.50 s (2 created, 0 resumed, "
        "0 deleted, 7 paced), statuses and Events 0.50 s (40 of substance, 16 that could "
        "wait, 2 Events)"
    )


def test_the_admission_pace_follows_the_cycles_writes() -> None:
    """Every write of the cycle counts toward the API server's rate: Jobs,
    statuses (those of substance and those that could wait), Events and the
    policy's status; the pace is reported per site and gone with it."""
    from kubernetes import client

    from wattcap import handlers
    from wattcap.cluster import Cluster
    from wattcap.controller import ControllerMemory, Plan, next_admit_pace
    from wattcap.forecast import Forecaster

    cluster = Cluster(client.ApiClient())
    cluster.status_sent = (40, 16)
    job = {"metadata": {"namespace": "ns", "name": "a"}}
    plan = Plan(
        create_jobs=[job] * 32,
        events=[(job, "Normal", "Admitted", "go")] * 32,
        policy_status={"queuedJobs": 1},
    )
    mem = ControllerMemory(Forecaster(700, 100))
    handlers._learn_pace(mem, plan, cluster, 1.0, "north")
    assert mem.admit_pace == next_admit_pace(32, 32 + 56 + 32 + 1, 1.0) != 32
    assert value("wattcap_admission_pace", site="north") == mem.admit_pace
    metrics.forget_site("north")
    assert value("wattcap_admission_pace", site="north") is None
