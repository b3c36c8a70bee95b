"""The forecaster: priors, learning from measurements, and calibration to the target."""

from __future__ import annotations

import random

from wattcap.forecast import Forecaster


def test_new_class_is_forecast_at_tdp_and_hint_is_used_before_history() -> None:
    f = Forecaster(700.0, 70.0)
    assert f.forecast("bert").gpu_watts == 700.0
    assert f.forecast("bert").source == "prior"
    hinted = f.forecast("bert", hint_gpu_watts=450.0)
    assert (hinted.gpu_watts, hinted.source) == (450.0, "hint")
    assert f.forecast("bert", hint_gpu_watts=9000.0).gpu_watts == 700.0  # never above TDP


def test_three_finished_jobs_bring_the_forecast_within_ten_percent() -> None:
    f = Forecaster(700.0, 70.0, coverage=0.95)
    true = 420.0
    for w in (true * 0.99, true * 1.01, true * 1.0):
        f.observe("resnet", w, 3600.0, forecast_gpu_watts=700.0)
    got = f.forecast("resnet")
    assert got.source == "history" and got.samples == 3
    assert true <= got.gpu_watts <= true * 1.10


def test_calibration_moves_the_miss_rate_toward_the_target() -> None:
    """Heavy-tailed truth: a Gaussian bound at 95 % misses too often at first;
    online calibration raises the level until the miss rate nears 5 %."""
    rng = random.Random(7)
    f = Forecaster(700.0, 70.0, coverage=0.95)
    misses = []
    for _ in range(3000):
        fc = f.forecast("llm").gpu_watts
        truth = min(690.0, 400.0 + rng.paretovariate(3.0) * 20.0)
        misses.append(truth > fc)
        f.observe("llm", truth, 600.0, fc)
    late = sum(misses[-1000:]) / 1000
    assert 0.02 <= late <= 0.09, late
    assert f.level > 0.95


def test_running_job_reservation_tightens_from_its_own_measurements_but_never_rises() -> None:
    f = Forecaster(700.0, 70.0)
    admitted = f.forecast("new")
    assert f.running(admitted, [400.0, 401.0]) == admitted  # too few samples yet
    tight = f.running(admitted, [400.0, 405.0, 398.0, 402.0])
    assert tight.source == "measured" and 400.0 < tight.gpu_watts < 450.0
    low = f.forecast("x", hint_gpu_watts=300.0)
    assert f.running(low, [500.0, 510.0, 505.0]) == low


def test_duration_uses_estimate_then_class_history() -> None:
    f = Forecaster(700.0, 70.0)
    assert f.duration("a", None, 3600.0) == 3600.0
    assert f.duration("a", 120.0, 3600.0) == 120.0
    for d in (100.0, 200.0):
        f.observe("a", 300.0, d, None)
    assert f.duration("a", None, 3600.0) == 240.0  # few samples: longest seen, +20 %
    for d in range(1, 11):
        f.observe("b", 300.0, d * 100.0, None)
    assert f.duration("b", None, 3600.0) == 900.0  # p90 of 100..1000


def test_a_job_that_can_be_shed_is_planned_at_a_lower_duration_quantile() -> None:
    """A preemptible job (under a policy that preempts) is shed by a cap
    window, not planned through it: its planned end only places it around
    reserved jobs, so it is planned at the 70th percentile, not the 90th.
    Few samples and a user's estimate are planned as for any job."""
    f = Forecaster(700.0, 70.0)
    for d in range(1, 11):
        f.observe("b", 300.0, d * 100.0, None)
    assert f.duration("b", None, 3600.0, preemptible=True) == 700.0  # p70 of 100..1000
    assert f.duration("b", None, 3600.0, preemptible=False) == 900.0
    assert f.duration("b", 120.0, 3600.0, preemptible=True) == 120.0
    f.observe("c", 300.0, 200.0, None)
    assert f.duration("c", None, 3600.0, preemptible=True) == 240.0  # longest seen, +20 %
    assert f.duration("new", None, 3600.0, preemptible=True) == 3600.0


def test_learned_history_is_bounded_and_keeps_the_classes_in_use() -> None:
    """Class names are a tenant's choice: made-up classes must not grow the
    operator's memory without end. The least recently used (namespace, class)
    histories go first, counted; a class still in use keeps its history."""
    from wattcap.forecast import MAX_HISTORIES

    f = Forecaster(700.0, 70.0)
    for _ in range(3):
        f.observe("llm", 400.0, 600.0, None, namespace="team-a")
    for i in range(3 * MAX_HISTORIES):
        f.observe(f"made-up-{i}", 300.0, 60.0, None, namespace="tenant")
        if i % 100 == 0:
            f.forecast("llm", namespace="team-a")  # in use: kept
    assert f.histories() <= MAX_HISTORIES
    assert f.evicted >= 2 * MAX_HISTORIES
    assert f.forecast("llm", namespace="team-a").source == "history"
    assert f.forecast("made-up-0", namespace="tenant").source == "prior"  # forgotten: TDP
    last = f"made-up-{3 * MAX_HISTORIES - 1}"
    assert f.forecast(last, namespace="tenant").source == "history"
    assert len(f.classes()) <= MAX_HISTORIES
