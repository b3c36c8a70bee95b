"""Site-level chance-constrained admission (chance.py): the charges bound the
site's exceedance probability at every step, correlation costs spread, and
decide admits only what keeps the planned site within the coverage target."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from wattcap.admission import NodeState, QueuedJob, RunningJob, Snapshot, decide
from wattcap.chance import (
    base_shrinks_in,
    exceedance,
    queued_charges,
    running_charges,
    z_of,
)
from wattcap.forecast import Forecaster
from wattcap.model import CapWindow, ManifestError, PowerPolicy, parse_power_policy

NOW = 1_782_864_000.0
EPS = 1e-9

job = st.tuples(
    st.floats(0.0, 5000.0),  # mean (site watts above idle)
    st.floats(0.0, 800.0),  # sd
    st.sampled_from("abc"),  # class
    st.floats(60.0, 20000.0),  # end, seconds after now
    st.booleans(),  # preemptible
)


def _cols(jobs: list[tuple]) -> tuple[np.ndarray, ...]:
    mean = np.array([j[0] for j in jobs], float)
    sd = np.array([j[1] for j in jobs], float)
    end = np.array([j[3] for j in jobs], float)
    pre = np.array([j[4] for j in jobs], bool)
    return mean, sd, end, pre


def _assert_every_step_within(
    mean: np.ndarray,
    sd: np.ndarray,
    end: np.ndarray,
    pre: np.ndarray,
    classes: list[str],
    charge: np.ndarray,
    rho: float,
    target: float,
) -> None:
    """At every step of the plan (each job's end; with a cap window's steps,
    where preemptible jobs are shed, too), the jobs running then, planned at
    their charges, exceed what they are planned at with probability at most
    `target`, whatever classes they belong to.

    The tolerance, and why it is tight: the room is widened by EPS (relative
    and absolute), which covers every rounding of the sums on both sides (the
    charges are sums of non-negative terms, each rounded by a relative 1e-16 or
    so, with at most 25 terms); what is left is the rounding of the normal tail
    itself, about 1e-16. A charge low by more than that, as the prefix-sum
    differences once left it (a small base taken as the difference of two large
    sums), fails here."""
    for t in sorted({0.0, *end.tolist()}):
        for window in (False, True):
            on = (end > t) & ~(pre & window)
            if not on.any():
                continue
            room = float(charge[on].sum()) * (1 + EPS) + EPS
            p = exceedance(
                mean[on], sd[on], [c for c, o in zip(classes, on, strict=True) if o], rho, room
            )
            assert p <= target + 1e-12, (t, window, p)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(job, min_size=1, max_size=25),
    st.floats(0.0, 1.0),
    st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99]),
)
def test_running_charges_keep_every_step_within_the_coverage_target(jobs, rho, coverage):
    """Running jobs planned at their charges stay within the coverage target
    at every step of the plan."""
    mean, sd, end, pre = _cols(jobs)
    classes = [j[2] for j in jobs]
    z = z_of(coverage)
    charge = running_charges(mean, sd, end, pre, z, rho)
    assert np.all(charge >= mean - EPS)
    _assert_every_step_within(mean, sd, end, pre, classes, charge, rho, 1 - coverage)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(job, max_size=15),
    st.lists(job, min_size=1, max_size=10),
    st.floats(0.0, 1.0),
)
def test_queued_charges_added_to_running_ones_stay_within_the_target(running, queued, rho):
    """Jobs admitted together, each at its queued charge against the running
    jobs, keep every step within the target with the running jobs' charges."""
    z = z_of(0.95)
    rm, rs, re, rp = _cols(running)
    qm, qs, qe, qp = _cols(queued)
    rc = running_charges(rm, rs, re, rp, z, rho)
    qc = queued_charges(qm, qs, qe, qp, rs, re, rp, z, rho)
    mean, sd = np.concatenate((rm, qm)), np.concatenate((rs, qs))
    end, pre = np.concatenate((re, qe)), np.concatenate((rp, qp))
    charge = np.concatenate((rc, qc))
    classes = [j[2] for j in running + queued]
    _assert_every_step_within(mean, sd, end, pre, classes, charge, rho, 0.05)


small_sd = st.floats(-6.0, 0.0).map(lambda e: 10.0**e)  # 1e-6 to 1 W
small_job = st.tuples(small_sd, st.floats(200.0, 20000.0), st.booleans())  # sd, end, preemptible


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(1.0, 800.0), st.booleans()), min_size=1, max_size=4),
    st.lists(small_job, min_size=1, max_size=6),
    st.lists(small_job, max_size=4),
    st.floats(0.0, 1.0),
)
@example(
    [(794.861495425449, False)],
    [(2.2296684844944336e-05, 5000.0, True), (1.71173401626823e-05, 10000.0, False)],
    [],
    0.0,
)  # running: 7.3 % over
@example(
    [(741.6443396562657, False)],
    [(0.00010873895587283365, 10000.0, False)],
    [(0.00011954381115376763, 5000.0, False)],
    0.0,
)  # queued: 0.16 % over
def test_small_spreads_are_charged_in_full_beside_large_ones_that_end_first(
    large, small, queued, rho
):
    """Jobs of every scale of spread: large ones that end within 100 s, small
    ones (1e-6 to 1 W) that run on after them, running and queued. Once the
    large ones have ended, the small ones' charges alone must keep the target.
    Their bases were the difference of two prefix sums of variance that held
    the large ones too, so a base of 1e-10 W^2 came out of 6e5 - 6e5 and the
    charges fell 7 % (in probability) over the target: the bases are now sums
    of just the variances they hold."""
    z = z_of(0.95)
    big = [(0.0, s, "a", 100.0, p) for s, p in large]
    rest = [(0.0, s, "abc"[i % 3], e, p) for i, (s, e, p) in enumerate(small)]
    que = [(0.0, s, "bc"[i % 2], e, p) for i, (s, e, p) in enumerate(queued)]
    rm, rs, re, rp = _cols(big + rest)
    rc = running_charges(rm, rs, re, rp, z, rho)
    if que:
        qm, qs, qe, qp = _cols(que)
        qc = queued_charges(qm, qs, qe, qp, rs, re, rp, z, rho)
        mean, sd = np.concatenate((rm, qm)), np.concatenate((rs, qs))
        end, pre, charge = (
            np.concatenate((re, qe)),
            np.concatenate((rp, qp)),
            np.concatenate((rc, qc)),
        )
    else:
        mean, sd, end, pre, charge = rm, rs, re, rp, rc
    classes = [j[2] for j in big + rest + que]
    _assert_every_step_within(mean, sd, end, pre, classes, charge, rho, 0.05)


def test_correlation_raises_the_planned_spread():
    """Jobs of one class that move together spread more than independent
    ones: the plan reserves more for them, up to each job's own quantile."""
    n = 16
    mean, sd = np.full(n, 1000.0), np.full(n, 100.0)
    end, pre = np.full(n, 3600.0), np.zeros(n, bool)
    z = z_of(0.95)
    reserve = {
        rho: float(running_charges(mean, sd, end, pre, z, rho).sum() - mean.sum())
        for rho in (0.0, 0.1, 0.5, 1.0)
    }
    assert reserve[0.0] == pytest.approx(z * 100.0 * math.sqrt(n))  # sqrt(N), not N
    assert reserve[0.0] < reserve[0.1] < reserve[0.5] < reserve[1.0]
    assert reserve[1.0] == pytest.approx(z * 100.0 * n)  # every job at its own quantile


def test_a_job_without_spread_is_charged_its_forecast():
    mean, sd = np.array([500.0, 700.0]), np.zeros(2)
    end, pre = np.array([100.0, 200.0]), np.zeros(2, bool)
    assert running_charges(mean, sd, end, pre, 1.645, 0.1).tolist() == [500.0, 700.0]


def test_a_base_shrinks_when_the_job_outlasts_a_running_one():
    run_sd = np.array([10.0, 10.0, 0.0, 10.0])
    run_end = np.array([500.0, 900.0, 400.0, 450.0])
    run_pre = np.array([False, False, False, True])
    # ending at 420: the running job ending at 500 leaves its base 80 s later
    # (the one at 450 is preemptible, the one at 400 has no spread)
    assert base_shrinks_in(420.0, False, run_sd, run_end, run_pre) == 80.0
    assert base_shrinks_in(420.0, True, run_sd, run_end, run_pre) == 30.0
    assert base_shrinks_in(1000.0, False, run_sd, run_end, run_pre) == math.inf


# ------------------------------------------------------------------ decide


def _policy(model: str, cap: float = 100_000.0, **kw: object) -> PowerPolicy:
    return PowerPolicy(
        cap_watts=cap,
        pue=1.0,
        node_base_watts=0.0,
        gpu_idle_watts=100.0,
        gpu_tdp_watts=700.0,
        safety_margin=0.0,
        admission_model=model,
        **kw,  # type: ignore[arg-type]
    )


def _queue(n: int, mean: float = 400.0, spread: float = 60.0) -> list[QueuedJob]:
    return [
        QueuedJob(f"q{i:02d}", 1, 1, mean, 0, NOW - 100 + i, 3600.0, spread_gpu_watts=spread)
        for i in range(n)
    ]


@pytest.mark.parametrize("believed", [None, 400.0])
def test_a_coming_cap_sheds_at_the_charges_whether_or_not_the_draw_is_believed_apart(believed):
    """A cap drop a few seconds ahead leaves room for the running job's mean
    but not for its charge (mean plus its share of the site's spread): it is
    shed. The same when the caller believes the job's draw apart from its
    plan (the operator does, keeping the last measured figure while its
    meter is silent; the simulator believes the plan): believing the mean
    must not turn the chance constraint off for shedding."""
    drop = (CapWindow(NOW + 5, NOW + 3600, 800.0 + 2800.0, "dr"),)
    pol = _policy("siteChance", 100_000.0, cap_schedule=drop)
    run = [
        RunningJob(
            "r", 1, 8, 400.0, 0, True, NOW - 600, NOW + 3600,
            believed_gpu_watts=believed, spread_gpu_watts=50.0,
        )
    ]  # fmt: skip
    dec = decide(Snapshot(NOW, pol, [NodeState("n0", 8, 0)], run, []))
    assert [p.key for p in dec.preempts] == ["r"]


def test_site_chance_admits_more_small_jobs_than_per_job_quantiles():
    """Forty one-GPU jobs whose draws spread independently: their sum needs
    far less than forty upper quantiles, so more of them fit under the cap."""
    nodes = [NodeState(f"n{i}", 8, 8) for i in range(8)]
    queued = _queue(40)
    cap = 40 * 300.0 * 0.9  # the means above idle would fit 36 of them
    per_job = [
        QueuedJob(j.key, 1, 1, 400.0 + z_of(0.95) * 60.0, 0, j.submitted_s, 3600.0) for j in queued
    ]
    independent = _policy("siteChance", cap, class_correlation=0.0)
    n_site = len(decide(Snapshot(NOW, independent, nodes, [], queued)).admits)
    n_job = len(decide(Snapshot(NOW, _policy("perJobQuantile", cap), nodes, [], per_job)).admits)
    assert n_site > n_job
    assert n_site <= 36


# per-GPU watts: mean, spread; class, duration, preemptible
gpu_job = st.tuples(
    st.floats(150.0, 650.0),
    st.floats(0.0, 150.0),
    st.sampled_from("xy"),
    st.floats(600.0, 30000.0),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(gpu_job, max_size=12),
    st.lists(gpu_job, min_size=1, max_size=20),
    st.floats(0.0, 1.0),
    st.floats(20_000.0, 60_000.0),
    st.booleans(),
)
def test_decide_admits_only_while_the_site_stays_within_the_target(
    running, queued, rho, cap, window
):
    """After a siteChance cycle, the running and admitted jobs (whatever their
    classes) exceed the usable cap with probability at most 1 - coverage at
    every step of the plan, a cap window included: the property the model
    promises, checked with the classes decide never sees."""
    pol = _policy("siteChance", cap, class_correlation=rho, coverage=0.95)
    if window:
        pol = _policy(
            "siteChance",
            cap,
            class_correlation=rho,
            coverage=0.95,
            cap_schedule=(CapWindow(NOW + 3000, NOW + 9000, cap * 0.6, "dr"),),
        )
    run = [
        RunningJob(f"r{i}", 1, 2, m, 0, p, NOW - 10, NOW + e, spread_gpu_watts=s)
        for i, (m, s, _, e, p) in enumerate(running)
    ]
    nodes = [NodeState(f"n{i}", 8, 8) for i in range(8)]
    for k in range(len(run)):  # two GPUs each, packed from the first node
        nodes[k // 4].gpus_free -= 2
    que = [
        QueuedJob(f"q{i}", 1, 2, m, 0, NOW - 100 + i, e, p, spread_gpu_watts=s)
        for i, (m, s, _, e, p) in enumerate(queued)
    ]
    cls = {f"r{i}": c for i, (_, _, c, _, _) in enumerate(running)}
    cls.update({f"q{i}": c for i, (_, _, c, _, _) in enumerate(queued)})
    dec = decide(Snapshot(NOW, pol, nodes, run, que))
    admitted = {a.key for a in dec.admits}
    # (key, mean and sd of its site watts above idle, end, preemptible)
    before = [
        (j.key, 2 * (j.gpu_watts - 100), 2 * j.spread_gpu_watts, j.expected_end_s, j.preemptible)
        for j in run
    ]
    after = before + [
        (j.key, 2 * (j.gpu_watts - 100), 2 * j.spread_gpu_watts, NOW + j.duration_s, j.preemptible)
        for j in que
        if j.key in admitted
    ]
    room_above_idle = -64 * 100.0  # idle GPUs draw 100 W each, nodes nothing
    steps = {
        NOW,
        *(j[3] for j in after),
        *(e for w in pol.cap_schedule for e in (w.start_s, w.end_s)),
    }

    def p_over(jobs: list[tuple], t: float) -> float:
        # preemptible work counts only where no window has dropped the cap (it is shed there)
        dropped = pol.cap_at(t) < pol.cap_at(NOW)
        on = [j for j in jobs if j[3] > t and not (j[4] and dropped)]
        mean, sd = np.array([j[1] for j in on]), np.array([j[2] for j in on])
        return exceedance(mean, sd, [cls[j[0]] for j in on], rho, pol.cap_at(t) + room_above_idle)

    for t in sorted(steps):
        if p_over(before, t) > 0.05:
            continue  # over before this cycle: what it admitted is not to blame
        assert p_over(after, t) <= 0.05 + 1e-9, (t, sorted(admitted))


# ------------------------------------------------------------------ policy, forecast


def test_admission_model_and_correlation_are_read_and_checked():
    p = parse_power_policy(
        {"capWatts": 1e6, "admissionModel": "perJobQuantile", "classCorrelation": 0.3}
    )
    assert p.admission_model == "perJobQuantile" and p.class_correlation == 0.3
    assert parse_power_policy({"capWatts": 1e6}).admission_model == "siteChance"
    with pytest.raises(ManifestError, match="admissionModel"):
        parse_power_policy({"capWatts": 1e6, "admissionModel": "optimistic"})
    with pytest.raises(ManifestError, match="classCorrelation"):
        parse_power_policy({"capWatts": 1e6, "classCorrelation": 1.5})


def test_a_class_forecast_as_a_distribution_puts_its_bound_at_the_target():
    f = Forecaster(700.0, 70.0, coverage=0.95)
    for w in (300.0, 320.0, 280.0, 310.0, 290.0, 305.0):
        f.observe("llm", w, 600.0, None)
    bound = f.forecast("llm")
    dist = f.distribution("llm")
    assert dist.gpu_watts == pytest.approx(300.833, abs=1e-2)  # the samples' mean
    assert dist.gpu_watts + z_of(0.95) * dist.spread_gpu_watts == pytest.approx(bound.gpu_watts)
    assert dist.calibrated_gpu_watts == bound.gpu_watts
    # nothing measured: the prior, planned as a bound with no spread
    assert f.distribution("new").spread_gpu_watts == 0.0
    # a running job's own draw may move its plan up: the plan follows measurement
    seen = f.measured(dist, 10, 350.0, 25.0)
    assert seen.gpu_watts == 350.0 and seen.spread_gpu_watts == pytest.approx(3.5)  # 1 % floor
    assert f.measured(dist, 4, 350.0, 400.0).spread_gpu_watts == pytest.approx(10.0)  # 20 / 2
