"""Forecasts on a shared site: no tenant's claims or history lower another's bill.

History is kept per (namespace, workloadClass); a namespace new to a class
starts from what the other namespaces measured, and that site-wide pool can
only raise a namespace's forecast, never lower it. A hint is a claim: it is
floored at a fraction of TDP and never beats a measurement.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from wattcap.forecast import Forecaster

TDP, IDLE = 700.0, 70.0


def learned(ns: str, cls: str, watts: list[float], f: Forecaster | None = None) -> Forecaster:
    f = f or Forecaster(TDP, IDLE)
    for w in watts:
        f.observe(cls, w, 600.0, None, namespace=ns)
    return f


VICTIM = [600.0, 610.0, 590.0, 605.0, 620.0, 595.0, 600.0, 615.0]


def test_idle_jobs_in_one_namespace_do_not_lower_another_namespaces_forecast() -> None:
    """A tenant floods class llm with 64 idle jobs; the victim's forecast stays."""
    f = learned("victim", "llm", VICTIM)
    before = f.forecast("llm", namespace="victim").gpu_watts
    learned("evil", "llm", [IDLE + 1.0] * 64, f)
    after = f.forecast("llm", namespace="victim")
    assert after.gpu_watts >= before
    assert after.gpu_watts > 600.0, after


def test_a_namespace_new_to_a_class_starts_from_the_site_pool_not_the_poison() -> None:
    f = learned("victim", "llm", VICTIM)
    learned("evil", "llm", [IDLE + 1.0] * 64, f)
    fresh = f.forecast("llm", namespace="newcomer")
    assert fresh.source == "pool"
    assert fresh.gpu_watts >= f.forecast("llm", namespace="victim").gpu_watts - 1e-9
    assert fresh.gpu_watts > 600.0


def test_the_pool_beats_a_tiny_hint() -> None:
    f = learned("a", "llm", VICTIM)
    fc = f.forecast("llm", hint_gpu_watts=0.001, namespace="b")
    assert fc.gpu_watts > 600.0 and fc.source == "pool"


def test_a_tiny_hint_is_floored_at_the_policy_fraction_of_tdp() -> None:
    f = Forecaster(TDP, IDLE)
    assert f.forecast("fresh", hint_gpu_watts=0.001).gpu_watts == 0.5 * TDP  # default floor
    assert f.forecast("fresh", hint_gpu_watts=0.001, hint_floor_fraction=0.8).gpu_watts == (
        0.8 * TDP
    )
    # a hint above the floor is taken as given
    assert f.forecast("fresh", hint_gpu_watts=600.0).gpu_watts == 600.0


def test_one_namespace_alone_forecasts_exactly_as_before_pooling() -> None:
    """The simulator runs one namespace: pooling must not move its numbers."""
    alone = learned("", "llm", VICTIM)
    other = learned("x", "llm", VICTIM)
    assert alone.forecast("llm").gpu_watts == other.forecast("llm", namespace="x").gpu_watts
    assert alone.forecast("llm").source == "history"


@settings(max_examples=40, deadline=None)
@given(
    own=st.lists(st.floats(80.0, 700.0), min_size=1, max_size=20),
    others=st.lists(st.floats(70.0, 700.0), min_size=0, max_size=70),
)
def test_other_namespaces_never_lower_a_namespaces_forecast(
    own: list[float], others: list[float]
) -> None:
    f = learned("me", "c", own)
    before = f.forecast("c", namespace="me").gpu_watts
    learned("them", "c", others, f)
    assert f.forecast("c", namespace="me").gpu_watts >= before - 1e-9
