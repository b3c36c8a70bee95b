"""The simulated instruments: readings have the stated noise, and a job's
samples are one per tick it ran through."""

from __future__ import annotations

import math

import numpy as np
from conftest import interpreted
from hypothesis import given, settings
from hypothesis import strategies as st

from wattcap.model import PowerPolicy
from wattcap.sim import meter_math
from wattcap.sim.engine import SimConfig, _Engine
from wattcap.sim.meter import JobSamples, Meter
from wattcap.sim.schedulers import make_scheduler
from wattcap.sim.trace import TraceJob

T0 = 1_782_864_000.0


def meter(seed: int = 0) -> Meter:
    return Meter(seed, 0.03, 0.002, 1.2, 70.0, 700.0)


def test_site_readings_spread_as_the_jobs_and_the_meter_add_up() -> None:
    m = meter()
    jobs = [(8, 600.0), (4, 300.0), (16, 450.0)]  # (GPUs, true watts per GPU)
    site = 100_000.0
    sd = m.site_sd(site, sum((g * w) ** 2 for g, w in jobs))
    expected = math.sqrt(sum((1.2 * 0.03 * g * w) ** 2 for g, w in jobs) + (0.002 * site) ** 2)
    assert math.isclose(sd, expected)
    r = m.site_readings(site, sd, 50_000)
    assert abs(r.mean() - site) < 4 * sd / math.sqrt(r.size)
    assert abs(r.std() / sd - 1) < 0.02


def test_job_samples_are_noisy_truth_clipped_to_the_gpu_range() -> None:
    m = meter()
    s = m.job_samples(500.0, 20_000)
    assert abs(s.mean() - 500.0) < 4 * 15.0 / math.sqrt(s.size)
    assert abs(s.std() / 15.0 - 1) < 0.03
    near_tdp = m.job_samples(695.0, 1000)
    assert near_tdp.max() == 700.0 and near_tdp.min() >= 70.0


def test_same_seed_same_readings() -> None:
    a, b = meter(3), meter(3)
    assert np.array_equal(a.site_readings(1e5, 50.0, 7), b.site_readings(1e5, 50.0, 7))
    assert np.array_equal(a.job_samples(400.0, 70_000), b.job_samples(400.0, 70_000))


def test_site_readings_are_the_stream_in_order_however_drawn() -> None:
    """Readings drawn in a block and partly given back (the replay stops at the
    first tick that needs a cycle) continue where the used ones ended: the
    stream is spent as if read tick by tick."""
    a, b = meter(6), meter(6)
    block = a.site_readings(1e5, 50.0, 10)
    a.unread(6)  # only 4 were used
    rest = a.site_readings(1e5, 50.0, 8)
    one_by_one = np.concatenate([b.site_readings(1e5, 50.0, 1) for _ in range(12)])
    assert np.array_equal(np.concatenate((block[:4], rest)), one_by_one)


def test_a_job_has_one_sample_per_tick_it_ran_through() -> None:
    """A job has read only as many samples as the meter's ticks saw: started
    at 10 s and stopped at 100 s, it ran through ticks 15 .. 90."""
    policy = PowerPolicy(cap_watts=1e6)
    jobs = [TraceJob("a", 0.0, 1000.0, 1, 4, "llm", 0, 600.0)]
    eng = _Engine(jobs, policy, make_scheduler("wattcap", policy), SimConfig(1, 8, T0))
    (a,) = eng.jobs
    eng._start(a, 10.0, ("node-0",), eng.sched.forecast(a.view))
    assert eng._measure_ticks(1, 6) == (6, False)
    assert a.meas_n == 4  # drawn up to its first re-forecast, at its fourth tick
    eng._stop(a, 100.0)
    assert a.meas_n == 6
    assert a.samples is not None
    n, mean, _ = a.samples.moments(0, a.meas_n)
    assert n == 6 and 600.0 * 0.85 < mean < 600.0 * 1.15


def test_window_moments_are_those_of_the_samples() -> None:
    """A re-forecast reads count, mean and variance summed as deviations from
    truth: they must be the window's own, also after the block grew for a
    resumed run."""
    js = JobSamples(meter(5), 450.0, 40)
    first = js.x.copy()
    js.ensure(100)  # runs through more ticks than its block had
    assert js.x.size >= 100 and np.array_equal(js.x[:40], first)
    for lo, hi in ((0, 1), (0, 4), (3, 19), (36, 100), (0, 100)):
        n, mean, var = js.moments(lo, hi)
        window = js.x[lo:hi]
        assert n == window.size
        assert math.isclose(mean, window.mean(), rel_tol=1e-12)
        expected = window.var(ddof=1) if n > 1 else 0.0
        assert math.isclose(var, expected, rel_tol=1e-9, abs_tol=1e-9)
    assert math.isclose(js.mean(100), js.x[:100].mean(), rel_tol=1e-12)


PY_METER_MATH = interpreted(meter_math)


def test_the_meter_math_in_use_is_compiled() -> None:
    assert meter_math.COMPILED, (
        "wattcap.sim.meter_math runs as plain Python: reinstall with a C compiler "
        "(pip install -e .) to build it"
    )


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(-6.0, 6.0), min_size=1, max_size=300),
    st.floats(70.0, 700.0),
    st.data(),
)
def test_compiled_and_interpreted_meter_math_agree_to_the_bit(z, truth, data) -> None:
    py = PY_METER_MATH
    z = np.array(z)
    x = meter_math.exporter_samples(z, 0.03, truth, 70.0, 700.0)
    assert np.array_equal(x, py.exporter_samples(z, 0.03, truth, 70.0, 700.0))
    # numpy's own transform, op for op
    want = z * 0.03
    want += 1.0
    want *= truth
    assert np.array_equal(x, np.minimum(np.maximum(want, 70.0), 700.0))
    lo = data.draw(st.integers(0, x.size - 1))
    hi = data.draw(st.integers(lo + 1, x.size))
    assert meter_math.window_moments(x, lo, hi, truth) == py.window_moments(x, lo, hi, truth)
    assert meter_math.prefix_mean(x, hi) == py.prefix_mean(x, hi)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([69.0, 400.0, 410.0, 411.0, 700.0]), max_size=60),
    st.sampled_from([400.0, 410.0]),
    st.data(),
)
def test_first_above_finds_what_numpy_finds(x, level, data) -> None:
    """The replay's over-drawer check (`_Engine._first_overdraw`) asks it
    where it asked numpy: the first sample above a level in a window."""
    x = np.array(x, dtype=float)
    lo = data.draw(st.integers(0, x.size))
    hi = data.draw(st.integers(lo, x.size))
    above = x[lo:hi] > level
    want = int(above.argmax()) if above.any() else -1
    assert meter_math.first_above(x, lo, hi, level) == want
    assert PY_METER_MATH.first_above(x, lo, hi, level) == want
