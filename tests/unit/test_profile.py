"""The profile (`wattcap.profile`): its operations, and the compiled module
held to its own source run as plain Python."""

from __future__ import annotations

import math

import numpy as np
from conftest import interpreted
from hypothesis import given, settings
from hypothesis import strategies as st

import wattcap.profile as compiled
from wattcap import chance
from wattcap.admission import QueuedJob
from wattcap.profile import Profile

PY = interpreted(compiled)


def _build(cls, now=0.0, ends=(), watts=(), pre=(), gpus=(), edges=(), caps=(100.0,), free_g=8.0):
    """A profile of running jobs ending at `ends` under a cap schedule: a
    usable cap of 90 % of `caps`, 5 W idle, control period 10 s."""
    cap_edges = np.array(edges, dtype=float)
    ecap_now = caps[int(np.searchsorted(cap_edges, now, side="right"))] * 0.9
    return cls(
        now,
        10.0,
        1000.0,
        np.array(ends, dtype=float),
        np.array(watts, dtype=float),
        np.array(pre, dtype=np.uint8),
        np.array(gpus, dtype=float),
        cap_edges,
        np.array(caps, dtype=float),
        0.9,
        ecap_now,
        5.0,
        free_g,
    )


def test_the_module_in_use_is_compiled() -> None:
    """The replay's speed rests on it; a build without a C compiler runs the
    same code as Python, correctly but slowly, and this says so."""
    assert compiled.COMPILED, (
        "wattcap.profile runs as plain Python: reinstall with a C compiler "
        "(pip install -e .) to build it"
    )


def test_running_work_frees_power_and_gpus_when_it_ends() -> None:
    prof = _build(Profile, ends=[50.0], watts=[40.0], pre=[False], gpus=[4.0], free_g=4.0)
    assert list(prof.times) == [0.0, 10.0, 50.0]
    # usable cap 90, less 5 idle and 40 running until t=50
    assert prof.free0_np == 45.0
    neg_np, _, neg_g = prof.minima()
    assert list(-neg_np) == [45.0, 45.0, 45.0]
    assert list(-neg_g) == [4.0, 4.0, 4.0]
    assert prof.first_shortfall(False, 60.0, 1, prof.end_index(100.0)) == 0
    assert prof.first_shortfall(False, 45.0, 4, prof.end_index(100.0)) == -1


def test_a_reservation_starts_when_running_work_ends_and_holds_its_steps() -> None:
    prof = _build(Profile, ends=[50.0], watts=[40.0], pre=[False], gpus=[4.0], free_g=4.0)
    assert prof.reserve(False, 60.0, 2, 30.0) == 50.0
    # the booking takes the last step (it lasts forever): nothing else fits there
    assert prof.reserve(False, 60.0, 2, 30.0) is None
    assert prof.first_shortfall(False, 30.0, 1, prof.end_index(20.0)) == -1


def test_a_split_keeps_the_values_of_the_step_it_splits() -> None:
    prof = _build(Profile, ends=[50.0], watts=[40.0], pre=[False], gpus=[4.0], free_g=4.0)
    k = prof.split(30.0)
    assert k == 2 and list(prof.times) == [0.0, 10.0, 30.0, 50.0]
    prof.take(0, k, 10.0, 1, False)
    neg_np, _, neg_g = prof.minima()
    assert list(-neg_np) == [35.0, 35.0, 35.0, 35.0]
    assert list(-neg_g) == [3.0, 3.0, 3.0, 3.0]
    assert prof.free0_np == 35.0
    assert prof.first_shortfall(False, 45.0, 1, prof.end_index(60.0)) == 0
    assert prof.first_shortfall(False, 45.0, 1, 4) == 0
    assert prof.split(30.0) == 2  # an edge already: no new step


def test_preemptible_work_is_not_planned_through_a_far_cap_drop() -> None:
    # the cap drops from 100 to 50 at t=100 and comes back at t=200
    prof = _build(Profile, edges=[100.0, 200.0], caps=[100.0, 50.0, 100.0])
    assert prof.step(2) == (100.0, True, 50.0)
    # a non-preemptible job of 60 W cannot run through the window; a preemptible one can
    assert prof.first_shortfall(False, 60.0, 1, prof.end_index(300.0)) == 2
    assert prof.first_shortfall(True, 60.0, 1, prof.end_index(300.0)) == -1
    assert prof.max_cap() == 90.0


def test_many_splits_grow_the_arrays() -> None:
    prof = _build(Profile, ends=[1000.0], watts=[10.0], pre=[False], gpus=[1.0])
    for t in range(11, 200, 3):
        prof.split(float(t))
    assert prof.n == 3 + len(range(11, 200, 3))
    assert np.all(np.diff(prof.times) > 0)
    neg_np, _, _ = prof.minima()
    assert np.all(-neg_np == 75.0)


@st.composite
def _case(draw):
    r = draw(st.integers(0, 12))
    steps = st.sampled_from([5.0, 10.0, 40.0, 70.0, 130.0, 400.0])
    ends = draw(st.lists(steps, min_size=r, max_size=r))
    watts = draw(st.lists(st.floats(0.0, 30.0), min_size=r, max_size=r))
    pre = draw(st.lists(st.booleans(), min_size=r, max_size=r))
    gpus = draw(st.lists(st.integers(1, 4).map(float), min_size=r, max_size=r))
    edges = draw(st.sampled_from([(), (60.0, 180.0), (5.0, 50.0, 100.0, 300.0)]))
    caps = [draw(st.floats(50.0, 200.0)) for _ in range(len(edges) + 1)]
    ops = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["split", "take", "reserve", "shortfall"]),
                st.booleans(),
                st.floats(0.0, 120.0),
                st.integers(0, 6),
                st.floats(1.0, 500.0),
            ),
            max_size=25,
        )
    )
    return dict(ends=ends, watts=watts, pre=pre, gpus=gpus, edges=edges, caps=caps), ops


@settings(max_examples=300, deadline=None)
@given(_case())
def test_compiled_and_interpreted_profiles_agree_to_the_bit(case) -> None:
    kw, ops = case
    a, b = _build(Profile, free_g=12.0, **kw), _build(PY.Profile, free_g=12.0, **kw)

    def same() -> None:
        assert a.n == b.n
        assert np.array_equal(a.times, b.times)
        for x, y in zip(a.minima(), b.minima(), strict=True):
            assert np.array_equal(x, y)
        assert (a.free0_np, a.free0_p) == (b.free0_np, b.free0_p)

    same()
    # the steps: now, the next cycle, cap edges in the horizon, planned ends
    edges = [e for e in kw["edges"] if 0.0 < e <= 1000.0]
    ends = [max(e, 10.0) for e in kw["ends"]]
    assert np.array_equal(a.times, np.unique([0.0, 10.0, *edges, *ends]))
    for op, pre, w, g, t in ops:
        if op == "split":
            assert a.split(t) == b.split(t)
        elif op == "take":
            e = a.end_index(t)
            assert e == b.end_index(t)
            a.take(0, e, w, g, pre)
            b.take(0, e, w, g, pre)
        elif op == "reserve":
            assert a.reserve(pre, w, g, t) == b.reserve(pre, w, g, t)
        else:
            e = a.end_index(t)
            assert a.first_shortfall(pre, w, g, e) == b.first_shortfall(pre, w, g, e)
        same()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6), max_size=400))
def test_sums_are_numpys_to_the_bit(values) -> None:
    """The profile sums running load as numpy would, so decide's figures do
    not move with the module that computes them."""
    a = np.array(values, dtype=float)
    assert PY._pairwise_sum(a, 0, a.size) == float(a.sum())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 16).map(float), st.floats(0.0, 800.0)),
        max_size=200,
    )
)
def test_running_watts_are_numpys_to_the_bit(jobs) -> None:
    gpus = np.array([g for g, _ in jobs], dtype=float)
    per_gpu = np.array([w for _, w in jobs], dtype=float)
    watts = 1.2 * gpus * (per_gpu - 70.0)
    positive = float(watts[watts > 0.0].sum()) if watts.size and watts.min() < 0 else None
    for mod in (compiled, PY):
        got, total, pos = mod.running_watts(gpus, per_gpu, 1.2, 70.0)
        assert np.array_equal(got, watts)
        assert total == float(watts.sum())
        assert pos == (float(watts.sum()) if positive is None else positive)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from([0.0, 50.0, 100.0]), st.booleans()),
        max_size=12,
    ),
    st.booleans(),
)
def test_a_queue_is_in_order_exactly_when_sorting_keeps_it(rows, by_priority) -> None:
    """`in_order` lets decide skip its sort; it must never pass a queue the
    sort would change."""
    from wattcap.admission import QueuedJob, _order_key
    from wattcap.model import PowerPolicy

    queue = [
        QueuedJob(f"j{i}", 1, 1, 300.0, prio, sub, 60.0, max_delay_s=10.0 if short else None)
        for i, (prio, sub, short) in enumerate(rows)
    ]
    ordering = "PriorityFIFO" if by_priority else "FIFO"
    policy = PowerPolicy(cap_watts=1e5, max_wait_s=80.0, ordering=ordering)
    now = 120.0
    want = sorted(queue, key=_order_key(policy, now)) == queue
    for mod in (compiled, PY):
        assert mod.in_order(queue, 80.0, now, by_priority) == want
        assert mod.in_order(sorted(queue, key=_order_key(policy, now)), 80.0, now, by_priority)


@st.composite
def _queue(draw):
    """Queued jobs as decide hands them to `queue_columns`: any width,
    draw above and below idle, durations from under a second to past the
    horizon, preemptible or not."""
    from wattcap.admission import QueuedJob

    n = draw(st.integers(0, 14))
    return [
        QueuedJob(
            f"q{i}",
            draw(st.integers(1, 4)),
            draw(st.integers(1, 16)),
            draw(st.floats(0.0, 900.0)),
            0,
            0.0,
            draw(st.sampled_from([0.0, 0.5, 1.0, 1.5, 7.0, 35.0, 300.0, 2000.0])),
            preemptible=draw(st.booleans()),
        )
        for i in range(n)
    ]


@settings(max_examples=300, deadline=None)
@given(
    _case(),
    _queue(),
    st.floats(1.0, 2.0),
    st.booleans(),
    st.floats(0.0, 40.0),
    st.floats(0.0, 400.0),
    st.booleans(),
    st.booleans(),
    st.data(),
)
def test_compiled_and_interpreted_queue_scans_agree_to_the_bit(
    case, queue, pue, preemption, free_g, usable, may_start, throughout, data
) -> None:
    """`queue_columns` and `Profile.first_fit` (the bulk scan of a deep
    queue) are the compiled loops the profile test above does not run: each
    must give the same numbers as its source run as plain Python, so a stale
    build is caught here and not by a decision that drifts."""
    kw, ops = case
    args = (pue, 5.0, preemption, 0.0, 1000.0, 24.0, 8.0, usable)
    cols, flags = compiled.queue_columns(queue, *args)
    cols_py, flags_py = PY.queue_columns(queue, *args)
    assert np.array_equal(cols, cols_py) and np.array_equal(flags, flags_py)
    a, b = _build(Profile, free_g=12.0, **kw), _build(PY.Profile, free_g=12.0, **kw)
    for op, pre, w, g, t in ops:  # book some load, so the scan has steps to check
        if op == "reserve":
            assert a.reserve(pre, w, g, t) == b.reserve(pre, w, g, t)
        elif op == "take":
            a.take(0, a.end_index(t), w, g, pre)
            b.take(0, b.end_index(t), w, g, pre)
    m = len(queue)
    lo = data.draw(st.integers(0, m))
    hi = data.draw(st.integers(lo, m))
    _, g_col, w_col, _, end = cols
    pre_u8, _, skip_u8 = flags
    scan = (w_col, g_col, pre_u8, skip_u8, end, lo, hi, free_g, may_start, throughout)
    assert a.first_fit(*scan) == b.first_fit(*scan)


# The chance charges as chance.py first wrote them, in numpy: the model's
# arithmetic, which the compiled kernels (`chance_running`, `chance_queued`)
# must give to the bit, or decide's admissions would move with the module.
def _np_increments(base, var):
    top = np.sqrt(base + var)
    den = top + np.sqrt(base)
    return np.divide(var, den, out=np.zeros_like(var), where=den > 0)


def _np_sums_before(v):
    return np.concatenate(([0.0], np.cumsum(v)))


def _np_running(mean, sd, end, pre, zc, zi):
    m = mean.size
    var = sd * sd
    base = np.zeros(m)
    npi = np.flatnonzero(~pre)
    np_ends, np_cum = np.zeros(0), np.zeros(1)
    if npi.size:
        order = npi[np.lexsort((npi, -end[npi]))]
        np_cum = _np_sums_before(var[order])
        base[order] = np_cum[:-1]
        np_ends = end[order][::-1]
    pi = np.flatnonzero(pre)
    if pi.size:
        order = pi[np.lexsort((pi, -end[pi]))]
        later = np_ends.size - np.searchsorted(np_ends, end[order], side="left")
        base[order] = np_cum[later] + _np_sums_before(var[order])[:-1]
    return mean + zc * sd + zi * _np_increments(base, var)


def _np_queued(mean, sd, end, pre, run_sd, run_end, run_pre, zc, zi):
    var, run_var = sd * sd, run_sd * run_sd

    def later(sel):
        ends = run_end[sel]
        order = np.argsort(ends, kind="stable")
        cum = _np_sums_before(run_var[sel][order][::-1])
        return cum[ends.size - np.searchsorted(ends[order], end, side="left")]

    base = later(~run_pre)
    if run_pre.any():
        base = base + np.where(pre, later(run_pre), 0.0)
    return mean + zc * sd + zi * _np_increments(base, var)


_charged = st.tuples(
    st.floats(-500.0, 5000.0),  # mean
    st.one_of(st.just(0.0), st.floats(0.0, 800.0)),  # sd
    st.sampled_from([100.0, 700.0, 3600.0]) | st.floats(60.0, 20000.0),  # end (ties too)
    st.booleans(),  # preemptible
)


def _cols(rows):
    return (
        np.array([r[0] for r in rows], dtype=float),
        np.array([r[1] for r in rows], dtype=float),
        np.array([r[2] for r in rows], dtype=float),
        np.array([r[3] for r in rows], dtype=bool),
    )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_charged, max_size=40),
    st.lists(_charged, max_size=12),
    st.floats(0.0, 1.0),
    st.sampled_from([0.5, 0.9, 1.645, 2.33]),
)
def test_the_chance_charges_are_numpys_to_the_bit(running, queued, rho, z) -> None:
    """siteChance charges every running and queued job each cycle; compiled,
    they must be the numpy model's figures exactly, as plain Python too."""
    zc, zi = z * np.sqrt(rho), z * np.sqrt(1.0 - rho)
    rm, rs, re, rp = _cols(running)
    qm, qs, qe, qp = _cols(queued)
    want_r = _np_running(rm, rs, re, rp, zc, zi)
    want_q = _np_queued(qm, qs, qe, qp, rs, re, rp, zc, zi)
    for mod in (compiled, PY):
        got_r = mod.chance_running(rm, rs, re, rp.view(np.uint8), zc, zi)
        got_q = mod.chance_queued(qm, qs, qe, qp.view(np.uint8), rs, re, rp.view(np.uint8), zc, zi)
        assert got_r.tobytes() == want_r.tobytes()
        assert got_q.tobytes() == want_q.tobytes()


# decide's siteChance steps as admission._Chance wrote them in numpy around
# the charges (the ends it plans with, the queued jobs' columns): the fused
# kernels (`chance_charge`, `chance_queued_jobs`, `chance_grows_in`) must
# give these figures to the bit.
def _np_planned_ends(end_s, end_cap, horizon, period_end=None):
    end = np.minimum(end_s, horizon)
    later = end if period_end is None else np.maximum(end, period_end)
    return np.where(end <= end_cap, horizon, later)


def _np_charge(mean, sd, end_s, pre, preemption, end_cap, horizon, period_end, z, rho):
    end = _np_planned_ends(end_s, end_cap, horizon, period_end)
    pre = pre if preemption else np.zeros(sd.size, dtype=bool)
    watts = chance.running_charges(mean, sd, end, pre, z, rho)
    total = float(watts.sum())
    # what `_RunningLoad.positive_sum` takes of them
    nonneg = not watts.size or float(watts.min()) >= 0.0
    return watts, total, total if nonneg else float(watts[watts > 0.0].sum())


def _np_queue_charges(
    jobs, pue, idle, preemption, end_cap, horizon, run_sd, run_end_s, run_pre, z, rho
):
    m = len(jobs)
    g = np.fromiter((j.replicas * j.gpus_per_replica for j in jobs), float, m)
    mean = pue * g * np.maximum(np.fromiter((j.gpu_watts for j in jobs), float, m) - idle, 0.0)
    sd = pue * g * np.fromiter((j.spread_gpu_watts for j in jobs), float, m)
    if not sd.any():
        return mean
    dur = np.fromiter((j.duration_s for j in jobs), float, m)
    end = np.minimum(end_cap + np.maximum(dur, 1.0), horizon)
    pre = np.fromiter((j.preemptible and preemption for j in jobs), bool, m)
    run_end = _np_planned_ends(run_end_s, end_cap, horizon)
    run_pre = run_pre if preemption else np.zeros(run_sd.size, dtype=bool)
    return chance.queued_charges(mean, sd, end, pre, run_sd, run_end, run_pre, z, rho)


def _np_grows_in(jobs, preemption, end_cap, horizon, run_sd, run_end_s, run_pre):
    run_end = _np_planned_ends(run_end_s, end_cap, horizon)
    run_pre = run_pre if preemption else np.zeros(run_sd.size, dtype=bool)
    best = math.inf
    for j in jobs:
        if j.spread_gpu_watts <= 0.0:
            continue
        end = min(end_cap + max(j.duration_s, 1.0), horizon)
        pre = j.preemptible and preemption
        best = min(best, chance.base_shrinks_in(end, pre, run_sd, run_end, run_pre))
    return best


# ends about now (3000 s): at it, within the next period (15 s), at the
# horizon (4 h on) and past it, so each branch of the planned ends is taken
_near_now = st.sampled_from([0.0, 2990.0, 3000.0, 3007.0, 3015.0, 3016.0, 17400.0, 18000.0])
_planned = st.tuples(
    st.floats(-500.0, 5000.0),  # mean
    st.one_of(st.just(0.0), st.floats(0.0, 800.0)),  # sd
    _near_now | st.floats(0.0, 20000.0),  # end
    st.booleans(),  # preemptible
)

_queued_job = st.builds(
    QueuedJob,
    key=st.just("j"),
    replicas=st.integers(1, 4),
    gpus_per_replica=st.integers(1, 8),
    gpu_watts=st.floats(0.0, 800.0),
    priority=st.just(0),
    submitted_s=st.just(0.0),
    duration_s=st.sampled_from([0.0, 0.5, 7.0, 15.0, 16.0, 14400.0, 15000.0])
    | st.floats(0.0, 20000.0),
    preemptible=st.booleans(),
    spread_gpu_watts=st.one_of(st.just(0.0), st.floats(0.0, 100.0)),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(_planned, max_size=40),
    st.lists(_queued_job, max_size=12),
    st.booleans(),
    st.sampled_from([3000.0, 2999.5]),
    st.floats(0.0, 1.0),
    st.sampled_from([0.5, 1.645, 2.33]),
)
def test_decides_chance_steps_fused_are_the_numpy_steps_to_the_bit(
    running, queued, preemption, now, rho, z
) -> None:
    """decide charges the running jobs and the queue every cycle through one
    compiled call each (ends planned and columns read in the same loop);
    their figures must be the numpy steps' they replaced, as plain Python too."""
    rm, rs, re, rp = _cols(running)
    zc, zi = chance.weights(z, rho)
    horizon, period_end = now + 14400.0, now + 15.0  # 17,400 s and 3,015 s at 3,000 s
    want_w, want_total, want_pos = _np_charge(
        rm, rs, re, rp, preemption, now, horizon, period_end, z, rho
    )
    run = (rs, re, rp)
    want_q = _np_queue_charges(queued, 1.2, 70.0, preemption, now, horizon, *run, z, rho)
    want_g = _np_grows_in(queued, preemption, now, horizon, *run)
    for mod in (compiled, PY):
        got_w, got_total, got_pos = mod.chance_charge(
            rm, rs, re, rp.view(np.uint8), preemption, now, horizon, period_end, zc, zi
        )
        assert got_w.tobytes() == want_w.tobytes()
        assert got_total == want_total
        assert got_pos == want_pos
        flags = rp.view(np.uint8)
        got_q = mod.chance_queued_jobs(
            queued, 1.2, 70.0, preemption, now, horizon, rs, re, flags, zc, zi
        )
        assert got_q.tobytes() == want_q.tobytes()
        assert mod.chance_grows_in(queued, preemption, now, horizon, rs, re, flags) == want_g
