"""What the operator keeps between cycles stays bounded as jobs come and go.

A site runs for months; thousands of TrainingJobs are created, run, finish and
are deleted. Nothing the loop remembers per job (measurements, learned uids,
beliefs) may outlive the TrainingJob, and tenant-chosen strings (workload
class names) may not grow the operator's metric series without end.
"""

from __future__ import annotations

from test_controller import NOW, POLICY, job, mem, node, pod_of, reading, site, tj

from wattcap import handlers, metrics
from wattcap.controller import MAX_FINISHED, ControllerMemory, cycle


def _run_and_finish(m: ControllerMemory, name: str, t: float, finish: bool) -> None:
    """One job of its own: running and measured for two cycles, then (maybe) done."""
    running = {("ml", name): job(name, ["a"], gpu_watts=600)}
    pods = [pod_of(name, f"{name}-0", "a")]
    hot = reading({("ml", f"{name}-0"): [500.0] * 8}, 5_000.0)
    obj = tj(name)
    obj["metadata"]["resourceVersion"] = "1"  # as the API server serves it: its spec is kept
    for dt in (0, 15):
        cycle(site(POLICY, [node("a")], pods, [obj], running, hot), m, t + dt)
    assert ("ml", name) in m.samples  # measured: the test sees real entries
    assert ("ml", name) in m.parsed
    assert ("ml", name) in m.resolved and any(k[0] == ("ml", name) for k in m.times)
    if finish:
        done = job(name, ["a"], active=0, conditions=[{"type": "Complete", "status": "True"}])
        cycle(site(POLICY, [node("a")], [], [tj(name)], {("ml", name): done}, hot), m, t + 30)
        assert f"uid-{name}" in m.observed  # learned from


def test_jobs_that_are_gone_leave_nothing_behind() -> None:
    m = mem()
    for i in range(60):
        # every third one is deleted while running (never finishes)
        _run_and_finish(m, f"j{i}", NOW + 60 * i, finish=i % 3 != 0)
    # all deleted from the cluster: the next cycle forgets them
    cycle(site(POLICY, [node("a")], [], [], {}, reading({}, 800.0)), m, NOW + 60 * 61)
    assert m.observed == set()
    assert m.samples == {}
    assert m.believed == {}
    assert m.parsed == {}
    assert m.resolved == {} and m.times == {}


def test_finished_figures_waiting_for_the_metric_are_capped() -> None:
    """`finished` is drained by the metrics step; if that keeps failing it must not grow."""
    m = mem()
    for i in range(MAX_FINISHED + 40):
        _run_and_finish(m, f"j{i}", NOW + 60 * i, finish=True)
    assert len(m.finished) == MAX_FINISHED


def test_forecast_error_series_are_capped_in_number_of_classes() -> None:
    """A tenant names classes at will: one series each would grow /metrics without end."""
    m = mem()
    state = site(POLICY, [node("a")], [], [], {})
    plan = cycle(state, m, NOW)
    for i in range(500):
        m.finished.append((f"class-{i}", 500.0, 600.0))
        handlers._record(plan, state, m, NOW, 0.1, "site")
    (family,) = metrics.FORECAST_ERROR.collect()
    names = {s.labels["workload_class"] for s in family.samples}
    assert len(names) <= metrics.MAX_CLASS_SERIES
    assert "class-499" in names  # the newest are kept


def test_the_forecast_error_gauge_shows_the_last_finished_job_of_its_class() -> None:
    m = mem()
    state = site(POLICY, [node("a")], [], [], {})
    plan = cycle(state, m, NOW)
    m.finished += [("bert", 500.0, 400.0), ("bert", 300.0, 400.0)]  # in the order they finished
    handlers._record(plan, state, m, NOW, 0.1, "site")
    assert metrics.FORECAST_ERROR.labels("bert", "site")._value.get() == -0.25
    assert m.finished == []


def test_forecast_histories_evicted_for_the_bound_are_counted_in_a_metric() -> None:
    """The forecaster forgets the least recently used made-up classes; /metrics says how many."""
    from prometheus_client import REGISTRY

    from wattcap.forecast import MAX_HISTORIES

    def evicted() -> float:
        got = REGISTRY.get_sample_value(
            "wattcap_forecast_histories_evicted_total", {"site": "bounded"}
        )
        return got or 0.0

    m = mem()
    state = site(POLICY, [node("a")], [], [], {})
    plan = cycle(state, m, NOW)
    before = evicted()
    for i in range(MAX_HISTORIES + 7):
        m.forecaster.observe(f"made-up-{i}", 300.0, 60.0, None, namespace="tenant")
    handlers._record(plan, state, m, NOW, 0.1, "bounded")
    assert evicted() - before == 7
    kept = REGISTRY.get_sample_value("wattcap_forecast_histories", {"site": "bounded"})
    assert kept == MAX_HISTORIES
    handlers._record(plan, state, m, NOW, 0.1, "bounded")
    assert evicted() - before == 7  # counted once
