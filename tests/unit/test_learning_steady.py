"""A finished job teaches its class its steady draw, not one diluted by idle readings.

The exporter labels a GPU with its pod from the moment the pod holds it, so
a job's samples start with readings at the idle level (the pod bound but
its work not started, then the ramp) and can end with more (its work done,
its pod not yet gone). Their mean would teach the class less than the job
draws while it works, and the next job of the class would be admitted low.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_controller import NOW, job, node, site, site_policy, tj

from wattcap.controller import ControllerMemory, cycle
from wattcap.forecast import Forecaster

IDLE = 100.0  # site_policy's idle GPU power (TDP 700 W)


def finished(samples: list[tuple[float, float]]) -> tuple[list[float], dict[str, Any]]:
    """Run one cycle over a succeeded 8-GPU job with these samples; what its class
    was taught (per-GPU watts, one entry per observe) and the job's status."""
    done = job("ok", ["a"], active=0, conditions=[{"type": "Complete", "status": "True"}])
    m = ControllerMemory(Forecaster(700, IDLE))
    m.samples[("ml", "ok")] = samples
    taught: list[float] = []
    real = m.forecaster.observe

    def spy(cls: str, watts: float, *a: Any, **kw: Any) -> None:
        taught.append(watts)
        real(cls, watts, *a, **kw)

    m.forecaster.observe = spy  # type: ignore[method-assign]
    state = site(site_policy(20_000), [node("a")], [], [tj("ok")], {("ml", "ok"): done})
    plan = cycle(state, m, NOW)
    return taught, plan.tj_status[("ml", "ok")]


def test_idle_warm_up_and_tail_do_not_dilute_what_the_class_learns() -> None:
    t0 = NOW - 600
    samples = [(t0 + 5.0 * k, IDLE) for k in range(5)]  # bound, work not started
    samples += [(t0 + 25.0 + 5.0 * k, w) for k, w in enumerate((250.0, 400.0, 550.0))]  # ramp
    samples += [(t0 + 40.0 + 5.0 * k, 600.0 + (10.0 if k % 2 else -10.0)) for k in range(60)]
    samples += [(t0 + 340.0 + 5.0 * k, IDLE) for k in range(8)]  # work done, pod not gone
    taught, status = finished(samples)
    assert taught == [pytest.approx(600.0, abs=2.0)], "the steady mean, not the diluted one"
    assert status["measuredWatts"] == pytest.approx(8 * 600.0, abs=16.0)


def test_a_job_too_short_for_its_warm_up_still_teaches_its_working_draw() -> None:
    """The integration test's 25 s jobs: a sample or two at idle, then the work."""
    t0 = NOW - 60
    samples = [(t0, IDLE), (t0 + 5, IDLE)]
    samples += [(t0 + 10.0 + 5.0 * k, 400.0) for k in range(5)]
    samples += [(t0 + 35.0, IDLE)]
    taught, _ = finished(samples)
    assert taught == [pytest.approx(400.0)]


def test_a_job_that_drew_idle_all_along_teaches_idle() -> None:
    """Nothing above the idle level: that is its draw, not a warm-up to drop."""
    taught, _ = finished([(NOW - 100 + 5.0 * k, IDLE + 3.0) for k in range(20)])
    assert taught == [pytest.approx(IDLE + 3.0)]


def test_idle_dips_while_it_works_are_part_of_its_draw() -> None:
    """A checkpoint dips to idle mid-run: that is steady behaviour and stays in the mean."""
    t0 = NOW - 600
    samples = [(t0 + 5.0 * k, 500.0) for k in range(40)]
    samples += [(t0 + 200.0 + 5.0 * k, IDLE) for k in range(10)]
    samples += [(t0 + 250.0 + 5.0 * k, 500.0) for k in range(40)]
    taught, _ = finished(samples)
    steady = [v for t, v in samples if t >= t0 + 30.0]
    assert taught == [pytest.approx(sum(steady) / len(steady))]


def test_a_finished_hinted_job_checks_its_namespaces_hint() -> None:
    """What it drew over what it claimed goes to its namespace's record (the
    operator's own samples, never its status), once however many cycles see it."""
    done = job("ok", ["a"], active=0, conditions=[{"type": "Complete", "status": "True"}])
    hinted = tj("ok")
    hinted["spec"]["gpuWattsHint"] = 400
    m = ControllerMemory(Forecaster(700, IDLE))
    m.samples[("ml", "ok")] = [(NOW - 600 + 5.0 * k, 600.0) for k in range(60)]
    state = site(site_policy(20_000), [node("a")], [], [hinted], {("ml", "ok"): done})
    for t in (0, 2):
        cycle(state, m, NOW + t)
    assert m.forecaster.hint_record("ml") == (1, pytest.approx(1.5), 0.0)
    assert m.forecaster.hint_record("other") is None
