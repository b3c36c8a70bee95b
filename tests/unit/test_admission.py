"""The decision core: invariants over random snapshots, and the scenarios users rely on."""

from __future__ import annotations

import dataclasses

from core_snapshots import snapshots
from hypothesis import given, settings
from hypothesis import strategies as st

from wattcap import admission
from wattcap.admission import (
    SHEDDING_LOAD,
    UNSCHEDULABLE,
    WAITING_FOR_CAP_WINDOW,
    NodeState,
    QueuedJob,
    RunningJob,
    Snapshot,
    decide,
    order_queue,
)
from wattcap.model import CapWindow, PowerPolicy

NOW = 1_782_864_000.0
EVERY_SITE = snapshots()


def policy(cap: float, **kw: object) -> PowerPolicy:
    base: dict[str, object] = dict(
        pue=1.0, node_base_watts=0.0, gpu_idle_watts=100.0, gpu_tdp_watts=700.0, safety_margin=0.0
    )
    return PowerPolicy(cap_watts=cap, **{**base, **kw})  # type: ignore[arg-type]


def q(
    key: str,
    gpus: int = 8,
    watts: float = 600.0,
    prio: int = 0,
    t: float = 0.0,
    dur: float = 3600.0,
    pre: bool = False,
    replicas: int = 1,
) -> QueuedJob:
    return QueuedJob(key, replicas, gpus, watts, prio, NOW - 1000 + t, dur, pre)


def nodes(n: int, g: int = 8) -> list[NodeState]:
    return [NodeState(f"n{i}", g, g) for i in range(n)]


# ------------------------------------------------------------------ random snapshots
# The invariants over random sites (cap now, placement, future caps,
# shedding, order, the next cycle) are in test_admission_properties.py, over
# the stratified sites of core_snapshots.py; these hold the fast paths to
# the slow ones over the same sites.


@settings(max_examples=200, deadline=None)
@given(EVERY_SITE)
def test_decide_is_deterministic(snap: Snapshot) -> None:
    a, b = decide(snap), decide(snap)
    assert a.admits == b.admits
    assert [(w.key, w.reason, w.est_start_s) for w in a.waits] == [
        (w.key, w.reason, w.est_start_s) for w in b.waits
    ]
    assert a.preempts == b.preempts


@settings(max_examples=200, deadline=None)
@given(EVERY_SITE)
def test_lazy_reservations_admit_exactly_the_same(snap: Snapshot) -> None:
    """Lazy bookings (made only when a later job could start, and without
    waits to explain, only until that job is found not to fit) admit what
    booking every reservation up front admits."""
    eager, lazy = decide(snap), decide(snap, estimate_starts=False)
    mute = decide(snap, estimate_starts=False, explain=False)
    assert eager.admits == lazy.admits == mute.admits
    assert eager.preempts == lazy.preempts == mute.preempts
    assert [(w.key, w.reason) for w in eager.waits] == [(w.key, w.reason) for w in lazy.waits]


@settings(max_examples=300, deadline=None)
@given(EVERY_SITE, st.integers(0, 4), st.booleans(), st.booleans())
def test_bulk_scan_decides_as_the_one_job_walk(
    snap: Snapshot, reservations: int, eager: bool, backfill: bool
) -> None:
    """The numpy scan that skips jobs which change nothing, and the head of
    the queue admitted without a profile, must decide, and explain, exactly
    what walking the queue one job at a time does. Few reservations make the
    scan start early in these small queues."""
    snap = dataclasses.replace(snap, policy=dataclasses.replace(snap.policy, backfill=backfill))
    fast = decide(snap, reservations, eager)
    slow = decide(snap, reservations, eager, batch=False)
    mute = decide(snap, reservations, eager, explain=False)
    assert fast.admits == slow.admits == mute.admits
    assert fast.preempts == slow.preempts == mute.preempts
    assert not mute.waits
    assert fast.projected_site_watts == slow.projected_site_watts
    assert [(w.key, w.reason, w.message, w.est_start_s) for w in fast.waits] == [
        (w.key, w.reason, w.message, w.est_start_s) for w in slow.waits
    ]


# ------------------------------------------------------------------ scenarios


def test_a_drop_before_the_next_cycle_counts_preemptible_work() -> None:
    """A cap that drops within one control period comes before any cycle could
    shed: preemptible running work still draws then, so nothing may be
    admitted on the promise that it will be gone."""
    ns = nodes(1)
    ns[0].gpus_free = 6
    running = [RunningJob("r", 1, 2, 400.0, 0, True, NOW - 100, NOW + 7200, ("n0",))]
    # idle 800 W + r 600 W = 1400 W; the cap drops to 1450 W one second from now
    pol = policy(
        3_000, cap_schedule=(CapWindow(NOW + 1, NOW + 600, 1_450, "dr"),), control_period_s=15.0
    )
    d = decide(Snapshot(NOW, pol, ns, running, [q("small", gpus=1, watts=200.0)]))
    assert not d.preempts, "1400 W fits the coming 1450 W cap: nothing to shed"
    assert not d.admits, "another 100 W would be over the cap before a cycle could shed"
    assert d.waits[0].reason == WAITING_FOR_CAP_WINDOW


def test_a_job_due_to_end_before_the_next_cycle_is_planned_until_then() -> None:
    """A running job planned to end in one second may overrun, and nobody looks
    again before the next cycle: until then it still counts, so a drop one
    second away must leave room for it. A drop after the next cycle need not."""

    def small_admitted(drop_at: float) -> bool:
        ns = nodes(1)
        ns[0].gpus_free = 6
        # planned for 6 s: a drop 19 s after its end is beyond twice its length
        # (closer, it would be planned through the window, whatever the cycle)
        running = [RunningJob("r", 1, 2, 400.0, 0, False, NOW - 5, NOW + 1, ("n0",))]
        # idle 800 W + r 600 W = 1400 W; small adds 100 W; the window caps at 1450 W
        pol = policy(
            3_000,
            cap_schedule=(CapWindow(drop_at, drop_at + 600, 1_450, "dr"),),
            control_period_s=15.0,
        )
        d = decide(Snapshot(NOW, pol, ns, running, [q("small", gpus=1, watts=200.0)]))
        return [a.key for a in d.admits] == ["small"]

    assert not small_admitted(NOW + 1)
    assert small_admitted(NOW + 20)


def test_equal_submission_times_order_by_key() -> None:
    """Jobs applied together share a creation second: the key breaks the tie,
    so the order does not depend on how the caller listed them."""
    jobs = [q(k, t=0) for k in ("c", "a", "b")] + [q("z", t=-1)]
    for listed in (jobs, list(reversed(jobs))):
        assert [j.key for j in order_queue(listed, policy(1e9), NOW)] == ["z", "a", "b", "c"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from("abcdefgh"),
            st.integers(0, 3),
            st.sampled_from([-5000.0, -3000.0, -10.0, 0.0]),
            st.one_of(st.none(), st.sampled_from([0.0, 100.0, 4000.0])),
        ),
        max_size=60,
    ),
    st.sampled_from(["PriorityFIFO", "FIFO"]),
)
def test_short_and_long_queues_sort_alike(raw: list, ordering: str) -> None:
    """Short queues are sorted in Python, long ones with numpy: one order."""
    jobs = [
        dataclasses.replace(q(f"{k}{i % 3}", prio=p, t=t), max_delay_s=d)
        for i, (k, p, t, d) in enumerate(raw)
    ]
    pol = dataclasses.replace(policy(1e9), ordering=ordering)
    short = order_queue(jobs, pol, NOW)
    old = admission.SMALL_QUEUE
    admission.SMALL_QUEUE = 0
    try:
        long = order_queue(jobs, pol, NOW)
    finally:
        admission.SMALL_QUEUE = old
    assert [id(j) for j in short] == [id(j) for j in long]


def test_cap_drop_preempts_lowest_priority_first_until_it_fits() -> None:
    ns = nodes(4)
    running = []
    for i, n in enumerate(ns):
        n.gpus_free = 0
        running.append(
            RunningJob(
                f"r{i}", 1, 8, 600.0, prio := i, True, NOW - 100 * prio, NOW + 7200, (n.name,)
            )
        )
    # each job adds 8 * 500 = 4000 W over idle 3200 W: 19200 W in all
    pol = policy(20_000, cap_schedule=(CapWindow(NOW, NOW + 3600, 12_000, "dr"),))
    d = decide(Snapshot(NOW, pol, ns, running, [q("w1")]))
    # 19200 - 12000 = 7200 W to shed: two jobs, priorities 0 then 1
    assert [p.key for p in d.preempts] == ["r0", "r1"]
    assert all(p.reason == "CapDrop" for p in d.preempts)
    assert d.projected_site_watts <= 12_000
    assert not d.admits and d.waits[0].reason == SHEDDING_LOAD


def test_cap_drop_is_anticipated_one_period_ahead() -> None:
    ns = nodes(2)
    running = []
    for i, n in enumerate(ns):
        n.gpus_free = 0
        running.append(RunningJob(f"r{i}", 1, 8, 600.0, i, True, NOW, NOW + 7200, (n.name,)))
    pol = policy(
        20_000, cap_schedule=(CapWindow(NOW + 10, NOW + 3600, 6_000, "dr"),), control_period_s=15.0
    )
    d = decide(Snapshot(NOW, pol, ns, running, []))
    assert [p.key for p in d.preempts] == ["r0"]


def test_preemption_off_sheds_nothing_and_says_so() -> None:
    ns = nodes(1)
    ns[0].gpus_free = 0
    running = [RunningJob("r", 1, 8, 600.0, 0, True, NOW, NOW + 7200, ("n0",))]
    pol = policy(4_000, preemption=False)  # idle 800 W + job 4000 W
    d = decide(Snapshot(NOW, pol, ns, running, []))
    assert not d.preempts
    assert d.notes and "exceeds the usable cap" in d.notes[0]


def test_measured_over_cap_waits_for_grace_then_sheds() -> None:
    ns = nodes(2)
    running = []
    for i, n in enumerate(ns):
        n.gpus_free = 4
        running.append(
            RunningJob(
                f"r{i}", 1, 4, 400.0, i, True, NOW, NOW + 7200, (n.name,), measured_gpu_watts=650.0
            )
        )
    pol = policy(8_000, grace_period_s=60.0)
    # measured 1600 idle + 2 * 4 * 550 = 6000 -> use 8_500 to be over the cap
    early = Snapshot(
        NOW,
        pol,
        ns,
        running,
        [q("w", gpus=1, watts=200)],
        measured_site_watts=8_500.0,
        over_cap_since_s=NOW - 30,
    )
    d = decide(early)
    assert not d.preempts
    assert not d.admits, "over the cap by measurement: admissions stop at once"
    late = Snapshot(
        NOW, pol, ns, running, [], measured_site_watts=8_500.0, over_cap_since_s=NOW - 61
    )
    d = decide(late)
    assert [p.key for p in d.preempts] == ["r0"]
    assert d.preempts[0].reason == "MeasuredOverCap"


def _liar_and_bystander(liar_pre: bool) -> tuple[PowerPolicy, list[NodeState], list[RunningJob]]:
    """Two 4-GPU jobs: `bystander` (priority 0, preemptible) draws what it was
    admitted at; `liar` (priority 3) was admitted at 300 W a GPU and draws 690 W."""
    ns = nodes(2)
    for n in ns:
        n.gpus_free = 4
    by = RunningJob("bystander", 1, 4, 400.0, 0, True, NOW - 60, NOW + 7200, ("n0",), 400.0)
    by.forecast_gpu_watts = 400.0
    liar = RunningJob("liar", 1, 4, 300.0, 3, liar_pre, NOW - 600, NOW + 7200, ("n1",), 690.0)
    liar.forecast_gpu_watts = 300.0
    return policy(8_000, grace_period_s=60.0), ns, [by, liar]


def test_an_over_drawer_is_shed_first_before_bystanders_preemptible_or_not() -> None:
    """Measured over the cap past the grace: the job drawing 2.3x its forecast
    goes, though it has the higher priority and did not declare itself
    preemptible; the bystander, drawing what it was admitted at, keeps running."""
    for liar_pre in (True, False):
        pol, ns, running = _liar_and_bystander(liar_pre)
        snap = Snapshot(
            NOW, pol, ns, running, [], measured_site_watts=8_500.0, over_cap_since_s=NOW - 61
        )
        d = decide(snap)
        assert [p.key for p in d.preempts] == ["liar"], liar_pre
        assert "over-drawers are shed first" in d.preempts[0].message


def test_within_the_tolerance_a_job_is_a_bystander() -> None:
    """690 W against a 600 W forecast is 15 % over, under the default 20 %: the
    usual order (lowest priority first) holds."""
    pol, _, running = _liar_and_bystander(True)
    running[1].forecast_gpu_watts = 600.0
    assert [j.key for j in admission.shed_order(running, pol)] == ["bystander", "liar"]
    tight = dataclasses.replace(pol, overdraw_tolerance=0.1)
    assert [j.key for j in admission.shed_order(running, tight)] == ["liar", "bystander"]


def test_an_over_drawer_is_not_shed_while_the_site_need_not_shed() -> None:
    pol, ns, running = _liar_and_bystander(False)
    snap = Snapshot(NOW, pol, ns, running, [], measured_site_watts=7_000.0)
    assert not decide(snap).preempts


def test_non_preemptible_job_waits_out_a_demand_response_window() -> None:
    pol = policy(20_000, cap_schedule=(CapWindow(NOW + 1800, NOW + 5400, 5_000, "dr"),))
    short = q("short", dur=300)  # ends before the window, by over twice its length
    long_ = q("long", dur=7200, t=1)
    pre = q("pre", dur=7200, t=2, pre=True)  # preemptible: may run until shed
    d = decide(Snapshot(NOW, pol, nodes(3), [], [short, long_, pre]))
    assert {a.key for a in d.admits} == {"short", "pre"}
    (w,) = d.waits
    assert w.key == "long" and w.reason == WAITING_FOR_CAP_WINDOW
    assert "cap drops to 5.0 kW" in w.message
    assert w.est_start_s is not None and w.est_start_s >= NOW + 5400


def test_a_non_preemptible_job_planned_to_end_just_before_a_window_is_planned_through_it() -> None:
    """Issue 16: a planned end is a forecast biased short; a job that cannot
    be shed and would end within twice its planned duration of a cap drop must
    fit under the window's cap, or wait. Further ahead, or preemptible, it
    starts as before."""
    pol = policy(20_000, cap_schedule=(CapWindow(NOW + 1800, NOW + 5400, 5_000, "dr"),))
    late = q("late", dur=1200)  # ends 600 s before the drop: within 2 x 1200 s
    early = q("early", dur=300, t=1)  # ends 1500 s before it: beyond 2 x 300 s
    pre = q("pre", dur=1200, t=2, pre=True)  # shed if it overruns
    d = decide(Snapshot(NOW, pol, nodes(3), [], [late, early, pre]))
    assert {a.key for a in d.admits} == {"early", "pre"}
    (w,) = d.waits
    assert w.key == "late" and w.reason == WAITING_FOR_CAP_WINDOW
    assert w.est_start_s is not None and w.est_start_s >= NOW + 5400


def test_a_job_stopped_by_its_deadline_is_planned_to_the_deadline_not_through_the_window() -> None:
    """A declared expectedDuration under overrunAction Stop is ended by its
    Job's deadline overrunGrace later: it is planned to that deadline when a
    drop comes by then, and not through the window on a margin of its length
    (a job declared for 50 min, 70 min before a window, waited forever)."""
    pol = policy(20_000, cap_schedule=(CapWindow(NOW + 1800, NOW + 5400, 5_000, "dr"),))
    bounded = dataclasses.replace(q("bounded", dur=1000), overrun_bound_s=600.0)
    forecast = q("forecast", dur=1000, t=1)  # 800 s before the drop: within 2 x 1000 s
    late = dataclasses.replace(q("late", dur=1500, t=2), overrun_bound_s=600.0)  # stopped at 2100 s
    d = decide(Snapshot(NOW, pol, nodes(3), [], [bounded, forecast, late]))
    assert [a.key for a in d.admits] == ["bounded"]
    assert {w.key: w.reason for w in d.waits} == {
        "forecast": WAITING_FOR_CAP_WINDOW,
        "late": WAITING_FOR_CAP_WINDOW,
    }
    # running, the same bound from its Job: its power is held in the window
    # only while its deadline passes the drop
    ns = nodes(3)
    ns[0].gpus_free = 0
    run = RunningJob("r", 1, 8, 300.0, 0, False, NOW - 600, NOW + 1300, ("n0",))
    run = dataclasses.replace(run, overrun_bound_s=600.0)
    long_ = q("long", watts=300.0, dur=7200)
    assert not decide(Snapshot(NOW, pol, ns, [run], [long_])).admits
    early = dataclasses.replace(run, overrun_bound_s=400.0)  # stopped 100 s before the drop
    assert [a.key for a in decide(Snapshot(NOW, pol, ns, [early], [long_])).admits] == ["long"]


def test_a_running_non_preemptible_job_ending_just_before_a_window_holds_its_power_in_it() -> None:
    """The same rule for a running job, from its start: its power is not
    counted free in the window it might overrun into."""
    pol = policy(20_000, cap_schedule=(CapWindow(NOW + 1800, NOW + 5400, 5_000, "dr"),))
    ns = nodes(3)
    ns[0].gpus_free = 0
    # planned for 1800 s, ending 600 s before the drop: planned through the window
    running = [RunningJob("r", 1, 8, 300.0, 0, False, NOW - 600, NOW + 1200, ("n0",))]
    # fits in the window (2.4 kW idle + 1.6 kW) only if r's 1.6 kW were free there
    long_ = q("long", watts=300.0, dur=7200)
    d = decide(Snapshot(NOW, pol, ns, running, [long_]))
    assert not d.admits
    assert d.waits[0].reason == WAITING_FOR_CAP_WINDOW
    # planned to end well before the drop, it leaves its power free in the window
    far = [dataclasses.replace(running[0], started_s=NOW - 100, expected_end_s=NOW + 500)]
    assert [a.key for a in decide(Snapshot(NOW, pol, ns, far, [long_])).admits] == ["long"]


def test_backfill_never_delays_the_head_of_the_queue() -> None:
    # 2 nodes; a running job holds node 0 for 1h. The head needs both nodes.
    ns = nodes(2)
    ns[0].gpus_free = 0
    running = [RunningJob("r", 1, 8, 600.0, 0, False, NOW, NOW + 3600, ("n0",))]
    head = q("head", gpus=8, replicas=2, prio=5)
    long_small = q("long", gpus=8, prio=0, dur=7200, t=1)  # would hold n1 past 1h
    short_small = q("short", gpus=8, prio=0, dur=1800, t=2)  # ends before the head can start
    d = decide(Snapshot(NOW, policy(1e9), ns, running, [head, long_small, short_small]))
    assert [a.key for a in d.admits] == ["short"]
    waits = {w.key: w for w in d.waits}
    assert waits["head"].est_start_s == NOW + 3600
    assert waits["long"].reason == "WaitingForHigherPriority"


def test_backfill_off_is_strict_order() -> None:
    ns = nodes(2)
    ns[0].gpus_free = 0
    running = [RunningJob("r", 1, 8, 600.0, 0, False, NOW, NOW + 3600, ("n0",))]
    head = q("head", gpus=8, replicas=2, prio=5)  # needs both nodes: waits for r
    small = q("small", gpus=1, dur=60, t=1)  # would not delay head, but backfill is off
    d = decide(Snapshot(NOW, policy(1e9, backfill=False), ns, running, [head, small]))
    assert not d.admits
    assert {w.key: w.reason for w in d.waits}["small"] == "WaitingForHigherPriority"


def test_unschedulable_jobs_say_why() -> None:
    d = decide(
        Snapshot(
            NOW, policy(5_000), nodes(1), [], [q("wide", gpus=16), q("hot", gpus=8, watts=700)]
        )
    )
    reasons = {w.key: (w.reason, w.message) for w in d.waits}
    assert reasons["wide"][0] == UNSCHEDULABLE and "at most 8 per node" in reasons["wide"][1]
    assert (
        reasons["hot"][0] == UNSCHEDULABLE
        and "exceeds what the cap ever leaves" in (reasons["hot"][1])
    )


def test_waiting_for_power_message_names_the_numbers() -> None:
    ns = nodes(2)
    ns[0].gpus_free = 0
    running = [RunningJob("r", 1, 8, 600.0, 0, False, NOW, NOW + 3600, ("n0",))]
    d = decide(Snapshot(NOW, policy(6_000), ns, running, [q("w")]))
    (w,) = d.waits
    assert w.reason == "WaitingForPower"
    # idle 1600 + running 4000 = 5.6 kW; the job adds 4 kW; cap 6 kW
    assert "site projected 5.6 kW + 4.0 kW > usable cap 6.0 kW" in w.message
    assert w.est_start_s == NOW + 3600


def test_starving_job_jumps_the_priority_order() -> None:
    pol = policy(1e9, max_wait_s=3600.0)
    old = QueuedJob("old", 1, 8, 600.0, 0, NOW - 7200, 3600.0)
    vip = QueuedJob("vip", 1, 8, 600.0, 9, NOW - 10, 3600.0)
    d = decide(Snapshot(NOW, pol, nodes(1), [], [vip, old]))
    assert [a.key for a in d.admits] == ["old"]


def test_priority_order_then_fifo() -> None:
    jobs = [q("late-high", prio=2, t=5), q("early-low", prio=0, t=0), q("early-high", prio=2, t=1)]
    d = decide(Snapshot(NOW, policy(1e9), nodes(2), [], jobs))
    assert [a.key for a in d.admits] == ["early-high", "late-high"]


def test_a_cycle_admits_what_the_next_one_would_once_its_admissions_run():
    """`h2`'s booking (from 2000 s, where nothing else ends) holds to the end
    of the step its run ends in, and so keeps `c` out of the first pass; with
    `a` running and its end a step edge, a second pass admits `c`, as the
    next cycle would. Without it the replay, deciding only at events,
    started `c` later than the operator."""
    pol = policy(1e9)
    running = [
        RunningJob("r1", 1, 8, 300.0, 0, False, NOW - 100, NOW + 1000, ("n0",)),
        RunningJob("r2", 1, 4, 300.0, 0, False, NOW - 100, NOW + 5000, ("n1",)),
    ]
    site = [NodeState("n0", 8, 0), NodeState("n1", 8, 4)]
    queued = [
        q("h1", gpus=8, prio=3, dur=100.0),  # waits for r1's GPUs: reserved from 1000 s
        q("a", gpus=2, prio=2, dur=2000.0),
        q("h2", gpus=4, prio=1, dur=100.0),
        q("c", gpus=2, prio=0, dur=3000.0),
    ]
    for lazy in (False, True):
        dec = decide(
            Snapshot(NOW, pol, site, running, queued), estimate_starts=not lazy, explain=not lazy
        )
        assert [x.key for x in dec.admits] == ["a", "c"]
    # the next cycle, with a and c running, admits nothing more
    after = [NodeState("n0", 8, 0), NodeState("n1", 8, 0)]
    started = [
        RunningJob(j.key, 1, j.gpus_per_replica, 300.0, 0, False, NOW, NOW + j.duration_s, ("n1",))
        for j in queued
        if j.key in ("a", "c")
    ]
    waiting = [j for j in queued if j.key in ("h1", "h2")]
    assert decide(Snapshot(NOW + 15, pol, after, running + started, waiting)).admits == []
