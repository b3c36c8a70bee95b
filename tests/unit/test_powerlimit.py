"""The throughput-vs-limit model: its shape, its inverse, and that it is the fit's output."""

from __future__ import annotations

import math
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from wattcap.powerlimit import (
    SLOWDOWN_A,
    SLOWDOWN_B,
    drawn_watts,
    limit_for_slowdown,
    slowdown,
)

FIT = Path(__file__).resolve().parents[2] / "data" / "powerlimits" / "fit.txt"


def test_constants_are_the_fits_output() -> None:
    text = FIT.read_text()
    a = float(re.search(r"^A = ([0-9.]+)$", text, re.M).group(1))
    b = float(re.search(r"^B = ([0-9.]+)$", text, re.M).group(1))
    assert (a, b) == (SLOWDOWN_A, SLOWDOWN_B)


def test_no_cost_at_or_above_the_natural_draw() -> None:
    assert slowdown(500.0, None) == 1.0
    assert slowdown(500.0, 500.0) == 1.0
    assert slowdown(500.0, 700.0) == 1.0
    assert drawn_watts(500.0, 700.0) == 500.0
    assert drawn_watts(500.0, 400.0) == 400.0
    assert drawn_watts(500.0, None) == 500.0


def test_matches_the_measured_medians_where_the_core_throttles() -> None:
    # fit.txt: measured median slowdown 1.121 at limit/natural in [0.7, 0.8), 1.516 in [0.5, 0.6)
    assert 1.05 < slowdown(100.0, 75.0) < 1.2
    assert 1.4 < slowdown(100.0, 55.0) < 1.8
    assert math.isinf(slowdown(100.0, 0.0))


@given(
    natural=st.floats(100.0, 1000.0),
    lo=st.floats(0.05, 1.0),
    hi=st.floats(0.05, 1.0),
)
def test_lower_limit_never_faster(natural: float, lo: float, hi: float) -> None:
    lo, hi = sorted((lo, hi))
    assert slowdown(natural, lo * natural) >= slowdown(natural, hi * natural) >= 1.0


@given(natural=st.floats(100.0, 1000.0), s=st.floats(1.001, 5.0))
def test_inverse(natural: float, s: float) -> None:
    limit = limit_for_slowdown(natural, s)
    assert 0.0 < limit < natural
    assert math.isclose(slowdown(natural, limit), s, rel_tol=1e-9)
    assert limit_for_slowdown(natural, 1.0) == natural
