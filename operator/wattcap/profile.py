"""Free power and GPUs as step functions over future time: decide's plan.

Step i covers [times[i], times[i+1]); the last step lasts forever. Per step
it holds the usable cap, whether the cap there is a drop from today's (and a
drop far enough ahead that preemptible work would be shed before it), what
a non-preemptible job may use (`free_np`), what a preemptible one may use
(`free_p`: unbounded at far drops) and free GPUs.

Why a module of its own, written in Cython's pure-Python mode: a cycle
books a handful of reservations on a profile of about a hundred steps, and
each booking is a few passes over those steps. In numpy that is dozens of
calls of 1 to 5 µs each; as compiled loops it is well under a microsecond a
pass. The simulator runs about 150,000 cycles for 100,000 jobs, so this is
most of its time. The same source runs as plain Python when the extension
is not built (`COMPILED` says which), with the same results to the bit:
every sum is taken in the order numpy takes it, and the sums numpy takes
pairwise are passed in by the caller.
"""

from __future__ import annotations

import cython
import numpy as np

COMPILED: bool = cython.compiled

_ROWS = 10  # cap, cap_raw, drop, far_drop, free_np, free_p, free_g, and three minima


@cython.cclass
class Profile:
    """The profile, with its operations: split a step, hold power and GPUs
    over steps, find the first step a job does not fit, book a reservation.

    Arrays have spare room past `n`, so a split shifts in place; the numpy
    views `times` and `minima()` are what vectorised callers read.
    """

    n = cython.declare(cython.Py_ssize_t, visibility="readonly")
    _room: cython.Py_ssize_t
    _minima_ok: cython.bint
    _t: cython.double[:]
    _r: cython.double[:, :]
    _times: object
    _rows: object
    free0_np = cython.declare(cython.double, visibility="readonly")
    free0_p = cython.declare(cython.double, visibility="readonly")

    def __init__(
        self,
        times: np.ndarray,
        run_end: np.ndarray,
        load_np: np.ndarray,
        load_p: np.ndarray,
        load_g: np.ndarray,
        cap_edges: np.ndarray,
        cap_vals: np.ndarray,
        keep: float,
        ecap_now: float,
        period_end: float,
        base: float,
        sum_p: float,
        gpus_free_now: float,
    ) -> None:
        """`times`: the sorted, distinct step starts (now first). `base`: what
        every step loses before running work ends (idle, measured excess and
        all non-preemptible running load); `sum_p`: all preemptible running
        load. `keep`: 1 - safety margin."""
        n: cython.Py_ssize_t = times.shape[0]
        self.n = 0
        self._times = self._rows = None
        self._alloc(n + 16)
        self.n = n
        t: cython.double[:] = self._t
        r: cython.double[:, :] = self._r
        i: cython.Py_ssize_t
        k: cython.Py_ssize_t
        for i in range(n):
            t[i] = times[i]
        # the cap at each step: the value of the last edge at or before it
        edges: cython.double[:] = cap_edges
        vals: cython.double[:] = cap_vals
        ne: cython.Py_ssize_t = edges.shape[0]
        k = 0
        for i in range(n):
            while k < ne and edges[k] <= t[i]:
                k += 1
            r[1, i] = vals[k]
            r[0, i] = vals[k] * keep
        # Load of running work at each step: a job ending at step k counts at
        # steps [0, k); what ended by step i comes back to it.
        ends: cython.double[:] = run_end
        wnp: cython.double[:] = load_np
        wp: cython.double[:] = load_p
        wg: cython.double[:] = load_g
        ended = np.zeros((3, n + 1))
        e: cython.double[:, :] = ended
        for k in range(ends.shape[0]):
            i = _lower_bound(t, n, ends[k])
            e[0, i] += wnp[k]
            e[1, i] += wp[k]
            e[2, i] += wg[k]
        for i in range(1, n):
            e[0, i] += e[0, i - 1]
            e[1, i] += e[1, i - 1]
            e[2, i] += e[2, i - 1]
        low: cython.double = ecap_now - 1e-6
        inf: cython.double = np.inf
        f_np: cython.double
        f_p: cython.double
        for i in range(n):
            r[2, i] = 1.0 if r[0, i] < low else 0.0
            r[3, i] = r[2, i] if t[i] > period_end else 0.0
            f_np = (r[0, i] - base) + e[0, i]
            f_p = (f_np - sum_p) + e[1, i]
            if r[3, i] > 0:  # a far drop: preemptible work is shed before it
                r[4, i] = f_np
                r[5, i] = inf
            else:
                r[4, i] = f_p
                r[5, i] = f_p
            r[6, i] = e[2, i] + gpus_free_now
        self._minima_ok = False
        self._refresh()

    def _alloc(self, room: cython.Py_ssize_t) -> None:
        """Arrays with room for `room` steps, keeping the first n."""
        times = np.empty(room)
        rows = np.empty((_ROWS, room))
        if self._times is not None:
            times[: self.n] = self._times[: self.n]
            rows[:, : self.n] = self._rows[:, : self.n]
        self._times, self._rows = times, rows
        self._t, self._r = times, rows
        self._room = room

    def _refresh(self) -> None:
        self.free0_np = self._r[4, 0]
        self.free0_p = self._r[5, 0]

    @property
    def times(self) -> np.ndarray:
        return self._times[: self.n]

    def step(self, k: cython.Py_ssize_t) -> tuple[float, bool, float]:
        """Step k's start, whether its cap is a drop, and its cap before the margin."""
        return self._t[k], self._r[2, k] > 0, self._r[1, k]

    def max_cap(self) -> float:
        """The highest usable cap over the plan."""
        best: cython.double = self._r[0, 0]
        i: cython.Py_ssize_t
        for i in range(1, self.n):
            if self._r[0, i] > best:
                best = self._r[0, i]
        return best

    def end_index(self, t: cython.double) -> cython.Py_ssize_t:
        """The first step starting at or after t (where a run ending at t stops)."""
        return _lower_bound(self._t, self.n, t)

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def minima(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Running minima of free power (non-preemptible, preemptible) and GPUs.

        A job that runs through steps [0, k) fits iff the minimum at k-1
        covers it; minima are non-increasing, so the first step that does not
        fit is a binary search away. Negated, so they are ascending.
        Computed when first asked after a change: bookings in a row do not
        need them.
        """
        if not self._minima_ok:
            self._fill_minima()
        n = self.n
        rows = self._rows
        return rows[7, :n], rows[8, :n], rows[9, :n]

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def _fill_minima(self) -> None:
        r: cython.double[:, :] = self._r
        q: cython.Py_ssize_t
        i: cython.Py_ssize_t
        m: cython.double
        for q in range(3):
            m = r[4 + q, 0]
            r[7 + q, 0] = -m
            for i in range(1, self.n):
                if r[4 + q, i] < m:
                    m = r[4 + q, i]
                r[7 + q, i] = -m
        self._minima_ok = True

    def split(self, t: cython.double) -> cython.Py_ssize_t:
        """The index of the step that starts at t, splitting the step around t."""
        n: cython.Py_ssize_t = self.n
        k: cython.Py_ssize_t = _lower_bound(self._t, n, t)
        if k < n and self._t[k] == t:
            return k
        if n == self._room:
            self._alloc(2 * n)
        # t > now, so it falls inside step k-1: both halves keep its values
        tt: cython.double[:] = self._t
        r: cython.double[:, :] = self._r
        i: cython.Py_ssize_t
        q: cython.Py_ssize_t
        for i in range(n, k - 1, -1):  # step k-1 is now steps k-1 and k
            tt[i] = tt[i - 1]
            for q in range(7):
                r[q, i] = r[q, i - 1]
        tt[k] = t
        self.n = n + 1
        self._minima_ok = False
        return k

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def first_shortfall(
        self,
        preemptible: cython.bint,
        w: cython.double,
        g: cython.double,
        end_i: cython.Py_ssize_t,
    ) -> cython.Py_ssize_t:
        """First step in [0, end_i) where the job does not fit, or -1."""
        if not self._minima_ok:
            self._fill_minima()
        last: cython.Py_ssize_t = end_i - 1 if end_i > 0 else 0
        row: cython.Py_ssize_t = 8 if preemptible else 7
        r: cython.double[:, :] = self._r
        power_ok: cython.bint = r[row, last] <= -w
        gpus_ok: cython.bint = r[9, last] <= -g
        if power_ok and gpus_ok:
            return -1
        by_power: cython.Py_ssize_t = self.n
        by_gpus: cython.Py_ssize_t = self.n
        if not power_ok:
            by_power = _upper_bound_row(r, row, self.n, -w)
        if not gpus_ok:
            by_gpus = _upper_bound_row(r, 9, self.n, -g)
        return by_power if by_power < by_gpus else by_gpus

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def take(
        self,
        i: cython.Py_ssize_t,
        e: cython.Py_ssize_t,
        w: cython.double,
        g: cython.double,
        preemptible: cython.bint,
    ) -> None:
        """Hold w watts and g GPUs over steps [i, e)."""
        if e < i + 1:
            e = i + 1
        r: cython.double[:, :] = self._r
        k: cython.Py_ssize_t
        for k in range(i, e):
            if preemptible:
                # a preemptible job does not hold power at steps where it would be shed
                r[4, k] -= w * (1.0 - r[3, k])
            else:
                r[4, k] -= w
            r[5, k] -= w
            r[6, k] -= g
        self._minima_ok = False
        self._refresh()

    @cython.boundscheck(False)
    @cython.wraparound(False)
    def reserve(
        self, preemptible: cython.bint, w: cython.double, g: cython.double, duration_s: float
    ) -> float | None:
        """Book the earliest later start where the job fits throughout; return it.

        Never step 0: a job reserved is one that was not admitted now. The
        booking holds whole steps, to the end of the step its run ends in: a
        little longer than the job needs, never shorter, and no new step.
        """
        n: cython.Py_ssize_t = self.n
        t: cython.double[:] = self._t
        r: cython.double[:, :] = self._r
        row: cython.Py_ssize_t = 5 if preemptible else 4
        d: cython.double = duration_s if duration_s > 1.0 else 1.0
        i: cython.Py_ssize_t = 1
        run_end: cython.Py_ssize_t
        end: cython.Py_ssize_t
        # A start at step i fits iff no bad step lies in [i, end_i), and end_i
        # grows with i: within a run of good steps only its first can fit, so
        # the runs are tried in order.
        while i < n:
            if not (r[row, i] >= w and r[6, i] >= g):
                i += 1
                continue
            run_end = i + 1
            while run_end < n and r[row, run_end] >= w and r[6, run_end] >= g:
                run_end += 1
            end = _lower_bound(t, n, t[i] + d)
            if end <= run_end:
                self.take(i, end, w, g, preemptible)
                return t[i]
            i = run_end + 1
        return None


@cython.cfunc
@cython.inline
@cython.boundscheck(False)
@cython.wraparound(False)
def _lower_bound(a: cython.double[:], n: cython.Py_ssize_t, v: cython.double) -> cython.Py_ssize_t:
    """numpy's searchsorted(a[:n], v) (side left): the first i with a[i] >= v."""
    lo: cython.Py_ssize_t = 0
    hi: cython.Py_ssize_t = n
    mid: cython.Py_ssize_t
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@cython.cfunc
@cython.inline
@cython.boundscheck(False)
@cython.wraparound(False)
def _upper_bound_row(
    r: cython.double[:, :], row: cython.Py_ssize_t, n: cython.Py_ssize_t, v: cython.double
) -> cython.Py_ssize_t:
    """numpy's searchsorted(r[row, :n], v, side="right"): the first i with r[row, i] > v."""
    lo: cython.Py_ssize_t = 0
    hi: cython.Py_ssize_t = n
    mid: cython.Py_ssize_t
    while lo < hi:
        mid = (lo + hi) // 2
        if r[row, mid] <= v:
            lo = mid + 1
        else:
            hi = mid
    return lo
