"""The pure decision core: a snapshot of the site in, decisions out. No I/O.

The operator and the simulator both call `decide`, so what is measured in
simulation is what runs on the cluster.

How one cycle decides:

1. **Shed.** If the projected site power exceeds the cap that will be in
   force one control period from now (a cap drop is coming or came), or the
   measured power has exceeded the cap for longer than the grace period,
   preempt preemptible jobs, lowest priority first and, within a priority,
   the most recently started (least work lost), until it fits. A cycle that
   sheds admits nothing: the freed power is only real once pods are gone.
2. **Plan.** Build a step function over future time of free power (the
   effective cap less the projected draw of running work) and free GPUs.
   Its breakpoints are cap-window edges, running jobs' expected ends and the
   ends of queued jobs if started now. Preemptible running jobs do not count
   against steps where the cap is lower than now: they would be shed then.
3. **Admit in order** (starving jobs first, then priority, then FIFO). A job
   is admitted if its power and GPUs fit every step it would run through
   (so a non-preemptible job that would still run in a demand-response
   window must fit under that window's cap) and its replicas can be placed.
   A job that does not fit gets a reservation at its earliest feasible start
   in the same profile; later jobs are admitted only around those
   reservations, so backfill never delays a higher job's projected start.

The GPU side of the future profile counts GPUs, not per-node fragments, so
a projected start is an estimate; admission *now* always places for real.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .model import CapWindow, PowerPolicy, format_time
from .placement import FreeGpus

# Reasons a job waits; they are also the condition reasons users see.
WAITING_FOR_POWER = "WaitingForPower"
WAITING_FOR_CAP_WINDOW = "WaitingForCapWindow"
WAITING_FOR_GPUS = "WaitingForGPUs"
WAITING_FOR_HIGHER_PRIORITY = "WaitingForHigherPriority"
SHEDDING_LOAD = "SheddingLoad"
UNSCHEDULABLE = "Unschedulable"

PREEMPT_CAP_DROP = "CapDrop"
PREEMPT_MEASURED = "MeasuredOverCap"

DEFAULT_RESERVATIONS = 32
HORIZON_S = 14 * 86400.0


@dataclass(slots=True)
class NodeState:
    name: str
    gpus_total: int
    gpus_free: int


@dataclass(slots=True)
class RunningJob:
    """An admitted job: it holds GPUs and is planned at `gpu_watts` per GPU."""

    key: str
    replicas: int
    gpus_per_replica: int
    gpu_watts: float
    priority: int
    preemptible: bool
    started_s: float
    expected_end_s: float
    nodes: tuple[str, ...] = ()
    measured_gpu_watts: float | None = None
    # Best belief of its draw, for shedding only. It differs from `gpu_watts`
    # while measurements are unavailable: admission then plans at the
    # conservative forecast, but a silent meter must not preempt anything.
    believed_gpu_watts: float | None = None

    @property
    def gpus(self) -> int:
        return self.replicas * self.gpus_per_replica


@dataclass(slots=True)
class QueuedJob:
    """A job waiting for admission, with its forecast power and duration."""

    key: str
    replicas: int
    gpus_per_replica: int
    gpu_watts: float
    priority: int
    submitted_s: float
    duration_s: float
    preemptible: bool = False
    max_delay_s: float | None = None

    @property
    def gpus(self) -> int:
        return self.replicas * self.gpus_per_replica


@dataclass(slots=True)
class Snapshot:
    """Everything one decision needs, gathered by the caller."""

    now_s: float
    policy: PowerPolicy
    nodes: list[NodeState]
    running: list[RunningJob]
    queued: list[QueuedJob]
    measured_site_watts: float | None = None
    over_cap_since_s: float | None = None


@dataclass(frozen=True, slots=True)
class Admit:
    key: str
    nodes: tuple[str, ...]  # one entry per replica
    site_watts: float  # what the job adds to projected site power


@dataclass(frozen=True, slots=True)
class Wait:
    """A job stays queued. `detail` may be a callable: most waits in a deep
    queue are never read, so their text is rendered only on demand."""

    key: str
    reason: str
    detail: str | Callable[[], str]
    est_start_s: float | None

    @property
    def message(self) -> str:
        text = self.detail() if callable(self.detail) else self.detail
        if self.est_start_s is not None:
            text += f"; estimated start {format_time(self.est_start_s)}"
        return text


@dataclass(frozen=True, slots=True)
class Preempt:
    key: str
    reason: str
    message: str


@dataclass(slots=True)
class Decision:
    admits: list[Admit] = field(default_factory=list)
    waits: list[Wait] = field(default_factory=list)
    preempts: list[Preempt] = field(default_factory=list)
    cap_watts: float = 0.0
    effective_cap_watts: float = 0.0
    idle_site_watts: float = 0.0
    projected_site_watts: float = 0.0  # after this cycle's admits and preempts
    measured_site_watts: float | None = None
    notes: list[str] = field(default_factory=list)


def fmt_watts(w: float) -> str:
    """Human power: 412 W, 31.0 kW, 2.10 MW."""
    a = abs(w)
    if a >= 1e6:
        return f"{w / 1e6:.2f} MW"
    if a >= 1e3:
        return f"{w / 1e3:.1f} kW"
    return f"{w:.0f} W"


def over_cap_since(
    prev_since_s: float | None, measured_w: float | None, cap_w: float, now_s: float
) -> float | None:
    """When measured power first went over the cap in the current excursion.

    Callers keep this between cycles; the grace period is counted from it.
    """
    if measured_w is None or measured_w <= cap_w:
        return None
    return now_s if prev_since_s is None else prev_since_s


def order_queue(queued: list[QueuedJob], policy: PowerPolicy, now_s: float) -> list[QueuedJob]:
    """Admission order: jobs past their max delay first, then priority, then FIFO."""
    by_priority = policy.ordering == "PriorityFIFO"
    max_wait = policy.max_wait_s

    def key(j: QueuedJob) -> tuple[bool, int, float, str]:
        limit = j.max_delay_s if j.max_delay_s is not None else max_wait
        starving = now_s - j.submitted_s > limit
        return (not starving, -j.priority if by_priority else 0, j.submitted_s, j.key)

    return sorted(queued, key=key)


def decide(
    snap: Snapshot, max_reservations: int = DEFAULT_RESERVATIONS, estimate_starts: bool = True
) -> Decision:
    """One admission cycle. Pure: the same snapshot gives the same decision.

    With `estimate_starts=False` (the simulator), reservations for blocked jobs
    are only booked when a later job could start now and so needs them to be
    backfilled around: the admissions are the same, waits carry no start.
    """
    pol = snap.policy
    now = snap.now_s
    period = pol.control_period_s
    pue, idle_w = pol.pue, pol.gpu_idle_watts
    total_gpus = sum(n.gpus_total for n in snap.nodes)
    node_max_gpus = max((n.gpus_total for n in snap.nodes), default=0)
    idle_site = pol.idle_site_watts(len(snap.nodes), total_gpus)
    cap_now = pol.cap_at(now)
    ecap_now = cap_now * (1.0 - pol.safety_margin)
    dec = Decision(
        cap_watts=cap_now,
        effective_cap_watts=ecap_now,
        idle_site_watts=idle_site,
        measured_site_watts=snap.measured_site_watts,
    )

    running = list(snap.running)
    load = _RunningLoad(running, pol, now)
    projected = idle_site + float(load.watts.sum())

    # ---------------------------------------------------------------- 1. shed
    if pol.preemption:
        believed = idle_site + float(load.believed.sum())
        shed = _shed(snap, running, believed, ecap_now, cap_now)
        if shed:
            gone = {p.key for p in shed}
            dec.preempts = shed
            keep = np.array([j.key not in gone for j in running], dtype=bool)
            running = [j for j in running if j.key not in gone]
            load = load.subset(keep)
            projected = idle_site + float(load.watts.sum())
    soon_cap = min(ecap_now, pol.effective_cap_at(now + period))
    if projected > soon_cap:
        dec.notes.append(
            f"projected {fmt_watts(projected)} exceeds the usable cap {fmt_watts(soon_cap)} "
            "and no preemptible job is left to shed"
        )
    measured_excess = 0.0
    if snap.measured_site_watts is not None and snap.measured_site_watts > projected:
        # Something draws more than planned: plan with what is measured.
        measured_excess = snap.measured_site_watts - projected

    ordered = order_queue(snap.queued, pol, now)
    dec.projected_site_watts = projected
    if dec.preempts:
        for j in ordered:
            dec.waits.append(
                Wait(
                    j.key,
                    SHEDDING_LOAD,
                    "admissions paused while preempted jobs release power",
                    None,
                )
            )
        return dec

    # ---------------------------------------------------------------- 2. plan
    prof = _Profile(snap, load, ordered, idle_site, ecap_now, measured_excess)
    fits = FreeGpus((n.name, n.gpus_free) for n in snap.nodes)
    max_site_cap = float(prof.cap.max()) if prof.cap.size else ecap_now

    # ---------------------------------------------------------------- 3. admit
    usable_above_idle = max_site_cap - idle_site
    blocked = 0
    reservations = 0
    pending: list[tuple[bool, float, int, float]] = []
    end_index = prof.end_index.tolist()
    why_later: dict[int, tuple[str, Callable[[], str]]] = {}  # many jobs trip on one step
    waits = dec.waits
    for idx, j in enumerate(ordered):
        g = j.replicas * j.gpus_per_replica
        w = pue * g * (j.gpu_watts - idle_w)
        if g > total_gpus or j.gpus_per_replica > node_max_gpus:
            waits.append(
                Wait(
                    j.key,
                    UNSCHEDULABLE,
                    (
                        f"needs {j.replicas} x {j.gpus_per_replica} GPUs; the site has "
                        f"{total_gpus} GPUs, at most {node_max_gpus} per node"
                    ),
                    None,
                )
            )
            continue
        if w > usable_above_idle:
            waits.append(
                Wait(
                    j.key,
                    UNSCHEDULABLE,
                    (
                        f"forecast {fmt_watts(w)} exceeds what the cap ever leaves above "
                        f"idle ({fmt_watts(usable_above_idle)})"
                    ),
                    None,
                )
            )
            continue
        pre = j.preemptible and pol.preemption  # unsheddable work plans for every cap
        avail0 = prof.free0_p if pre else prof.free0_np
        may_start = blocked == 0 or pol.backfill
        detail: str | Callable[[], str]
        if may_start and w <= avail0 and g <= fits.total_free:
            if pending:  # book what higher blocked jobs need before backfilling
                for args in pending:
                    prof.reserve(*args)
                pending.clear()
                why_later.clear()
            bad = prof.first_shortfall(pre, w, g, end_index[idx])
            if bad < 0:
                nodes = fits.place(j.replicas, j.gpus_per_replica)
                if nodes is not None:
                    prof.take(0, end_index[idx], w, g, pre)
                    dec.admits.append(Admit(j.key, nodes, w))
                    projected += w
                    continue
                reason, detail = WAITING_FOR_GPUS, _fragmented(fits.total_free, j)
            else:
                cached = why_later.get(bad)
                if cached is None:
                    cached = why_later[bad] = prof.explain_future(bad)
                reason, detail = cached
        elif not may_start:
            reason, detail = (
                WAITING_FOR_HIGHER_PRIORITY,
                "backfill is off and a job ahead is waiting",
            )
        elif w > avail0:
            reason, detail = (
                WAITING_FOR_POWER,
                _short_of_power(ecap_now - avail0, w, cap_now, pol.safety_margin),
            )
        else:
            reason, detail = WAITING_FOR_GPUS, f"needs {g} GPUs, {fits.total_free} free"
        blocked += 1
        est = None
        if reservations < max_reservations:
            reservations += 1
            if estimate_starts:
                est = prof.reserve(pre, w, g, j.duration_s)
            else:
                pending.append((pre, w, g, j.duration_s))
            why_later.clear()  # a reservation changes the profile
        elif isinstance(detail, str):
            detail += f"; {blocked - 1} waiting jobs ahead"
        waits.append(Wait(j.key, reason, detail, est))

    dec.projected_site_watts = projected
    return dec


def _fragmented(free: int, j: QueuedJob) -> Callable[[], str]:
    return lambda: (
        f"{free} GPUs free but no {j.replicas} node(s) with "
        f"{j.gpus_per_replica} free each (fragmented)"
    )


def _short_of_power(used: float, w: float, cap: float, margin: float) -> Callable[[], str]:
    return lambda: (
        f"site projected {fmt_watts(used)} + {fmt_watts(w)} > usable cap "
        f"{fmt_watts(cap * (1 - margin))} (cap {fmt_watts(cap)} less {margin:.0%} "
        "margin)"
    )


def _shed(
    snap: Snapshot, running: list[RunningJob], projected: float, ecap_now: float, cap_now: float
) -> list[Preempt]:
    """Preemptions needed now: for a coming cap, or measured power past its grace."""
    pol = snap.policy
    now = snap.now_s
    pue, idle_w = pol.pue, pol.gpu_idle_watts
    soon = pol.effective_cap_at(now + pol.control_period_s)
    target = min(ecap_now, soon)
    excess_plan = projected - target
    excess_meas = 0.0
    meas = snap.measured_site_watts
    if (
        meas is not None
        and meas > cap_now
        and snap.over_cap_since_s is not None
        and now - snap.over_cap_since_s >= pol.grace_period_s
    ):
        excess_meas = meas - ecap_now
    if excess_plan <= 0 and excess_meas <= 0:
        return []
    victims = sorted(
        (j for j in running if j.preemptible), key=lambda j: (j.priority, -j.started_s, j.key)
    )
    out: list[Preempt] = []
    for j in victims:
        if excess_plan <= 0 and excess_meas <= 0:
            break
        planned = pue * j.gpus * ((j.believed_gpu_watts or j.gpu_watts) - idle_w)
        drawn = j.measured_gpu_watts if j.measured_gpu_watts is not None else j.gpu_watts
        if excess_meas > 0:
            msg = (
                f"measured site power {fmt_watts(meas or 0.0)} over cap {fmt_watts(cap_now)} "
                f"for more than {pol.grace_period_s:.0f}s; shedding priority {j.priority}"
            )
            out.append(Preempt(j.key, PREEMPT_MEASURED, msg))
        else:
            win = pol.active_window(now + pol.control_period_s)
            why = f" ({win.name})" if win and win.name else ""
            msg = (
                f"cap {fmt_watts(pol.cap_at(now + pol.control_period_s))}{why} is below the "
                f"projected {fmt_watts(projected)}; shedding priority {j.priority}"
            )
            out.append(Preempt(j.key, PREEMPT_CAP_DROP, msg))
        excess_plan -= planned
        excess_meas -= pue * j.gpus * (drawn - idle_w)
    return out


@lru_cache(maxsize=64)
def _windows(schedule: tuple[CapWindow, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    starts = np.array([w.start_s for w in schedule], dtype=float)
    ends = np.array([w.end_s for w in schedule], dtype=float)
    caps = np.array([w.cap_watts for w in schedule], dtype=float)
    return starts, ends, caps


def _caps_at(pol: PowerPolicy, times: np.ndarray) -> np.ndarray:
    """The cap in force at each time (the lowest open window), in one numpy pass."""
    cap = np.full(times.shape, float(pol.cap_watts))
    if not pol.cap_schedule:
        return cap
    starts, ends, caps = _windows(pol.cap_schedule)
    live = (ends > times[0]) & (starts <= times[-1])
    if live.any():
        t = times[:, None]
        inside = (t >= starts[live]) & (t < ends[live])
        np.minimum(cap, np.where(inside, caps[live], np.inf).min(axis=1), out=cap)
    return cap


class _RunningLoad:
    """Running jobs as arrays, built in one pass: every later step is numpy."""

    __slots__ = ("believed", "ends", "gpus", "preemptible", "watts")

    def __init__(self, running: list[RunningJob], pol: PowerPolicy, now: float) -> None:
        if not running:
            self.gpus = self.watts = self.believed = self.ends = np.zeros(0)
            self.preemptible = np.zeros(0, dtype=bool)
            return
        horizon = now + HORIZON_S
        gpus = np.array([j.replicas * j.gpus_per_replica for j in running], dtype=float)
        watts = np.array([j.gpu_watts for j in running], dtype=float)
        believed = np.array([j.believed_gpu_watts or j.gpu_watts for j in running], dtype=float)
        ends = np.array([j.expected_end_s for j in running], dtype=float)
        # A job past its planned end has an unknown end: plan as if it keeps
        # running, or work admitted around it could meet a cap drop together.
        ends[(ends <= now) | (ends > horizon)] = horizon
        self.gpus = gpus
        self.watts = pol.pue * gpus * (watts - pol.gpu_idle_watts)
        self.believed = pol.pue * gpus * (believed - pol.gpu_idle_watts)
        self.ends = ends
        self.preemptible = np.array([j.preemptible for j in running], dtype=bool)

    def subset(self, keep: np.ndarray) -> _RunningLoad:
        out = object.__new__(_RunningLoad)
        for name in self.__slots__:
            setattr(out, name, getattr(self, name)[keep])
        return out


class _Profile:
    """Free power and GPUs as step functions over future time.

    Step i covers [times[i], times[i+1]); the last step lasts forever.
    `free_np` is what a non-preemptible job may use at each step, `free_p`
    what a preemptible one may use (unbounded where the cap drops later than
    one period from now: it would be shed there, not planned through).
    """

    def __init__(
        self,
        snap: Snapshot,
        load: _RunningLoad,
        ordered: list[QueuedJob],
        idle_site: float,
        ecap_now: float,
        measured_excess: float,
    ) -> None:
        pol = snap.policy
        now = snap.now_s
        period = pol.control_period_s
        horizon = now + HORIZON_S
        run_end = load.ends
        job_end = np.array(
            [min(now + max(j.duration_s, 1.0), horizon) for j in ordered], dtype=float
        )
        edges = np.array(pol.cap_changes(now, horizon), dtype=float)
        times = np.unique(np.concatenate(([now, now + period], edges, run_end, job_end)))
        self.times = times
        cap = _caps_at(pol, times) * (1.0 - pol.safety_margin)
        self.cap = cap
        self.cap_raw = cap / (1.0 - pol.safety_margin)
        self.drop = cap < ecap_now - 1e-6
        self.period_end = now + period

        # Load of running work at each step: each job counts until its end.
        n = times.size
        load_np = np.zeros(n + 1)
        load_p = np.zeros(n + 1)
        released = np.zeros(n + 1)
        if run_end.size:
            end_idx = np.searchsorted(times, run_end, side="left")
            w = load.watts
            pre = load.preemptible & pol.preemption
            np.add.at(load_np, end_idx[~pre], -w[~pre])
            np.add.at(load_p, end_idx[pre], -w[pre])
            load_np[0] += w[~pre].sum()
            load_p[0] += w[pre].sum()
            np.add.at(released, end_idx, load.gpus)
        load_np = np.cumsum(load_np)[:n]
        load_p = np.cumsum(load_p)[:n]
        base = cap - idle_site - measured_excess - load_np
        self.free_np = np.where(self.drop, base, base - load_p)
        far_drop = self.drop & (times > self.period_end)
        self.free_p = np.where(far_drop, np.inf, base - load_p)
        gpus_free_now = float(sum(nd.gpus_free for nd in snap.nodes))
        self.free_g = gpus_free_now + np.cumsum(released)[:n]
        self.end_index = np.searchsorted(times, job_end, side="left")
        self._refresh()

    def _refresh(self) -> None:
        # Running minima: a job that runs through steps [0, k) fits iff the
        # minimum at k-1 covers it. Minima are non-increasing, so the first
        # step that does not fit is a binary search away.
        # (Stored negated, so searchsorted sees ascending arrays.)
        self.neg_min_np = -np.minimum.accumulate(self.free_np)
        self.neg_min_p = -np.minimum.accumulate(self.free_p)
        self.neg_min_g = -np.minimum.accumulate(self.free_g)
        self.free0_np = float(self.free_np[0])
        self.free0_p = float(self.free_p[0])

    def first_shortfall(self, preemptible: bool, w: float, g: int, end_i: int) -> int:
        """First step in [0, end_i) where the job does not fit, or -1."""
        last = end_i - 1 if end_i > 0 else 0
        neg = self.neg_min_p if preemptible else self.neg_min_np
        power_ok = neg[last] <= -w
        gpus_ok = self.neg_min_g[last] <= -g
        if power_ok and gpus_ok:
            return -1
        if gpus_ok:
            return int(neg.searchsorted(-w, side="right"))
        by_gpus = int(self.neg_min_g.searchsorted(-g, side="right"))
        return by_gpus if power_ok else min(by_gpus, int(neg.searchsorted(-w, side="right")))

    def take(self, i: int, e: int, w: float, g: int, preemptible: bool) -> None:
        """Hold w watts and g GPUs over steps [i, e)."""
        e = max(e, i + 1)
        if preemptible:
            # a preemptible job does not hold power at steps where it would be shed
            self.free_np[i:e] -= np.where(self.drop[i:e], 0.0, w)
        else:
            self.free_np[i:e] -= w
        self.free_p[i:e] -= w
        self.free_g[i:e] -= g
        self._refresh()

    def reserve(self, preemptible: bool, w: float, g: int, duration_s: float) -> float | None:
        """Book the earliest start where the job fits throughout; return it."""
        times = self.times
        avail = self.free_p if preemptible else self.free_np
        ok = (avail >= w) & (self.free_g >= g)
        if not ok.any():
            return None
        steps = np.arange(times.size)
        ends = np.searchsorted(times, times + max(duration_s, 1.0), side="left")
        ends = np.maximum(ends, steps + 1)
        bad = np.concatenate(([0], np.cumsum(~ok)))
        hit = np.flatnonzero(ok & (bad[ends] - bad[steps] == 0))
        if not hit.size:
            return None
        i = int(hit[0])
        if i == 0:
            # fits the profile now but was not admitted (fragmentation or
            # ordering): the earliest change is the next step
            i = 1 if times.size > 1 else 0
        self.take(i, int(ends[i]), w, g, preemptible)
        return float(times[i])

    def explain_future(self, step: int) -> tuple[str, Callable[[], str]]:
        """Why a job that fits now cannot run through its whole duration."""
        when = float(self.times[min(step, self.times.size - 1)])
        if self.drop[min(step, self.times.size - 1)]:
            cap = float(self.cap_raw[min(step, self.times.size - 1)])
            return (
                WAITING_FOR_CAP_WINDOW,
                lambda: (
                    f"would still run when the cap drops to {fmt_watts(cap)} at "
                    f"{format_time(when)}; it fits only after the window"
                ),
            )
        return (
            WAITING_FOR_HIGHER_PRIORITY,
            lambda: (
                f"starting now would delay a higher-priority job reserved from {format_time(when)}"
            ),
        )
