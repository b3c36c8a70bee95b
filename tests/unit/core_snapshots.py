"""Random snapshots of a site for the decision core's properties, and the
cases each one reaches.

A uniform random snapshot almost never reaches the cases the core exists
for: measured power over the cap past its grace, a job waiting longer than
its limit, a non-preemptible job that would run into a cap drop. So the
strategy first draws a *kind* of site, and each kind builds a snapshot that
puts one of those cases within reach, on top of a site drawn as widely as
the core's inputs go: PUE in [1, 2], node base power above zero, nodes of
different sizes, running jobs of several replicas, measured draws above and
below the plan, cap windows around now, any reservation depth.

`cases` says which interesting cases a snapshot and its decision reached;
the properties count them with `hypothesis.event`, and
`test_core_properties_reach_their_cases` fails if a case's share of the
examples falls below its floor.
"""

from __future__ import annotations

import dataclasses
import random

from hypothesis import strategies as st

from wattcap.admission import (
    HORIZON_S,
    WAITING_FOR_CAP_WINDOW,
    Decision,
    NodeState,
    QueuedJob,
    RunningJob,
    Snapshot,
    order_queue,
)
from wattcap.model import ADMISSION_MODELS, CapWindow, PowerPolicy

NOW = 1_782_864_000.0
PERIOD = 15.0
GPU_SIZES = (1, 2, 4, 8)

# Kinds of site. "mixed" draws everything at random; the others aim at a case.
MIXED = "mixed"
MEASURED_OVERDRAW = "measured overdraw"
CAP_DROP_NOW = "cap drop now"
STARVING = "starving job"
DROP_AHEAD = "non-preemptible job across a cap drop"
BUSY = "busy queue"
KINDS = (MIXED, MEASURED_OVERDRAW, CAP_DROP_NOW, STARVING, DROP_AHEAD, BUSY)

# Cases a decision reaches (see `cases`).
SHED_MEASURED = "shed on measured overdraw"
SHED_CAP_DROP = "shed for a cap drop"
STARVING_AHEAD = "starving job ahead of higher priority"
NP_ACROSS_DROP = "non-preemptible job admitted into a cap drop"
NP_WAITS_FOR_DROP = "non-preemptible job waits out a cap drop"
SECOND_LOOK = "admitted some, left some waiting"


@st.composite
def policies(draw: st.DrawFn, **fixed: object) -> PowerPolicy:
    """A policy as wide as the CRD allows, for what the core reads."""
    kw: dict[str, object] = dict(
        cap_watts=1.0,  # set by the caller once the site is known
        pue=draw(st.floats(1.0, 2.0)),
        node_base_watts=draw(st.floats(1.0, 2000.0)),
        gpu_idle_watts=draw(st.floats(30.0, 120.0)),
        gpu_tdp_watts=700.0,
        safety_margin=draw(st.sampled_from([0.0, 0.02, 0.05, 0.1])),
        preemption=draw(st.booleans()),
        backfill=draw(st.booleans()),
        reservation_depth=draw(st.integers(0, 8)),
        control_period_s=PERIOD,
        grace_period_s=draw(st.sampled_from([0.0, 30.0, 60.0, 300.0])),
        max_wait_s=draw(st.sampled_from([600.0, 3600.0, 86400.0])),
        ordering=draw(st.sampled_from(["PriorityFIFO", "PriorityFIFO", "FIFO"])),
        # both models: perJobQuantile plans each queued job apart from the
        # charges (a break there survived every property drawn at the default)
        admission_model=draw(st.sampled_from(ADMISSION_MODELS)),
    )
    kw.update(fixed)
    return PowerPolicy(**kw)  # type: ignore[arg-type]


def _site_watts(pol: PowerPolicy, nodes: list[NodeState], running: list[RunningJob]) -> float:
    total = sum(n.gpus_total for n in nodes)
    load = pol.idle_site_watts(len(nodes), total)
    return load + sum(pol.job_site_watts(r.gpus, r.gpu_watts) for r in running)


def _running(
    rng: random.Random, pol: PowerPolicy, nodes: list[NodeState], tries: int, least: int
) -> list[RunningJob]:
    """Running jobs of one to three replicas on distinct nodes, taking GPUs
    off `nodes`; measured draws on either side of the plan. The first `least`
    are preemptible."""
    out: list[RunningJob] = []
    for k in range(tries):
        gpr = rng.choice(GPU_SIZES)
        replicas = rng.randint(1, 3)
        if len(out) < least:  # one that surely fits
            gpr, replicas = min(gpr, max(n.gpus_free for n in nodes)), 1
        room = [n for n in nodes if n.gpus_free >= gpr]
        if len(room) < replicas:
            continue
        picked = rng.sample(room, replicas)
        for n in picked:
            n.gpus_free -= gpr
        planned = rng.uniform(pol.gpu_idle_watts, 700.0)
        # measured on either side of the plan, sometimes below the policy's idle
        # (a GPU model idling lower than the policy says); that once shed too
        # much (test_a_job_measured_below_idle_does_not_shed_another)
        drawn = planned * rng.uniform(0.5, 1.6)
        measured = None if rng.random() < 0.3 else min(700.0, max(0.5 * pol.gpu_idle_watts, drawn))
        believed = None if rng.random() < 0.7 else rng.uniform(pol.gpu_idle_watts, 700.0)
        # admitted at no less than it is planned at now (running work is only
        # tightened): some measure beyond the tolerance over it and are shed first
        forecast = None if rng.random() < 0.3 else planned * rng.uniform(1.0, 1.3)
        out.append(
            RunningJob(
                f"r{k}",
                replicas,
                gpr,
                planned,
                rng.randint(0, 3),
                True if len(out) < least else rng.random() < 0.5,
                NOW - rng.uniform(0.0, 30_000.0),
                NOW + rng.choice((-60.0, 0.0, 1.0)) * rng.random() + rng.uniform(0.0, 30_000.0),
                tuple(n.name for n in picked),
                measured_gpu_watts=measured,
                believed_gpu_watts=believed,
                forecast_gpu_watts=forecast,
            )
        )
    return out


def _queue(rng: random.Random, pol: PowerPolicy, size: int, starving: bool = True) -> list:
    """Queued jobs; some with their own max delay (0: starving at once)."""
    delays = (None, None, None, 0.0, 300.0, 1800.0) if starving else (None,)
    return [
        QueuedJob(
            f"q{k}",
            rng.randint(1, 3),
            rng.choice(GPU_SIZES),
            rng.uniform(pol.gpu_idle_watts * 0.8, 700.0),
            rng.randint(0, 3),
            NOW - rng.uniform(0.0, 4000.0),
            rng.choice((rng.uniform(1.0, 600.0), rng.uniform(60.0, 20_000.0))),
            rng.random() < 0.5,
            rng.choice(delays),
        )
        for k in range(size)
    ]


@st.composite
def snapshots(draw: st.DrawFn, kinds: tuple[str, ...] = KINDS) -> Snapshot:
    """A snapshot of one of `kinds` (see the module docstring).

    The shape (policy, sizes, counts) is drawn by hypothesis; the kind and
    the jobs' numbers come from a seeded `random.Random` it draws, which keeps an
    example to a few dozen draws (generating hundreds of floats per example
    made these properties take minutes on a shared 2-core machine).
    """
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    kind = rng.choice(kinds)  # uniform (hypothesis favours the first of `sampled_from`)
    sheds = kind in (MEASURED_OVERDRAW, CAP_DROP_NOW)
    pol = draw(policies(**({"preemption": True} if sheds else {})))
    sizes = draw(st.lists(st.sampled_from([2, 4, 8, 8, 16]), min_size=1, max_size=8))
    nodes = [NodeState(f"n{i}", g, g) for i, g in enumerate(sizes)]
    least = 1 if sheds else 0
    running = _running(rng, pol, nodes, draw(st.integers(least, 2 * len(nodes))), least)
    queued = _queue(rng, pol, draw(st.integers(0, 24 if kind == BUSY else 12)), kind != DROP_AHEAD)
    planned = _site_watts(pol, nodes, running)
    idle = pol.idle_site_watts(len(nodes), sum(sizes))
    top = idle + sum(pol.job_site_watts(g, 700.0) for g in sizes)  # every GPU at TDP
    keep = 1.0 - pol.safety_margin
    cap = rng.uniform(idle * 1.01, top * 1.2) / keep
    windows: tuple[CapWindow, ...] = ()
    measured: float | None = None
    since: float | None = None
    if kind == BUSY:  # room for some of the queue, not all
        cap = max(planned, idle * 1.01) / keep * rng.uniform(1.05, 1.6)
    if kind in (MIXED, BUSY) and draw(st.booleans()):
        start = NOW + rng.uniform(-3600.0, 20_000.0)
        wcap = rng.uniform(idle * 1.01, cap)
        windows = (CapWindow(start, start + rng.uniform(60.0, 20_000.0), wcap, "dr"),)
    if kind == MIXED:
        if draw(st.booleans()):
            measured = rng.uniform(idle * 0.9, top * 1.3)
            if measured > cap and draw(st.booleans()):
                since = NOW - rng.uniform(0.0, 600.0)
    elif kind == MEASURED_OVERDRAW:
        cap = max(idle * 1.01, min(cap, planned * rng.uniform(0.9, 1.3)))
        measured = cap * rng.uniform(1.01, 1.4)
        since = NOW - pol.grace_period_s - rng.choice((0.0, rng.uniform(0.0, 300.0)))
    elif kind == CAP_DROP_NOW:  # a window opens within a period, below the plan
        start = NOW + rng.uniform(-600.0, PERIOD)
        wcap = max(idle * 1.01, planned * rng.uniform(0.6, 1.0))
        cap = max(cap, planned / keep * 1.01)
        windows = (CapWindow(start, start + rng.uniform(60.0, 7200.0), wcap, "dr"),)
    elif kind == STARVING:
        cap = max(cap, planned / keep * rng.uniform(1.0, 1.5))
        gpr = rng.choice(GPU_SIZES)
        watts = rng.uniform(pol.gpu_idle_watts, 700.0)
        old = QueuedJob(
            "starving",
            1,
            gpr,
            watts,
            0,
            NOW - pol.max_wait_s - rng.uniform(1.0, 3600.0),
            rng.uniform(60.0, 20_000.0),
            rng.random() < 0.5,
        )
        queued = [QueuedJob("vip", 1, gpr, watts, 3, NOW - 10, 600.0), *queued, old]
    elif kind == DROP_AHEAD:
        queued, windows, cap, measured = _drop_ahead(rng, pol, nodes, running, queued, cap)
    return Snapshot(
        NOW,
        dataclasses.replace(pol, cap_watts=cap, cap_schedule=windows),
        nodes,
        running,
        queued,
        measured_site_watts=measured,
        over_cap_since_s=since,
    )


def _drop_ahead(
    rng: random.Random,
    pol: PowerPolicy,
    nodes: list[NodeState],
    running: list[RunningJob],
    queued: list[QueuedJob],
    cap: float,
) -> tuple[list[QueuedJob], tuple[CapWindow, ...], float, float | None]:
    """A non-preemptible job at the head of the queue whose run reaches a
    cap drop set just above or just below what it needs then."""
    free = max(n.gpus_free for n in nodes)
    gpr = rng.choice([g for g in GPU_SIZES if g <= free] or [1])
    start = NOW + rng.choice([1.0, PERIOD / 2, PERIOD, 2 * PERIOD]) + rng.uniform(0.0, 3600.0)
    job = QueuedJob(
        "np",
        1,
        gpr,
        rng.uniform(pol.gpu_idle_watts, 700.0),
        9,
        NOW - pol.max_wait_s - 5000.0,  # first in the order: starving, oldest, highest
        start - NOW + rng.uniform(1.0, 7200.0),
        False,
    )
    keep = 1.0 - pol.safety_margin
    total = sum(n.gpus_total for n in nodes)
    then = pol.idle_site_watts(len(nodes), total)
    for r in running:
        shed_by_then = r.preemptible and pol.preemption and start > NOW + PERIOD
        if max(r.expected_end_s, NOW + PERIOD) > start and not shed_by_then:
            then += pol.job_site_watts(r.gpus, r.gpu_watts)
    need = then + pol.job_site_watts(job.gpus, job.gpu_watts)
    wcap = need / keep * rng.uniform(0.97, 1.3)
    now_load = _site_watts(pol, nodes, running) + pol.job_site_watts(job.gpus, job.gpu_watts)
    cap = max(cap, wcap * 1.05, now_load / keep * 1.01)
    window = CapWindow(start, start + rng.uniform(60.0, 20_000.0), wcap, "dr")
    measured = None if rng.random() < 0.5 else then * rng.uniform(0.5, 1.0)
    return [job, *queued], (window,), cap, measured


def cases(snap: Snapshot, dec: Decision) -> set[str]:
    """The interesting cases this snapshot and its decision reached."""
    out: set[str] = set()
    if any(p.reason == "MeasuredOverCap" for p in dec.preempts):
        out.add(SHED_MEASURED)
    if any(p.reason == "CapDrop" for p in dec.preempts):
        out.add(SHED_CAP_DROP)
    pol = snap.policy

    def starving(j: QueuedJob) -> bool:
        limit = pol.max_wait_s if j.max_delay_s is None else j.max_delay_s
        return snap.now_s - j.submitted_s > limit

    ordered = order_queue(snap.queued, pol, snap.now_s)
    for i, j in enumerate(ordered):
        if starving(j) and any(
            not starving(k) and k.priority > j.priority for k in ordered[i + 1 :]
        ):
            out.add(STARVING_AHEAD)
            break
    by_key = {j.key: j for j in snap.queued}
    drops = [w for w in pol.cap_schedule if w.cap_watts < pol.cap_at(snap.now_s)]
    for a in dec.admits:
        j = by_key[a.key]
        end = snap.now_s + j.duration_s
        if not j.preemptible and any(w.start_s < end and w.end_s > snap.now_s for w in drops):
            out.add(NP_ACROSS_DROP)
    for w in dec.waits:
        if w.reason == WAITING_FOR_CAP_WINDOW and not by_key[w.key].preemptible:
            out.add(NP_WAITS_FOR_DROP)
    if next_cycle(snap, dec) is not None:
        out.add(SECOND_LOOK)
    return out


def next_cycle(snap: Snapshot, dec: Decision) -> Snapshot | None:
    """The snapshot the next cycle (`now + period`) sees if this decision's
    admissions run as planned and nothing else happens in between; None
    where the property "it admits nothing more" does not apply: nothing was
    admitted or nothing is left waiting, a shed, or between the two cycles
    something that can free room happens anyway (a cap rises, a running job
    reaches its planned end by the next cycle, a job crosses
    its wait limit, the decision asked to be re-made: `replan_at_s`), at
    which the simulator decides again too.
    Measured power is left out: a new reading would differ.
    """
    pol = snap.policy
    now, nxt = snap.now_s, snap.now_s + pol.control_period_s
    admitted = {a.key for a in dec.admits}
    if not admitted or dec.preempts or len(admitted) == len(snap.queued):
        return None
    if dec.replan_at_s is not None and dec.replan_at_s <= nxt:
        return None
    if any(now < t <= nxt for t in pol.cap_changes(now - 1.0, nxt + 1.0)):
        return None
    by_key = {j.key: j for j in snap.queued}
    ends = [r.expected_end_s for r in snap.running]
    ends += [now + max(by_key[k].duration_s, 1.0) for k in admitted]
    if any(now < e <= nxt + 1.0 for e in ends):
        return None
    for j in snap.queued:
        limit = pol.max_wait_s if j.max_delay_s is None else j.max_delay_s
        if (now - j.submitted_s > limit) != (nxt - j.submitted_s > limit):
            return None
    free = {n.name: n.gpus_free for n in snap.nodes}
    running = list(snap.running)
    idle = pol.gpu_idle_watts  # admission holds no less than idle for a job
    for a in dec.admits:
        j = by_key[a.key]
        for name in a.nodes:
            free[name] -= j.gpus_per_replica
        running.append(
            RunningJob(
                j.key,
                j.replicas,
                j.gpus_per_replica,
                max(j.gpu_watts, idle),
                j.priority,
                j.preemptible,
                now,
                now + min(max(j.duration_s, 1.0), HORIZON_S),
                a.nodes,
            )
        )
    return dataclasses.replace(
        snap,
        now_s=nxt,
        nodes=[NodeState(n.name, n.gpus_total, free[n.name]) for n in snap.nodes],
        running=running,
        queued=[j for j in snap.queued if j.key not in admitted],
        measured_site_watts=None,
        over_cap_since_s=None,
    )
