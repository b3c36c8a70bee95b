"""Manifests parse into typed objects, and bad ones say which field and why."""

from __future__ import annotations

import re
from bisect import bisect_right

import pytest

from wattcap.model import (
    CapWindow,
    ManifestError,
    PowerPolicy,
    cap_steps,
    parse_duration,
    parse_power_policy,
    parse_training_job,
)

POLICY = {
    "apiVersion": "wattcap.io/v1alpha1",
    "kind": "PowerPolicy",
    "metadata": {"name": "site"},
    "spec": {
        "capWatts": 500_000,
        "capSchedule": [
            {
                "name": "dr",
                "start": "2026-07-02T14:00:00Z",
                "end": "2026-07-02T16:00:00Z",
                "capWatts": 300_000,
            },
        ],
        "controlPeriod": "30s",
    },
}


def test_policy_parses_with_defaults_and_cap_schedule() -> None:
    p = parse_power_policy(POLICY)
    assert p.cap_watts == 500_000 and p.pue == 1.2 and p.control_period_s == 30.0
    (w,) = p.cap_schedule
    assert p.cap_at(w.start_s - 1) == 500_000
    assert p.cap_at(w.start_s) == 300_000
    assert p.cap_at(w.end_s) == 500_000
    assert p.cap_changes(w.start_s - 10, w.end_s + 10) == [w.start_s, w.end_s]


def test_cap_steps_give_the_cap_at_every_time() -> None:
    """The step table the core and the simulator look caps up in agrees with
    cap_at everywhere: overlapping windows, shared edges, edges themselves."""
    windows = (
        CapWindow(100.0, 400.0, 80.0, "a"),
        CapWindow(200.0, 300.0, 60.0, "b"),  # inside a, lower
        CapWindow(300.0, 500.0, 90.0, "c"),  # starts where b ends, overlaps a
        CapWindow(600.0, 700.0, 120.0, "above"),  # above the base cap: no effect
    )
    p = PowerPolicy(cap_watts=100.0, cap_schedule=windows)
    edges, caps = cap_steps(p.cap_watts, p.cap_schedule)
    for t in [0.0, 99.9, *(e + d for e in edges for d in (-0.5, 0.0, 0.5)), 1e9]:
        assert caps[bisect_right(edges, t)] == p.cap_at(t), t
    assert cap_steps(100.0, ()) == ((), (100.0,))


@pytest.mark.parametrize(
    ("patch", "field", "why"),
    [
        ({"capWatts": -1}, "spec.capWatts", "must be > 0"),
        ({"capWatts": "lots"}, "spec.capWatts", "expected a number"),
        ({"pue": 0.5}, "spec.pue", "must be >= 1"),
        ({"ordering": "Random"}, "spec.ordering", "must be one of"),
        ({"gpuTdpWatts": 50}, "spec.gpuTdpWatts", "must be >= gpuIdleWatts"),
        ({"controlPeriod": "soon"}, "spec.controlPeriod", "duration"),
        (
            {
                "capSchedule": [
                    {"start": "2026-07-02T16:00:00Z", "end": "2026-07-02T14:00:00Z", "capWatts": 1}
                ]
            },
            "spec.capSchedule[0].end",
            "must be after start",
        ),
        (
            {"capSchedule": [{"start": "tomorrow", "end": "2026-07-02T14:00:00Z", "capWatts": 1}]},
            "spec.capSchedule[0].start",
            "RFC 3339",
        ),
        (
            {"site": {"nodes": 100, "gpusPerNode": 8}, "capWatts": 1000},
            "spec.capWatts",
            "below the site's idle power",
        ),
    ],
)
def test_bad_policy_names_the_field(patch: dict, field: str, why: str) -> None:
    bad = {**POLICY, "spec": {**POLICY["spec"], **patch}}
    with pytest.raises(ManifestError) as err:
        parse_power_policy(bad)
    assert err.value.field == field
    assert why in str(err.value)


def test_training_job_parses_and_refuses_bad_sizes() -> None:
    obj = {
        "apiVersion": "wattcap.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "bert", "namespace": "ml"},
        "spec": {
            "replicas": 2,
            "gpusPerReplica": 8,
            "workloadClass": "bert-large",
            "expectedDuration": "1h30m",
            "preemptible": True,
        },
    }
    tj = parse_training_job(obj)
    assert (tj.key, tj.gpus, tj.expected_duration_s, tj.preemptible) == (
        "ml/bert",
        16,
        5400.0,
        True,
    )
    with pytest.raises(ManifestError, match=r"spec.gpusPerReplica: must be >= 1"):
        parse_training_job({**obj, "spec": {**obj["spec"], "gpusPerReplica": -2}})
    with pytest.raises(ManifestError, match=r"spec.replicas: must be >= 1"):
        parse_training_job({**obj, "spec": {**obj["spec"], "replicas": 0}})
    with pytest.raises(ManifestError, match=r"kind: expected TrainingJob"):
        parse_training_job({**obj, "kind": "Job"})


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("1h30m", 5400), ("2m", 120), (45, 45), ("0.5h", 1800)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text, "x") == seconds


def test_format_time_writes_four_digit_years_as_rfc_3339_and_the_schema_require() -> None:
    """strftime's %Y writes year 1 as "1" on Linux: a window the fuzz drew
    from year 0001 came back as "1-01-01T01:25:44Z", which the schema refuses."""
    from wattcap.model import WINDOW_TIME_PATTERN, format_time, parse_time

    for stamp in ("0001-01-02T00:00:00Z", "0999-12-31T23:59:59Z", "2026-07-01T14:00:00Z"):
        out = format_time(parse_time(stamp, "t"))
        assert out == stamp and re.match(WINDOW_TIME_PATTERN, out), out
