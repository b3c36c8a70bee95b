"""`wattcap history export`'s pure part: which TrainingJobs become trace rows,
and that the rows are a trace the simulator reads back."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest

from wattcap.history import (
    MAX_STEPS,
    finished_jobs,
    prometheus_power,
    since_seconds,
    site_gpu_power,
    steady_watts,
    trace_rows,
    write_trace,
)
from wattcap.model import ManifestError
from wattcap.sim.trace import load_trace


def tj(name: str, phase: str, created: str, started: str, finished: str, **spec: object) -> dict:
    return {
        "apiVersion": "wattcap.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": "ml", "creationTimestamp": created},
        "spec": {"replicas": 2, "gpusPerReplica": 4, "workloadClass": "bert", **spec},
        "status": {"phase": phase, "startedAt": started, "finishedAt": finished},
    }


JOBS = [
    tj("b", "Succeeded", "2026-07-01T00:10:00Z", "2026-07-01T00:20:00Z", "2026-07-01T01:20:00Z"),
    tj(
        "a",
        "Succeeded",
        "2026-07-01T00:00:00Z",
        "2026-07-01T00:05:00Z",
        "2026-07-01T00:35:00Z",
        priority=9,  # asks for more than its class gives: the status says what it got
        preemptible=True,
        expectedDuration="40m",
        gpuWattsHint=350,
    )
    | {
        "status": {
            "phase": "Succeeded",
            "startedAt": "2026-07-01T00:05:00Z",
            "finishedAt": "2026-07-01T00:35:00Z",
            "priority": 5,
        }
    },
    tj("failed", "Failed", "2026-07-01T00:00:00Z", "2026-07-01T00:01:00Z", "2026-07-01T00:02:00Z"),
    tj("running", "Running", "2026-07-01T00:00:00Z", "2026-07-01T00:01:00Z", ""),
    tj("old", "Succeeded", "2026-06-01T00:00:00Z", "2026-06-01T00:01:00Z", "2026-06-01T00:02:00Z"),
    tj("bad", "Succeeded", "2026-07-01T00:00:00Z", "2026-07-01T00:01:00Z", "2026-07-01T00:09:00Z")
    | {"spec": {"replicas": "many"}},
]
SINCE = 1782864000.0  # 2026-07-01T00:00:00Z


def test_only_succeeded_jobs_in_the_window_with_a_valid_spec_oldest_first() -> None:
    got = finished_jobs(JOBS, SINCE)
    assert [f.name for f in got] == ["a", "b"]
    a = got[0]
    assert (a.replicas, a.gpus_per_replica, a.priority, a.preemptible) == (2, 4, 5, True)
    assert a.finished_s - a.started_s == 1800
    assert a.expected_duration_s == 2400


def test_rows_take_power_from_the_meter_and_leave_out_what_it_never_saw() -> None:
    asked = []

    def power(ns: str, job: str, start: float, end: float) -> float | None:
        asked.append((ns, job, end - start))
        return 412.34 if job == "b" else None

    rows, missing = trace_rows(finished_jobs(JOBS, SINCE), power)
    assert asked == [("ml", "a", 1800.0), ("ml", "b", 3600.0)]
    assert missing == 1
    assert len(rows) == 1
    row = rows[0]
    # second 0 is the first finished job's submission, measured or not
    assert (row["job_id"], row["submit_s"], row["duration_s"]) == ("ml/b", 600.0, 3600.0)
    assert row["gpu_watts"] == 412.3


def test_the_export_is_a_trace_the_simulator_reads(tmp_path: Path) -> None:
    rows, _ = trace_rows(finished_jobs(JOBS, SINCE), lambda *_: 300.0)
    buf = io.StringIO()
    write_trace(rows, buf)
    path = tmp_path / "history.csv"
    path.write_text(buf.getvalue())
    jobs = load_trace(path, nodes=2, gpus_per_node=8)
    assert [(j.job_id, j.submit_s, j.gpu_watts, j.gpu_watts_hint) for j in jobs] == [
        ("ml/a", 0.0, 300.0, 350.0),  # its hint, which the simulator checks as the operator does
        ("ml/b", 600.0, 300.0, None),
    ]


def test_since_reads_days_and_durations() -> None:
    assert since_seconds("7d") == 7 * 86400
    assert since_seconds("12h") == 12 * 3600
    with pytest.raises(ManifestError):
        since_seconds("a week")


# ---------------------------------------------------------------- power at work

IDLE, TDP = 70.0, 700.0


class FakeProm:
    """Answers the export's range query with one series, as Prometheus does."""

    def __init__(self, values: list[tuple[float, float]] | None) -> None:
        self.values = values
        self.asked: list[tuple[str, float, float, str]] = []

    def custom_query_range(self, query, start_time, end_time, step):  # type: ignore[no-untyped-def]
        self.asked.append((query, start_time.timestamp(), end_time.timestamp(), step))
        if self.values is None:
            return []
        return [{"metric": {}, "values": [[t, str(v)] for t, v in self.values]}]


def test_power_is_the_draw_at_work_not_the_idle_wait_ramp_or_tail() -> None:
    # 20 s bound and idle, 10 s ramp, 50 s at 550 W, 20 s idle tail: the mean is 343 W
    series = [(float(t), IDLE) for t in range(20)]
    series += [(20.0 + t, IDLE + (550 - IDLE) * t / 10) for t in range(10)]
    series += [(30.0 + t, 550.0) for t in range(50)]
    series += [(80.0 + t, IDLE) for t in range(20)]
    prom = FakeProm(series)
    got = prometheus_power(prom, IDLE, TDP)("ml", "job-a", 1000.0, 1100.0)
    assert got == 550.0
    query, start, end, step = prom.asked[0]
    assert query == 'avg(DCGM_FI_DEV_POWER_USAGE{namespace="ml",pod=~"job-a-.*"})'
    assert (start, end, step) == (1000.0, 1100.0, "1s")
    # a long run is read at most MAX_STEPS times
    prometheus_power(prom, IDLE, TDP)("ml", "job-a", 0.0, 10 * 86400.0)
    assert prom.asked[1][3] == f"{10 * 86400 // MAX_STEPS}s"


def test_power_unmeasured_is_none_and_a_job_at_idle_drew_idle() -> None:
    assert prometheus_power(FakeProm(None))("ml", "j", 0.0, 60.0) is None
    assert prometheus_power(FakeProm([]))("ml", "j", 0.0, 60.0) is None
    assert steady_watts([(0.0, math.nan)], IDLE, TDP) is None
    assert steady_watts([(0.0, 72.0), (1.0, 74.0)], IDLE, TDP) == 73.0


def test_idle_and_tdp_come_from_the_policy_that_names_the_prometheus() -> None:
    def policy(name: str, url: str, idle: float, tdp: float) -> dict:
        return {
            "metadata": {"name": name},
            "spec": {
                "capWatts": 100000,
                "gpuIdleWatts": idle,
                "gpuTdpWatts": tdp,
                "prometheus": {"url": url},
            },
        }

    policies = [policy("a", "http://a", 60, 400), policy("b", "http://b", 90, 1000)]
    assert site_gpu_power(policies, "http://b") == (90, 1000)
    assert site_gpu_power(policies, "http://other") == (60, 400)
    assert site_gpu_power([{"spec": {"capWatts": "lots"}}], None) == (70.0, 700.0)
