"""Free power and GPUs as step functions over future time: decide's plan.

Step i covers [times[i], times[i+1]); the last step lasts forever. Per step
it holds the usable cap, whether the cap there is a drop from today's (and a
drop far enough ahead that preemptible work would be shed before it), what
a non-preemptible job may use (`free_np`), what a preemptible one may use
(`free_p`: unbounded at far drops) and free GPUs.

Beside the profile, the numbers decide checks jobs by: running jobs' watts
(`running_watts`), queued jobs' columns (`queue_columns`), whether a queue
is already in admission order (`in_order`).

Why a module of its own, written in Cython's pure-Python mode: a cycle
books a handful of reservations on a profile of about a hundred steps, and
each booking is a few passes over those steps. In numpy that is dozens of
calls of 1 to 5 µs each; as compiled loops it is well under a microsecond a
pass. The simulator runs about 150,000 cycles for 100,000 jobs, so this was
most of its time. The same source runs as plain Python when the extension
is not built (`COMPILED` says which), with the same results to the bit;
sums are taken as numpy takes them (`_pairwise_sum`), so decide's figures
are those of the numpy code this replaced. Indexes are not checked when
compiled (setup.py): the tests run the same source as Python, which does.
"""

from __future__ import annotations

try:
    import cython
except ImportError:  # run as plain Python without Cython installed
    from . import _cython_shim as cython
import numpy as np

if cython.compiled:
    from cython.cimports.libc.math import sqrt
else:
    from math import sqrt  # correctly rounded, as C's and numpy's

COMPILED: bool = cython.compiled
INF: cython.double = float("inf")

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
    _period_end: cython.double
    _t: cython.double[:]
    _r: cython.double[:, :]
    _times: object
    _rows: object
    free0_np = cython.declare(cython.double, visibility="readonly")
    free0_p = cython.declare(cython.double, visibility="readonly")
    moves_in = cython.declare(cython.double, visibility="readonly")
    overhang_split = cython.declare(cython.bint, visibility="readonly")
    _overhangs: list

    def __init__(
        self,
        now: cython.double,
        period: cython.double,
        horizon_s: cython.double,
        end_s: cython.double[:],
        watts: cython.double[:],
        preemptible: cython.uchar[:],
        gpus: cython.double[:],
        cap_edges: cython.double[:],
        cap_vals: cython.double[:],
        keep: cython.double,
        ecap_now: cython.double,
        base: cython.double,
        gpus_free_now: cython.double,
    ) -> None:
        """The plan now, of running jobs (planned ends `end_s`, `watts` above
        idle, whether `preemptible` (0 if preemption is off), GPUs) under the
        cap schedule (`cap_vals[k]` from `cap_edges[k-1]`). `keep`: 1 - the
        safety margin; `base`: what every step loses besides running work
        (idle and measured excess).

        Breakpoints are now, the next cycle, cap edges within the horizon and
        the ends of running work. A job past its planned end has an unknown
        end: it is planned as if it keeps running, or work admitted around it
        could meet a cap drop together; one due to end sooner than the next
        cycle may overrun until then.
        """
        horizon: cython.double = now + horizon_s
        period_end: cython.double = now + period
        self._period_end = period_end
        self.moves_in = np.inf
        self.overhang_split = False
        self._overhangs = []
        m: cython.Py_ssize_t = end_s.shape[0]
        ne: cython.Py_ssize_t = cap_edges.shape[0]
        i: cython.Py_ssize_t
        k: cython.Py_ssize_t
        q: cython.Py_ssize_t
        x: cython.double
        # planned ends, and watts split into what a cap drop cannot shed and what it can
        scratch = np.empty((3, m))
        ends_a = scratch[0]
        ends: cython.double[:] = ends_a
        wnp: cython.double[:] = scratch[1]
        wp: cython.double[:] = scratch[2]
        for k in range(m):
            x = end_s[k] if end_s[k] < horizon else horizon
            if x <= now:
                x = horizon
            ends[k] = x if x > period_end else period_end
            wp[k] = watts[k] * (1.0 if preemptible[k] else 0.0)
            wnp[k] = watts[k] - wp[k]
        base = base + _pairwise_sum(wnp, 0, m)
        sum_p: cython.double = _pairwise_sum(wp, 0, m)

        # step starts: sorted, distinct
        lo: cython.Py_ssize_t = _upper_bound(cap_edges, ne, now)
        hi: cython.Py_ssize_t = _upper_bound(cap_edges, ne, horizon)
        srt: cython.double[:] = np.sort(ends_a)
        self.n = 0
        self._times = self._rows = None
        self._alloc(2 + (hi - lo) + m + 16)
        t: cython.double[:] = self._t
        t[0] = now
        t[1] = period_end
        n: cython.Py_ssize_t = 2
        a: cython.Py_ssize_t = lo  # merge cap edges and ends after now + period
        b: cython.Py_ssize_t = 0
        while a < hi or b < m:
            if b >= m or (a < hi and cap_edges[a] <= srt[b]):
                x = cap_edges[a]
                a += 1
            else:
                x = srt[b]
                b += 1
            if x > t[n - 1]:
                t[n] = x
                n += 1
            elif x < t[n - 1]:  # between now and the next cycle (a cap edge)
                i = n
                while i > 0 and t[i - 1] > x:
                    i -= 1
                if t[i - 1] != x:
                    for k in range(n, i, -1):
                        t[k] = t[k - 1]
                    t[i] = x
                    n += 1
        self.n = n

        r: cython.double[:, :] = self._r
        # the cap at each step: the value of the last edge at or before it
        k = _upper_bound(cap_edges, ne, now)
        for i in range(n):
            while k < ne and cap_edges[k] <= t[i]:
                k += 1
            r[1, i] = cap_vals[k]
            r[0, i] = cap_vals[k] * keep
        # Load of running work at each step: a job ending at step k counts at
        # steps [0, k); what ended by step i comes back to it.
        e: cython.double[:, :] = self._rows[7:10]  # the minima's rows, free until asked
        for q in range(3):
            for i in range(n + 1):
                e[q, i] = 0.0
        for k in range(m):
            i = _lower_bound(t, n, ends[k])
            e[0, i] += wnp[k]
            e[1, i] += wp[k]
            e[2, i] += gpus[k]
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
        """The index of the step that starts at t, splitting the step around t.

        `overhang_split` notes a split inside a booking's overhang (after its
        run, before the end of the step it holds): booked now, it would hold
        less."""
        n: cython.Py_ssize_t = self.n
        k: cython.Py_ssize_t = _lower_bound(self._t, n, t)
        if k < n and self._t[k] == t:
            return k
        for lo, hi in self._overhangs:
            if lo <= t < hi:
                self.overhang_split = True
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

    def first_fit(
        self,
        w: cython.double[:],
        g: cython.double[:],
        pre: cython.uchar[:],
        skip: cython.uchar[:],
        end: cython.double[:],
        lo: cython.Py_ssize_t,
        hi: cython.Py_ssize_t,
        gpus_free: cython.double,
        may_start: cython.bint,
        throughout: cython.bint,
    ) -> tuple[int, int]:
        """The first job in [lo, hi) of a queue's columns that fits now (power
        at step 0, GPUs free) and, if `throughout`, every step until its
        `end`; or `hi` (always, unless `may_start`). Jobs with `skip` set
        never fit. Also how many jobs without `skip` it passed over."""
        r: cython.double[:, :] = self._r
        i: cython.Py_ssize_t
        last: cython.Py_ssize_t
        row: cython.Py_ssize_t
        passed: cython.Py_ssize_t = 0
        if throughout and not self._minima_ok:
            self._fill_minima()
        for i in range(lo, hi):
            if skip[i]:
                continue
            passed += 1
            if not may_start:
                continue
            if w[i] > (self.free0_p if pre[i] else self.free0_np) or g[i] > gpus_free:
                continue
            if throughout:
                last = _lower_bound(self._t, self.n, end[i]) - 1
                if last < 0:
                    last = 0
                row = 8 if pre[i] else 7
                if not (r[row, last] <= -w[i] and r[9, last] <= -g[i]):
                    continue
            return i, passed - 1
        return hi, passed

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

    def reserve(
        self, preemptible: cython.bint, w: cython.double, g: cython.double, duration_s: float
    ) -> float | None:
        """Book the earliest later start where the job fits throughout; return it.

        Never step 0: a job reserved is one that was not admitted now. The
        booking holds whole steps, to the end of the step its run ends in: a
        little longer than the job needs, never shorter, and no new step.
        A booking from the next cycle on (now + period) moves with now, and
        `moves_in` is the least time before one such reaches another step,
        with its end or with its start: until then, time passing changes no
        booking.
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
                self._overhangs.append((t[i] + d, t[end] if end < n else np.inf))
                if t[i] == self._period_end:
                    # booked from the next cycle on, it moves with now: once its run
                    # reaches past step `end`'s start, it books another step; once
                    # its start reaches step i + 1 (a running job's end, a cap
                    # edge), it no longer holds step i, where it may have kept
                    # another job out
                    if end < n:
                        x = t[end] - (t[i] + d)
                        if x < self.moves_in:
                            self.moves_in = x
                    if i + 1 < n:
                        x = t[i + 1] - t[i]
                        if x < self.moves_in:
                            self.moves_in = x
                return t[i]
            i = run_end + 1
        return None


def running_watts(
    gpus: cython.double[:],
    gpu_watts: cython.double[:],
    pue: cython.double,
    gpu_idle_w: cython.double,
) -> tuple[np.ndarray, float, float]:
    """Running jobs' planned site watts above idle, their sum, and the sum
    of those above zero (the most running work can draw at any later step:
    each job only ends). Sums as numpy's."""
    m: cython.Py_ssize_t = gpus.shape[0]
    out = np.empty((2, m))
    o: cython.double[:, :] = out
    k: cython.Py_ssize_t
    npos: cython.Py_ssize_t = 0
    nonneg: cython.bint = True
    for k in range(m):
        o[0, k] = (pue * gpus[k]) * (gpu_watts[k] - gpu_idle_w)
        if o[0, k] > 0.0:
            o[1, npos] = o[0, k]
            npos += 1
        elif o[0, k] < 0.0:
            nonneg = False
    total: cython.double = _pairwise_sum(o[0], 0, m)
    positive: cython.double = total if nonneg else _pairwise_sum(o[1], 0, npos)
    return out[0], total, positive


def in_order(
    queued: list, starving_after: cython.double, now: cython.double, by_priority: cython.bint
) -> cython.bint:
    """Is the queue already in admission order (`admission.order_queue`):
    jobs past their max delay first, then priority, then submission, then
    key? `starving_after` is the max delay of jobs that set none. A caller
    that keeps its queue in order (the simulator) then costs no sort."""
    m: cython.Py_ssize_t = len(queued)
    i: cython.Py_ssize_t
    prev_late: cython.bint = True
    prev_prio: cython.double = 0.0
    prev_sub: cython.double = 0.0
    prev_key: object = None
    late: cython.bint
    prio: cython.double
    sub: cython.double
    limit: cython.double
    for i in range(m):
        j = queued[i]
        sub = j.submitted_s
        limit = starving_after if j.max_delay_s is None else j.max_delay_s
        late = now - sub > limit
        prio = -float(j.priority) if by_priority else 0.0
        if i > 0:
            if late != prev_late:
                if late:
                    return False
            elif prio != prev_prio:
                if prio < prev_prio:
                    return False
            elif sub != prev_sub:
                if sub < prev_sub:
                    return False
            elif not prev_key < j.key:
                return False
        prev_late, prev_prio, prev_sub, prev_key = late, prio, sub, j.key
    return True


def queue_columns(
    ordered: list,
    pue: cython.double,
    gpu_idle_w: cython.double,
    preemption: cython.bint,
    now: cython.double,
    horizon_s: cython.double,
    total_gpus: cython.double,
    node_max_gpus: cython.double,
    usable_w: cython.double,
) -> tuple[np.ndarray, np.ndarray]:
    """The numbers the plan checks queued jobs by, one column per job, read
    off the job objects in one pass.

    Rows of the first array: GPUs per replica, GPUs, watts above idle (never
    below idle: a booking then only takes, which lazy booking relies on),
    duration (at least 1 s), planned end (within the horizon). Rows of the
    second (0 or 1): preemptible (if preemption is on), unschedulable (too
    wide for the site or a node), skipped (unschedulable, or more power
    above idle than the cap ever leaves).
    """
    m: cython.Py_ssize_t = len(ordered)
    cols = np.empty((5, m))
    flags = np.zeros((3, m), dtype=np.uint8)
    c: cython.double[:, :] = cols
    f: cython.uchar[:, :] = flags
    i: cython.Py_ssize_t
    gpr: cython.double
    g: cython.double
    w: cython.double
    d: cython.double
    end: cython.double
    for i in range(m):
        j = ordered[i]
        gpr = j.gpus_per_replica
        g = j.replicas
        g = g * gpr
        w = j.gpu_watts - gpu_idle_w
        w = pue * g * (w if w > 0.0 else 0.0)
        d = j.duration_s
        if not d > 1.0:
            d = 1.0
        end = now + d
        if end > now + horizon_s:
            end = now + horizon_s
        c[0, i] = gpr
        c[1, i] = g
        c[2, i] = w
        c[3, i] = d
        c[4, i] = end
        f[0, i] = 1 if (preemption and j.preemptible) else 0
        f[1, i] = 1 if (g > total_gpus or gpr > node_max_gpus) else 0
        f[2, i] = 1 if (f[1, i] or w > usable_w) else 0
    return cols, flags


def chance_running(
    mean: cython.double[:],
    sd: cython.double[:],
    end: cython.double[:],
    preemptible: cython.uchar[:],
    zc: cython.double,
    zi: cython.double,
) -> np.ndarray:
    """`chance.running_charges`' arithmetic: each running job's mean, plus
    `zc` x its sd, plus `zi` x its increment over its base (the variance of
    jobs sure to run beside it). Jobs are chained non-preemptible first,
    each kind latest end first, ties by position; a base is a running sum in
    that order, as numpy's cumsum takes it, so the charges are the numpy
    model's to the bit. Never the difference of two sums: variances span
    many scales, and a small base taken as a large sum less another keeps
    only the large one's rounding (6e5 - 6e5 for 1e-10), and the charges
    then fell short of the target. Why compiled: decide charges every running job every
    cycle, and in numpy that was two dozen calls of a few µs each."""
    m: cython.Py_ssize_t = mean.shape[0]
    out = np.empty(m)
    if m == 0:
        return out
    order_a = np.argsort(np.negative(np.asarray(end)), kind="stable")
    order: cython.Py_ssize_t[:] = order_a.astype(np.intp, copy=False)
    _running_into(mean, sd, end, preemptible, True, order, zc, zi, out)
    return out


def chance_charge(
    mean: cython.double[:],
    sd: cython.double[:],
    end_s: cython.double[:],
    preemptible: cython.uchar[:],
    preemption: cython.bint,
    end_cap: cython.double,
    horizon: cython.double,
    period_end: cython.double,
    zc: cython.double,
    zi: cython.double,
) -> tuple[np.ndarray, float, float]:
    """`admission._Chance.charge` in one call: the ends the profile plans
    running jobs with (within the horizon; one at or before `end_cap` to
    the horizon, none before `period_end`), preemptible only where
    `preemption` is on, then `chance_running`'s charges, their sum and the
    sum of those above zero (as `running_watts`), as numpy's. Why one
    call: decide charges the running jobs every cycle, and the half-dozen
    numpy calls that planned the ends cost more than the charges
    themselves (the figures are those steps', to the bit)."""
    m: cython.Py_ssize_t = mean.shape[0]
    out = np.empty(m)
    if m == 0:
        return out, 0.0, 0.0
    ends = np.empty(m)
    e: cython.double[:] = ends
    k: cython.Py_ssize_t
    x: cython.double
    for k in range(m):
        x = end_s[k]
        if x > horizon:  # np.minimum(end_s, horizon)
            x = horizon
        if x <= end_cap:
            x = horizon
        elif period_end > x:  # np.maximum(end, period_end)
            x = period_end
        e[k] = -x  # the chain takes ends latest first: a stable sort of the negation
    order_a = np.argsort(ends, kind="stable")
    for k in range(m):
        e[k] = -e[k]
    _running_into(mean, sd, ends, preemptible, preemption, order_a, zc, zi, out)
    o: cython.double[:] = out
    npos: cython.Py_ssize_t = 0
    nonneg: cython.bint = True
    for k in range(m):  # the positive charges, packed into `ends` (read no more)
        if o[k] > 0.0:
            e[npos] = o[k]
            npos += 1
        if not o[k] >= 0.0:  # (numpy's min of a NaN is no more >= 0)
            nonneg = False
    total: cython.double = _pairwise_sum(o, 0, m)
    return out, total, (total if nonneg else _pairwise_sum(e, 0, npos))


@cython.cfunc
def _running_into(
    mean: cython.double[:],
    sd: cython.double[:],
    end: cython.double[:],
    preemptible: cython.uchar[:],
    preemption: cython.bint,
    order: cython.Py_ssize_t[:],
    zc: cython.double,
    zi: cython.double,
    out: cython.double[:],
) -> cython.void:
    """`chance_running`'s chain into `out`, `order` the jobs latest end first
    (stable); a job is preemptible only where `preemption` is on."""
    m: cython.Py_ssize_t = mean.shape[0]
    scratch = np.empty((3, m + 1))
    base: cython.double[:] = scratch[0]
    np_asc: cython.double[:] = scratch[1]  # non-preemptible ends, ascending
    np_cum: cython.double[:] = scratch[2]  # np_cum[i]: variance of the i latest ends
    q: cython.Py_ssize_t
    k: cython.Py_ssize_t
    nnp: cython.Py_ssize_t = 0
    for q in range(m):
        k = order[q]
        if not (preemption and preemptible[k]):
            nnp += 1
    c: cython.double = 0.0
    i: cython.Py_ssize_t = 0
    np_cum[0] = 0.0
    for q in range(m):
        k = order[q]
        if not (preemption and preemptible[k]):
            base[k] = c
            c = c + sd[k] * sd[k]
            np_cum[i + 1] = c
            np_asc[nnp - 1 - i] = end[k]
            i += 1
    c = 0.0
    for q in range(m):
        k = order[q]
        if preemption and preemptible[k]:
            # the non-preemptible jobs ending no earlier: the latest ones
            base[k] = np_cum[nnp - _lower_bound(np_asc, nnp, end[k])] + c
            c = c + sd[k] * sd[k]
    for k in range(m):
        out[k] = (mean[k] + zc * sd[k]) + zi * _increment(base[k], sd[k] * sd[k])


def chance_queued(
    mean: cython.double[:],
    sd: cython.double[:],
    end: cython.double[:],
    preemptible: cython.uchar[:],
    run_sd: cython.double[:],
    run_end: cython.double[:],
    run_preemptible: cython.uchar[:],
    zc: cython.double,
    zi: cython.double,
) -> np.ndarray:
    """`chance.queued_charges`' arithmetic: each queued job's mean, plus `zc`
    x its sd, plus `zi` x its increment over the variance of the running
    jobs ending no earlier than it (non-preemptible ones; preemptible ones
    too for a preemptible job). Running variance is summed latest end first
    (the reverse of a stable sort by end), a sum never a difference, as
    numpy's cumsum takes it: the numpy model's figures to the bit."""
    out = np.empty(mean.shape[0])
    order_a = np.argsort(np.asarray(run_end), kind="stable")
    order: cython.Py_ssize_t[:] = order_a.astype(np.intp, copy=False)
    _queued_into(
        mean, sd, end, preemptible, run_sd, run_end, run_preemptible, True, order, zc, zi, out
    )
    return out


def chance_queued_jobs(
    jobs: list,
    pue: cython.double,
    gpu_idle_w: cython.double,
    preemption: cython.bint,
    end_cap: cython.double,
    horizon: cython.double,
    run_sd: cython.double[:],
    run_end_s: cython.double[:],
    run_preemptible: cython.uchar[:],
    zc: cython.double,
    zi: cython.double,
) -> np.ndarray:
    """`admission._Chance.queued` in one call: what each queued job adds to
    the plan if admitted now (site watts), read off the job objects in one
    pass (as `queue_columns`): its mean (all of them where none spreads,
    or `zc` and `zi` are 0), else `chance_queued`'s charges, the running
    jobs planned to their ends
    within the horizon (one at or before `end_cap` to the horizon),
    preemptible only where `preemption` is on. Why one call: decide
    charges the queue every cycle, and five numpy columns built from
    generators cost more than the charges (the figures are those steps',
    to the bit)."""
    m: cython.Py_ssize_t = len(jobs)
    cols = np.empty((3, m))
    mean: cython.double[:] = cols[0]
    sd: cython.double[:] = cols[1]
    end: cython.double[:] = cols[2]
    pre_a = np.empty(m, dtype=np.uint8)
    pre: cython.uchar[:] = pre_a
    i: cython.Py_ssize_t
    g: cython.double
    w: cython.double
    d: cython.double
    spreads: cython.bint = False
    for i in range(m):
        j = jobs[i]
        d = j.gpus_per_replica
        g = j.replicas
        g = g * d
        w = j.gpu_watts - gpu_idle_w
        if w < 0.0:  # np.maximum(w, 0.0)
            w = 0.0
        mean[i] = (pue * g) * w
        sd[i] = (pue * g) * j.spread_gpu_watts
        if sd[i] != 0.0:
            spreads = True
        end[i] = _queued_end(j.duration_s, end_cap, horizon)
        pre[i] = 1 if (preemption and j.preemptible) else 0
    if not spreads or (zc == 0.0 and zi == 0.0):  # charged at their means
        return cols[0]
    r: cython.Py_ssize_t = run_sd.shape[0]
    run_ends = np.empty(r)
    re: cython.double[:] = run_ends
    k: cython.Py_ssize_t
    for k in range(r):
        re[k] = _run_end(run_end_s[k], end_cap, horizon)
    order_a = np.argsort(run_ends, kind="stable")
    out = np.empty(m)
    _queued_into(mean, sd, end, pre, run_sd, re, run_preemptible, preemption, order_a, zc, zi, out)
    return out


@cython.cfunc
def _queued_into(
    mean: cython.double[:],
    sd: cython.double[:],
    end: cython.double[:],
    preemptible: cython.uchar[:],
    run_sd: cython.double[:],
    run_end: cython.double[:],
    run_preemptible: cython.uchar[:],
    preemption: cython.bint,
    order: cython.Py_ssize_t[:],
    zc: cython.double,
    zi: cython.double,
    out: cython.double[:],
) -> cython.void:
    """`chance_queued`'s charges into `out`, `order` the running jobs by end
    (stable); a running job is preemptible only where `preemption` is on."""
    m: cython.Py_ssize_t = mean.shape[0]
    r: cython.Py_ssize_t = run_sd.shape[0]
    scratch = np.empty((4, r + 1))
    e_np: cython.double[:] = scratch[0]  # ascending ends of each kind
    e_p: cython.double[:] = scratch[1]
    c_np: cython.double[:] = scratch[2]  # c[i]: variance of the i latest ends
    c_p: cython.double[:] = scratch[3]
    n_np: cython.Py_ssize_t = 0
    n_p: cython.Py_ssize_t = 0
    q: cython.Py_ssize_t
    k: cython.Py_ssize_t
    for q in range(r):
        k = order[q]
        if preemption and run_preemptible[k]:
            e_p[n_p] = run_end[k]
            n_p += 1
        else:
            e_np[n_np] = run_end[k]
            n_np += 1
    c_np[0] = 0.0
    c_p[0] = 0.0
    i_np: cython.Py_ssize_t = 0
    i_p: cython.Py_ssize_t = 0
    for q in range(r - 1, -1, -1):  # latest end first
        k = order[q]
        if preemption and run_preemptible[k]:
            c_p[i_p + 1] = c_p[i_p] + run_sd[k] * run_sd[k]
            i_p += 1
        else:
            c_np[i_np + 1] = c_np[i_np] + run_sd[k] * run_sd[k]
            i_np += 1
    b: cython.double
    for k in range(m):
        b = c_np[n_np - _lower_bound(e_np, n_np, end[k])]
        if n_p and preemptible[k]:
            b = b + c_p[n_p - _lower_bound(e_p, n_p, end[k])]
        out[k] = (mean[k] + zc * sd[k]) + zi * _increment(b, sd[k] * sd[k])


def chance_grows_in(
    jobs: list,
    preemption: cython.bint,
    end_cap: cython.double,
    horizon: cython.double,
    run_sd: cython.double[:],
    run_end_s: cython.double[:],
    run_preemptible: cython.uchar[:],
) -> float:
    """`admission._Chance.grows_in` in one call: the seconds until one of
    `jobs` that spreads loses a running job from its base
    (`chance.base_shrinks_in` for each, the least; inf: none)."""
    m: cython.Py_ssize_t = len(jobs)
    r: cython.Py_ssize_t = run_sd.shape[0]
    best: cython.double = INF
    i: cython.Py_ssize_t
    k: cython.Py_ssize_t
    d: cython.double
    x: cython.double
    first: cython.double
    pre: cython.bint
    for i in range(m):
        j = jobs[i]
        if j.spread_gpu_watts <= 0.0:
            continue
        d = _queued_end(j.duration_s, end_cap, horizon)
        pre = preemption and j.preemptible
        first = INF
        for k in range(r):
            if not run_sd[k] > 0.0:
                continue
            if not pre and preemption and run_preemptible[k]:
                continue
            x = _run_end(run_end_s[k], end_cap, horizon)
            if x >= d and x < first:
                first = x
        if first < INF and first - d < best:
            best = first - d
    return best


@cython.cfunc
@cython.inline
def _run_end(end_s: cython.double, end_cap: cython.double, horizon: cython.double) -> cython.double:
    """A running job's end as the chance charges plan it: within the horizon,
    and one at or before `end_cap` (past, or due before the next cycle) to
    the horizon (`np.minimum(end_s, horizon)`, then `np.where`)."""
    x: cython.double = horizon if end_s > horizon else end_s
    return horizon if x <= end_cap else x


@cython.cfunc
@cython.inline
def _queued_end(
    duration_s: cython.double, end_cap: cython.double, horizon: cython.double
) -> cython.double:
    """A queued job's end if admitted now, as the chance charges plan it:
    `min(end_cap + max(duration_s, 1), horizon)`."""
    d: cython.double = end_cap + (1.0 if duration_s < 1.0 else duration_s)
    return horizon if d > horizon else d


@cython.cfunc
@cython.inline
def _increment(base: cython.double, var: cython.double) -> cython.double:
    """sqrt(base + var) - sqrt(base), without cancellation for a large base
    (0 where both are 0)."""
    den: cython.double = sqrt(base + var) + sqrt(base)
    return var / den if den > 0.0 else 0.0


@cython.cfunc
def _pairwise_sum(
    a: cython.double[:], lo: cython.Py_ssize_t, n: cython.Py_ssize_t
) -> cython.double:
    """numpy's sum of a[lo:lo+n], to the bit: eight running sums per block
    of up to 128, halves above that."""
    res: cython.double = 0.0
    i: cython.Py_ssize_t
    if n < 8:
        for i in range(n):
            res += a[lo + i]
        return res
    if n <= 128:
        r0: cython.double = a[lo]
        r1: cython.double = a[lo + 1]
        r2: cython.double = a[lo + 2]
        r3: cython.double = a[lo + 3]
        r4: cython.double = a[lo + 4]
        r5: cython.double = a[lo + 5]
        r6: cython.double = a[lo + 6]
        r7: cython.double = a[lo + 7]
        i = 8
        while i < n - n % 8:
            r0 += a[lo + i]
            r1 += a[lo + i + 1]
            r2 += a[lo + i + 2]
            r3 += a[lo + i + 3]
            r4 += a[lo + i + 4]
            r5 += a[lo + i + 5]
            r6 += a[lo + i + 6]
            r7 += a[lo + i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[lo + i]
            i += 1
        return res
    n2: cython.Py_ssize_t = n // 2
    n2 -= n2 % 8
    return _pairwise_sum(a, lo, n2) + _pairwise_sum(a, lo + n2, n - n2)


@cython.cfunc
@cython.inline
def _upper_bound(a: cython.double[:], n: cython.Py_ssize_t, v: cython.double) -> cython.Py_ssize_t:
    """numpy's searchsorted(a[:n], v, side="right"): the first i with a[i] > v."""
    lo: cython.Py_ssize_t = 0
    hi: cython.Py_ssize_t = n
    mid: cython.Py_ssize_t
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] <= v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@cython.cfunc
@cython.inline
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
