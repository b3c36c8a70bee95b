"""The meter's arithmetic over arrays of samples, compiled by Cython when
built (pure-Python mode, as `wattcap.profile`); `COMPILED` says which.

A replay of 100,000 jobs draws a block of exporter samples for every run
and sums a window of them at every re-forecast: a few hundred thousand
calls on arrays of tens of samples, where numpy's cost per call is most of
the work. The transform is numpy's to the bit; sums are taken in order,
which differs from numpy's pairwise sums in the last bits only.
"""

from __future__ import annotations

try:
    import cython
except ImportError:  # run as plain Python without Cython installed
    from .. import _cython_shim as cython
import numpy as np

COMPILED: bool = cython.compiled


def exporter_samples(
    z: cython.double[:],
    noise: cython.double,
    truth: cython.double,
    low: cython.double,
    high: cython.double,
) -> np.ndarray:
    """truth x (1 + noise x z), clipped to [low, high]: one exporter sample
    per standard normal in `z`."""
    m: cython.Py_ssize_t = z.shape[0]
    out = np.empty(m)
    o: cython.double[:] = out
    i: cython.Py_ssize_t
    s: cython.double
    for i in range(m):
        s = z[i] * noise
        s += 1.0
        s *= truth
        if not s >= low:
            s = low
        if not s <= high:
            s = high
        o[i] = s
    return out


def window_moments(
    x: cython.double[:], lo: cython.Py_ssize_t, hi: cython.Py_ssize_t, truth: cython.double
) -> tuple[int, float, float]:
    """Count, mean and sample variance (n - 1) of x[lo:hi].

    Summed as deviations from truth, which are small: one pass, and the sum
    of squares loses no precision that matters.
    """
    n: cython.Py_ssize_t = hi - lo
    i: cython.Py_ssize_t
    d: cython.double
    s1: cython.double = 0.0
    sq: cython.double = 0.0
    for i in range(n):
        d = x[lo + i] - truth
        s1 += d
        sq += d * d
    mean: cython.double = truth + s1 / n
    if n < 2:
        return n, mean, 0.0
    var: cython.double = sq - s1 * s1 / n
    return n, mean, (var if var > 0.0 else 0.0) / (n - 1)


def prefix_mean(x: cython.double[:], hi: cython.Py_ssize_t) -> float:
    """Mean of x[:hi] (hi > 0)."""
    s: cython.double = 0.0
    i: cython.Py_ssize_t
    for i in range(hi):
        s += x[i]
    return s / hi


def first_above(
    x: cython.double[:], lo: cython.Py_ssize_t, hi: cython.Py_ssize_t, level: cython.double
) -> cython.Py_ssize_t:
    """The first i with x[lo + i] > level, lo + i < hi (-1: none); 0 <= lo
    <= hi <= len(x). What `int((x[lo:hi] > level).argmax())` finds, without
    the three numpy calls: the replay asks it of every protected running job
    at a block of ticks where the plan may be over the cap."""
    i: cython.Py_ssize_t
    for i in range(hi - lo):
        if x[lo + i] > level:
            return i
    return -1
