"""`wattcap history export`'s pure part: which TrainingJobs become trace rows,
and that the rows are a trace the simulator reads back."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from wattcap.history import finished_jobs, since_seconds, trace_rows, write_trace
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
    assert [(j.job_id, j.submit_s, j.gpu_watts) for j in jobs] == [
        ("ml/a", 0.0, 300.0),
        ("ml/b", 600.0, 300.0),
    ]


def test_since_reads_days_and_durations() -> None:
    assert since_seconds("7d") == 7 * 86400
    assert since_seconds("12h") == 12 * 3600
    with pytest.raises(ManifestError):
        since_seconds("a week")
