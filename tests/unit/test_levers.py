"""Two levers in the core: throttling and preempting, chosen by lost work.

Scenarios a site relies on, and properties over random sites (the shedding sites of
core_snapshots, with power limits turned on)."""

from __future__ import annotations

import dataclasses

from core_snapshots import CAP_DROP_NOW, MEASURED_OVERDRAW, MIXED, snapshots
from hypothesis import given, settings
from hypothesis import strategies as st

from wattcap.admission import NodeState, RunningJob, Snapshot, decide
from wattcap.levers import Candidate, Site, _preempt_only, choose, floor_w
from wattcap.model import CapWindow, PowerLimits, PowerPolicy
from wattcap.powerlimit import slowdown

NOW = 1_782_864_000.0
LIMITS = PowerLimits(enabled=True, min_fraction=0.5)


def policy(cap: float, limits: PowerLimits = LIMITS, **kw: object) -> PowerPolicy:
    base: dict[str, object] = dict(
        pue=1.0, node_base_watts=0.0, gpu_idle_watts=100.0, gpu_tdp_watts=700.0, safety_margin=0.0
    )
    return PowerPolicy(cap_watts=cap, power_limits=limits, **{**base, **kw})  # type: ignore[arg-type]


def r(
    key: str,
    watts: float = 600.0,
    prio: int = 0,
    pre: bool = True,
    started: float = -3600.0,
    left: float = 36_000.0,
    limit: float | None = None,
) -> RunningJob:
    return RunningJob(key, 1, 8, watts, prio, pre, NOW + started, NOW + left, gpu_limit_watts=limit)


def window_site(cap_w: float, window_cap_w: float, limits: PowerLimits = LIMITS, **kw: object):
    """Four 8-GPU jobs at 600 W (19.2 kW above 0 idle... plus idle) and a window from now."""
    win = CapWindow(NOW, NOW + 2 * 3600.0, window_cap_w, "evening-peak")
    return policy(cap_w, limits, cap_schedule=(win,), **kw)


def snap(pol: PowerPolicy, running: list[RunningJob], **kw: object) -> Snapshot:
    nodes = [NodeState(f"n{i}", 8, 0) for i in range(len(running))]
    return Snapshot(NOW, pol, nodes, running, [], **kw)  # type: ignore[arg-type]


def planned_after(s: Snapshot, d: object, believed: bool = False) -> float:
    """Site power once the decision's preemptions and limits take effect, from the
    policy's power model: each kept GPU at min(its plan, its limit), or with `believed`
    at min(what it is believed to draw, its limit)."""
    pol = s.policy
    gone = {p.key for p in d.preempts}  # type: ignore[attr-defined]
    idle = pol.pue * (
        len(s.nodes) * pol.node_base_watts + sum(n.gpus_total for n in s.nodes) * pol.gpu_idle_watts
    )
    total = idle
    for j in s.running:
        if j.key in gone:
            continue
        natural = (j.believed_gpu_watts or j.gpu_watts) if believed else j.gpu_watts
        lim = d.gpu_limits.get(j.key)  # type: ignore[attr-defined]
        w = natural if lim is None else min(natural, lim)
        total += pol.pue * j.gpus * (w - pol.gpu_idle_watts)
    return total


# ------------------------------------------------------------------ scenarios

FOUR = [r(f"j{i}", started=-3600.0 * (i + 1)) for i in range(4)]
IDLE = 32 * 100.0
FULL = IDLE + 4 * 8 * 500.0  # 19.2 kW: four jobs at 600 W on a 100 W idle


def test_a_quarter_cut_is_met_by_throttling_alone() -> None:
    """25 % of the headroom above idle taken away: every job runs a little slower,
    nobody is stopped, and the plan is under the window's cap."""
    wcap = IDLE + 0.75 * (FULL - IDLE)
    s = snap(window_site(FULL * 1.05, wcap), FOUR)
    d = decide(s)
    assert d.preempts == []
    assert set(d.gpu_limits) == {j.key for j in FOUR}
    assert planned_after(s, d) <= wcap + 1e-6
    for w in d.gpu_limits.values():
        assert 350.0 <= w < 600.0
    msg = d.limit_reasons["j0"]
    assert msg.startswith("throttled to ") and "demand-response window evening-peak" in msg


def test_without_limits_the_same_cut_preempts() -> None:
    wcap = IDLE + 0.75 * (FULL - IDLE)
    s = snap(window_site(FULL * 1.05, wcap, PowerLimits()), FOUR)
    d = decide(s)
    assert len(d.preempts) == 1
    assert d.gpu_limits == {} and d.limit_reasons == {}


def test_a_cut_deeper_than_the_floor_allows_preempts_then_throttles_the_rest() -> None:
    """Throttling all four to 350 W frees 8 kW; a 10 kW cut needs one preemption, and the
    three left are throttled only as far as the rest needs."""
    wcap = FULL - 10_000.0
    s = snap(window_site(FULL * 1.05, wcap), FOUR)
    d = decide(s)
    assert len(d.preempts) == 1
    kept = {j.key for j in FOUR} - {p.key for p in d.preempts}
    assert set(d.gpu_limits) <= kept
    assert abs(planned_after(s, d) - wcap) < 1e-3


def test_non_preemptible_jobs_are_throttled_never_stopped() -> None:
    jobs = [dataclasses.replace(j, preemptible=False) for j in FOUR]
    wcap = FULL - 10_000.0  # more than throttling can free
    s = snap(window_site(FULL * 1.05, wcap), jobs)
    d = decide(s)
    assert d.preempts == []
    assert d.gpu_limits == {j.key: 350.0 for j in jobs}  # each at its floor
    assert any("no preemptible job is left" in n for n in d.notes)


def test_priority_weights_who_is_throttled() -> None:
    jobs = [r("low", prio=0), r("high", prio=9)]
    full = 16 * 100.0 + 2 * 8 * 500.0
    s = snap(window_site(full * 1.05, full - 2000.0), jobs)
    d = decide(s)
    assert d.preempts == []
    assert d.gpu_limits["low"] < d.gpu_limits.get("high", 600.0)


def test_max_slowdown_bounds_throttling_so_a_long_cut_preempts() -> None:
    limits = PowerLimits(enabled=True, min_fraction=0.5, max_slowdown=1.05)
    wcap = IDLE + 0.75 * (FULL - IDLE)
    s = snap(window_site(FULL * 1.05, wcap, limits), FOUR)
    d = decide(s)
    assert d.preempts  # 5 % slower frees too little
    for k, w in d.gpu_limits.items():
        assert slowdown(600.0, w) <= 1.05 + 1e-9, k


def test_limits_are_released_when_the_cap_comes_back() -> None:
    jobs = [dataclasses.replace(j, gpu_limit_watts=450.0, believed_gpu_watts=450.0) for j in FOUR]
    s = snap(policy(FULL * 1.05), jobs)  # no window: the natural draw fits
    d = decide(s)
    assert d.gpu_limits == {} and d.preempts == []
    # a throttled job measured at its limit is planned at its natural draw once released
    assert abs(d.projected_site_watts - FULL) < 1e-6


def test_a_throttled_job_measured_at_its_limit_stays_throttled() -> None:
    """Measured at 450 W under a 450 W limit says nothing about its natural 600 W: while
    the window lasts the limit holds (releasing it would go over)."""
    wcap = IDLE + 0.75 * (FULL - IDLE)
    jobs = [dataclasses.replace(j, gpu_limit_watts=450.0, believed_gpu_watts=450.0) for j in FOUR]
    s = snap(window_site(FULL * 1.05, wcap), jobs)
    d = decide(s)
    assert d.preempts == [] and set(d.gpu_limits) == {j.key for j in FOUR}


def test_measured_overdraw_past_grace_is_throttled() -> None:
    pol = policy(FULL)
    s = snap(pol, FOUR, measured_site_watts=FULL * 1.1, over_cap_since_s=NOW - 120.0)
    d = decide(s)
    assert d.preempts == [] and d.gpu_limits
    assert "measured site power" in next(iter(d.limit_reasons.values()))


def test_a_job_no_agent_throttles_is_preempted_not_throttled() -> None:
    """The agent-death fallback: a job whose limits went unconfirmed past the grace
    period is planned at its natural draw and cannot be throttled, so the cut that
    throttling alone met is met by preempting it (the others are throttled as before)."""
    wcap = IDLE + 0.75 * (FULL - IDLE)
    jobs = [dataclasses.replace(FOUR[0], throttleable=False), *FOUR[1:]]
    s = snap(window_site(FULL * 1.05, wcap), jobs)
    d = decide(s)
    assert "j0" not in d.gpu_limits
    assert planned_after(s, d) <= wcap + 1e-6
    dead = [dataclasses.replace(j, throttleable=False) for j in FOUR]
    d = decide(snap(window_site(FULL * 1.05, wcap), dead))
    assert d.gpu_limits == {} and d.preempts
    assert planned_after(snap(window_site(FULL * 1.05, wcap), dead), d) <= wcap + 1e-6


def test_the_decision_names_the_cut_its_limits_meet() -> None:
    """The cause, apart from the number, for statuses that print the limit in force."""
    wcap = IDLE + 0.75 * (FULL - IDLE)
    d = decide(snap(window_site(FULL * 1.05, wcap), FOUR))
    assert d.limit_cause.startswith("demand-response window evening-peak")
    assert d.limit_kind == "CapDrop"
    assert decide(snap(policy(FULL * 1.05), FOUR)).limit_cause == ""


# ------------------------------------------------------------------ properties

SITES = snapshots((MEASURED_OVERDRAW, CAP_DROP_NOW, MIXED))


def with_limits(s: Snapshot, frac: float, slow: float | None) -> Snapshot:
    frac = max(frac, s.policy.gpu_idle_watts / s.policy.gpu_tdp_watts)
    lim = PowerLimits(enabled=True, min_fraction=frac, max_slowdown=slow)
    return dataclasses.replace(s, policy=dataclasses.replace(s.policy, power_limits=lim))


@settings(max_examples=150, deadline=None)
@given(SITES, st.floats(0.3, 0.9), st.one_of(st.none(), st.floats(1.01, 3.0)))
def test_limits_stay_within_the_sites_bounds_and_plans_honour_them(
    s: Snapshot, frac: float, slow: float | None
) -> None:
    """No GPU is limited above TDP or below minFraction of it; only preemptible jobs are
    stopped; the decision plans every kept job at min(natural, limit); and the cut is met
    unless every job is at its floor and every preemptible job stopped."""
    s = with_limits(s, frac, slow)
    pol = s.policy
    d = decide(s)
    tdp = pol.gpu_tdp_watts
    floor = pol.power_limits.min_fraction * tdp
    by_key = {j.key: j for j in s.running}
    gone = {p.key for p in d.preempts}
    for k, w in d.gpu_limits.items():
        assert floor - 1e-6 <= w <= tdp + 1e-6, (k, w)
        assert k in by_key and k not in gone
    assert all(by_key[k].preemptible for k in gone)
    admitted = sum(a.site_watts for a in d.admits)
    assert abs(d.projected_site_watts - admitted - planned_after(s, d)) < 1e-6 * max(
        1.0, d.projected_site_watts
    )
    target = min(
        pol.effective_cap_at(s.now_s), pol.effective_cap_at(s.now_s + pol.control_period_s)
    )
    if planned_after(s, d, believed=True) > target + 1e-3 and not d.admits:
        # the cut is met unless no lever is left: nothing left to stop, all at their floor
        site = Site(pol.pue, pol.gpu_idle_watts, tdp, pol.power_limits.min_fraction, slow, 0, True)
        for j in s.running:
            natural = j.believed_gpu_watts or j.gpu_watts
            if j.key in gone:
                continue
            assert not pol.preemption or not j.preemptible or natural <= pol.gpu_idle_watts
            c = Candidate(j.key, j.gpus, natural, j.priority, j.preemptible, 0.0, 1.0)
            f = floor_w(c, site)
            assert natural <= f + 1e-6 or abs(d.gpu_limits[j.key] - f) < 1e-6


@settings(max_examples=150, deadline=None)
@given(SITES, st.floats(0.3, 0.9), st.one_of(st.none(), st.floats(1.01, 3.0)))
def test_disabled_limits_never_throttle_and_decide_as_before(
    s: Snapshot, frac: float, slow: float | None
) -> None:
    """Bounds set but `enabled: false`: no limit, and the very decision of a policy
    without the section (the default)."""
    off = PowerLimits(enabled=False, min_fraction=frac, max_slowdown=slow)
    s_off = dataclasses.replace(s, policy=dataclasses.replace(s.policy, power_limits=off))
    d = decide(s_off)
    base = decide(s)
    assert d.gpu_limits == {} and d.limit_reasons == {}
    assert d.preempts == base.preempts and d.admits == base.admits


candidates = st.builds(
    Candidate,
    key=st.uuids().map(str),
    gpus=st.sampled_from([1, 2, 4, 8, 16]),
    natural_w=st.floats(120.0, 700.0),
    priority=st.integers(0, 5),
    preemptible=st.booleans(),
    ran_s=st.floats(0.0, 20_000.0),
    cut_s=st.floats(15.0, 20_000.0),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(candidates, min_size=1, max_size=12, unique_by=lambda c: c.key),
    st.floats(1.0, 60_000.0),
    st.floats(0.3, 0.9),
    st.booleans(),
)
def test_the_chosen_plan_loses_no_more_than_preempting_alone(
    cands: list[Candidate], need: float, frac: float, preemption: bool
) -> None:
    site = Site(1.2, 70.0, 700.0, max(frac, 0.1), None, 1800.0, preemption)
    order = [c.key for c in sorted(cands, key=lambda c: (c.priority, c.key)) if c.preemptible]
    plan = choose(cands, need, site, order)
    alt = _preempt_only(cands, need, site, order)
    if preemption and alt.covered:
        assert plan.covered and plan.lost <= alt.lost + 1e-6
    by_key = {c.key: c for c in cands}
    assert all(by_key[k].preemptible for k in plan.preempt)
    assert preemption or not plan.preempt
    for k, w in plan.limits.items():
        assert floor_w(by_key[k], site) - 1e-6 <= w <= min(by_key[k].natural_w, 700.0)
    if plan.covered:
        freed = sum(
            site.pue * by_key[k].gpus * max(by_key[k].natural_w - site.idle_w, 0.0)
            for k in plan.preempt
        ) + sum(
            site.pue * by_key[k].gpus * (by_key[k].natural_w - w) for k, w in plan.limits.items()
        )
        assert freed >= need - 1e-6 * need
