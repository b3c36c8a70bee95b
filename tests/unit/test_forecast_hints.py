"""Checked hints (forecast.py): a namespace's hints become data once its
jobs' draws have been compared with them, and only as far as they were right.

The class is the prior, the hint read through the namespace's record one
reading of the job's own draw (`forecast.hinted`), counted only where the
record is tighter than the class. Each test states what a tenant could try:
an honest record narrows a plan, a steady factor is read through, a
scattered record or one lie gives the class back, and nothing of it crosses
namespaces or beats another namespace's measurements.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wattcap.forecast import HINT_MIN_SAMPLES, MAX_HISTORIES, Forecaster, hinted

TDP, IDLE = 700.0, 70.0


def _site(seed: int = 0, ratios: list[float] | None = None, ns: str = "a") -> Forecaster:
    """A class `llm` of 30 finished jobs spread 25 % around 400 W, and a
    namespace record of checked hints (drawn / hinted) from other classes."""
    rng = np.random.default_rng(seed)
    f = Forecaster(TDP, IDLE, coverage=0.95)
    for w in 400.0 * (1.0 + 0.25 * rng.standard_normal(30)):
        f.observe("llm", float(np.clip(w, IDLE, TDP)), 3600.0, None, namespace=ns)
    for k, r in enumerate(ratios or []):
        f.observe(f"other-{k % 3}", 300.0 * r, 3600.0, None, namespace=ns, hint_gpu_watts=300.0)
    return f


def _honest(n: int = 12, error: float = 0.05) -> list[float]:
    return (1.0 + error * np.random.default_rng(1).standard_normal(n)).tolist()


def test_an_honest_record_narrows_a_hinted_jobs_plan_toward_its_hint() -> None:
    f = _site(ratios=_honest())
    plain = f.distribution("llm", namespace="a")
    told = f.distribution("llm", 550.0, namespace="a")
    assert plain.source == "history" and told.source == "hinted"
    # between the class and the hint, much nearer the hint (5 % against 25 %)
    assert plain.gpu_watts < told.gpu_watts < 550.0 and told.gpu_watts > 500.0
    assert told.spread_gpu_watts < 0.5 * plain.spread_gpu_watts
    assert told.bound_gpu_watts is not None and told.bound_gpu_watts > told.gpu_watts
    # a low hint lowers the plan as much: the record, not the direction, decides
    low = f.distribution("llm", 250.0, namespace="a")
    assert 250.0 < low.gpu_watts < 300.0


def test_a_steady_factor_is_read_through_not_believed() -> None:
    """A tenant whose hints are a third of what its jobs draw gets plans at
    what they draw: the record's mean ratio is the factor."""
    f = _site(ratios=[3.0 * r for r in _honest()])
    told = f.distribution("llm", 150.0, namespace="a")
    assert told.source == "hinted"
    assert 400.0 < told.gpu_watts < 470.0  # 3 x 150 W, pulled a little toward the class


def test_a_scattered_record_gives_the_class_back() -> None:
    scattered = np.random.default_rng(2).uniform(0.3, 3.0, 40).tolist()
    f = _site(ratios=scattered)
    plain = f.distribution("llm", namespace="a")
    told = f.distribution("llm", 150.0, namespace="a")
    assert told == plain  # it scatters more than the class: the hint counts for nothing


def test_one_lie_after_an_honest_record_spoils_the_record() -> None:
    """Build trust with honest hints, then claim 100 W for a job that draws
    700 W: once that job is learned (finished, or shed over-drawing, which
    passes its hint too), the record scatters past the class, and the next
    hint counts for nothing."""
    f = _site(ratios=_honest())
    cls = f.distribution("llm", namespace="a")
    band = cls.calibrated_gpu_watts - cls.gpu_watts  # the class's own margin
    before = f.distribution("llm", 100.0, namespace="a")
    # the lie was believed once, but no further than the class's own band
    assert before.gpu_watts == pytest.approx(cls.gpu_watts - band)
    f.observe("llm", 700.0, None, before.calibrated_gpu_watts, namespace="a", hint_gpu_watts=100.0)
    plain = f.distribution("llm", namespace="a")
    after = f.distribution("llm", 100.0, namespace="a")
    assert after == plain


def test_hints_are_data_only_from_enough_checks() -> None:
    few = _site(ratios=_honest(HINT_MIN_SAMPLES - 1))
    assert few.distribution("llm", 550.0, namespace="a") == few.distribution("llm", namespace="a")
    enough = _site(ratios=_honest(HINT_MIN_SAMPLES))
    assert enough.distribution("llm", 550.0, namespace="a").source == "hinted"


def test_a_record_is_its_namespaces_own() -> None:
    f = _site(ratios=_honest(), ns="a")
    for w in (380.0, 420.0, 400.0, 450.0, 350.0, 410.0):
        f.observe("llm", w, 3600.0, None, namespace="b")
    assert f.distribution("llm", 550.0, namespace="b").source == "history"
    assert f.hint_record("a") is not None and f.hint_record("b") is None


def test_another_namespaces_measurements_still_only_raise() -> None:
    """The pool's guarantee holds: where another namespace measured the class
    higher, the plan stays the raised bound, hint or not."""
    f = _site(ratios=_honest(), ns="a")
    for w in (650.0, 660.0, 640.0, 655.0, 645.0, 650.0):
        f.observe("llm", w, 3600.0, None, namespace="b")
    raised = f.distribution("llm", namespace="a")
    assert raised.source == "history" and raised.spread_gpu_watts == 0.0
    assert f.distribution("llm", 200.0, namespace="a") == raised


def test_a_new_class_starts_from_a_checked_hint_with_its_spread_above_the_floor() -> None:
    """Nothing of `fresh` was measured: an unchecked hint is a bound (no
    spread); a checked one is read through the record, with its spread, and
    still no lower than the floor of half TDP an unchecked hint has."""
    bare = Forecaster(TDP, IDLE).distribution("fresh", 500.0, namespace="a")
    assert (bare.source, bare.gpu_watts, bare.spread_gpu_watts) == ("hint", 500.0, 0.0)
    f = _site(ratios=_honest())
    told = f.distribution("fresh", 500.0, namespace="a")
    assert told.source == "hinted" and 480.0 < told.gpu_watts < 530.0
    assert told.spread_gpu_watts > 0.0
    assert f.distribution("fresh", 200.0, namespace="a").gpu_watts == 0.5 * TDP


@given(
    st.floats(100.0, 600.0),
    st.floats(1.0, 200.0),
    st.floats(100.0, 600.0),
    st.floats(1.0, 200.0),
)
def test_the_update_lies_between_and_is_tighter_than_either(
    m: float, a: float, h: float, b: float
) -> None:
    mean, bound = hinted(m, m + a, h, h + b)
    assert min(m, h) - 1e-9 <= mean <= max(m, h) + 1e-9
    spread = bound - mean
    assert spread <= min(a, b) + 1e-9
    assert math.isclose(spread, 1.0 / math.sqrt(1.0 / a**2 + 1.0 / b**2), rel_tol=1e-9)
    if math.isclose(a, b):
        assert math.isclose(mean, (m + h) / 2.0, rel_tol=1e-9)
    elif a < b:  # nearer the tighter of the two
        assert abs(mean - m) <= abs(mean - h) + 1e-9
    else:
        assert abs(mean - h) <= abs(mean - m) + 1e-9


def test_records_are_bounded_and_a_broken_hint_is_no_record() -> None:
    """As many records as histories at most (namespaces are an admin's, but
    bounded all the same); a hint that is not a positive finite number
    (nothing the API server admits) neither enters a record nor reads one."""
    f = Forecaster(TDP, IDLE)
    for k in range(MAX_HISTORIES + 10):
        f.observe("c", 400.0, None, None, namespace=f"ns-{k}", hint_gpu_watts=400.0)
    assert f.hint_record("ns-0") is None and f.hint_record(f"ns-{MAX_HISTORIES + 9}") is not None
    g = _site(ratios=_honest())
    for bad in (float("nan"), float("inf"), 0.0, -5.0):
        g.observe("llm", 400.0, None, None, namespace="a", hint_gpu_watts=bad)
        assert g.distribution("llm", bad, namespace="a").source == "history"
    assert g.hint_record("a") is not None and g.hint_record("a")[0] == len(_honest())
