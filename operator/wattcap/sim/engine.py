"""Event-driven replay of a job trace on a simulated site.

Ground truth and measurement are kept apart:

* the **site model** (FORMAT.md) uses each running job's true `gpu_watts`;
  every metric is integrated from it, exactly, between events;
* the **meter** (`meter.py`) is what a live site's Prometheus would show:
  a site meter read at every control tick, and per-job samples, truth x
  (1 + N(0, job_noise)) clipped to [gpu idle, TDP], one per tick the job
  ran through. A job's sample count moves up to the last tick when
  something reads it (a re-forecast, a shed, its stop); nothing reads a
  sample past that count. Only these reach the scheduler, and only if it
  asks for measurements. Between ticks, the snapshot carries the last
  site reading less the jobs that ended since.
* a running job's reservation is re-tightened (`Forecaster.running`, from
  its last RING samples) when its sample count reaches TIGHTEN_AT, then
  every TIGHTEN_EVERY samples. The operator counts only readings from a
  job's first working one (`forecast.working_samples`); the meter here has
  no idle wait, ramp or tail, so the two differ only for a job whose true
  draw lies within the idle band (6 of the shipped trace's 6,163), which
  the replay still tightens.

The operator decides every control period. The replay runs a decision
cycle only where its outcome could differ from the last one's:

* at events: arrivals, completions, cap-window edges and one control period
  before each, starvation deadlines, the period after a shed, the tick after
  a resumed job was planned lower (from its own samples) than admitted;
* at the two ticks where decide's view of a running job's planned end moves
  (the first a period or less before it, when decide plans it to end a
  period on, and the first at or past it, when decide plans it to the
  horizon), and at every arrival from a period before that end to the
  second tick (decide's view moves with now all that while): a later end
  can move a blocked job's reservation later and let another job start
  before it;
* at control ticks where something measured changed: a running job's
  reservation was tightened, measured power is over the cap, or, with jobs
  queued, a reading above the plan (decide plans with the excess) or the
  first reading after a cycle that saw one; and, while the plan may be over
  the cap, the first tick at which a job shed only as an over-drawer (not
  preemptible) reads above its admission forecast by more than the
  tolerance (decide then sheds it: over-drawers go first). That reads the
  samples those jobs drew when they started, nobody else's;
* at the first tick, and any arrival, after `Decision.replan_at_s`: a
  reservation booked from the next period on moves with now, and once its
  run reaches into another step of the plan it may jump later and leave
  room for a job it kept out.

Between these, time passing cannot let a job start: a queued job's run only
reaches further into the plan, and a reservation either stays where it was
or moves along with now without reaching another step. The exception is
the planning horizon (14 days), which moves too: a booking that reaches it
may move with it, and the replay sees that at its next cycle, not at the
tick; no test trace has shown it. (decide plans again where an admission
could shorten a booking made before it, so the cycle after one that
admitted admits nothing more: `admission.decide`.)
A cycle is skipped when nothing could change its outcome:

* an arrival alone, whose job cannot fit the GPUs or power free right now
  and lands behind the first `reservationDepth` surely blocked jobs, while
  no running job's planned end moves (above): decide
  would wait it, and it takes no reservation (one that did would leave the
  job it displaced without one, and another might start in its place);
* a completion with nobody queued;
* any cycle where no queued job passes that necessary check and no shed is
  possible (projected power within the cap one period ahead, no measured
  excursion past the grace period): decide could neither admit nor preempt.

`SimConfig.every_tick` decides at every tick and event on the whole queue,
as the operator does; the tests hold the replay to it.

Before decide, the queue is trimmed of jobs that cannot start now once the
first `reservationDepth` surely-blocked jobs (which get reservations) are
kept; decide then admits and preempts exactly as on the whole queue. The
replay asks decide for no waits and no estimated starts: it reads neither.

Trace times are seconds after the trace start; the core sees epoch seconds
(`start_epoch_s + t`), because cap schedules are absolute.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field

import numpy as np

from .. import admission
from ..admission import NodeState, QueuedJob, RunningColumns, RunningJob, Snapshot
from ..chance import SITE_CHANCE
from ..chance import z_of as chance_z
from ..forecast import PowerForecast
from ..levers import cut_end_s
from ..model import PowerPolicy, cap_steps
from ..placement import NodeOrderIndex
from ..powerlimit import drawn_watts, preempted_lost_s, slowdown, throttled_lost_s
from .meter import JobSamples, Meter
from .meter_math import first_above
from .schedulers import JobView, Scheduler
from .trace import TraceJob

EPS_W = 1e-3  # watts: "over the cap" means more than this above it
RING = 64  # measured samples kept per running job (a Prometheus range query's worth)
# Sample counts at which a running job's reservation is re-tightened from its own
# samples; then every TIGHTEN_EVERY samples (its window of RING samples is full by then).
TIGHTEN_AT = (4, 16, 64)
TIGHTEN_EVERY = 960
STARVE_NUDGE_S = 1e-3  # a deadline wakes the loop just after it, when order_queue sees it

QUEUED, RUNNING, DONE, PENDING = 1, 2, 3, 0


@dataclass(slots=True)
class SimConfig:
    nodes: int
    gpus_per_node: int
    start_epoch_s: float
    seed: int = 0
    job_noise: float = 0.03  # relative sd of one job's power sample
    meter_noise: float = 0.002  # relative sd of the site meter
    record_series: bool = False
    decision_log: list | None = None  # if a list: (t, admits, preempts) per cycle
    # Decide at every control tick and event, on the whole queue, skipping no
    # cycle: what the operator does. Slow; it exists so tests can hold the
    # replay's skipped cycles and trimmed queue to it.
    every_tick: bool = False
    # A preempted job loses its progress since its last checkpoint, one every this many
    # seconds of progress in a run (0: it loses nothing, it resumes where it stopped).
    checkpoint_every_s: float = 0.0


@dataclass(slots=True)
class Segment:
    job_id: str
    start_s: float | None
    end_s: float | None
    nodes: tuple[str, ...]
    outcome: str  # completed | preempted | unfinished | continued (its power limit changed)
    gpu_limit_w: float | None = None  # the power limit on its GPUs (W each); None: none


@dataclass(slots=True)
class SimResult:
    scheduler: str
    jobs: list[TraceJob]
    segments: list[Segment]
    horizon_s: float
    first_start: dict[str, float]
    completed: int
    preemptions: int
    # ground-truth integrals over [0, horizon]
    energy_j: float
    seconds_over_cap: float
    worst_overshoot_w: float
    worst_overshoot_pct: float
    queue_time_s: float
    cap_ratio_queue_s: float  # integral of site/cap while the queue is non-empty
    gpu_seconds: float
    total_gpus: int
    decision_cycles: int
    skipped_cycles: int
    forecast_miss_rate: float | None = None
    # GPU-seconds of lost work (powerlimit.throttled_lost_s, preempted_lost_s; the levers'
    # cost): to throttling (wall time less progress, while limited), and to preemption:
    # its progress since the last checkpoint (SimConfig.checkpoint_every_s), done again,
    # and the time it stood stopped until it ran again
    throttle_lost_gpu_s: float = 0.0
    checkpoint_lost_gpu_s: float = 0.0
    stopped_lost_gpu_s: float = 0.0
    series: dict[str, list[float]] = field(default_factory=dict)
    # per run of a measured job: seconds from its start until its plan first
    # moved to its measured level (what makes admitting at a mean safe)
    correction_s: list[float] = field(default_factory=list)
    # per job planned from a forecast, not a user's estimate, at its first start:
    # (preemptible, seconds planned, true seconds), to measure the duration
    # forecasts' calibration (a job outrunning its plan into a cap window
    # can put the site over the cap if it cannot be shed)
    duration_plans: list[tuple[bool, float, float]] = field(default_factory=list)


def _spread_factor(pol: PowerPolicy) -> float:
    """The most decide charges a job above its mean, per watt of its sd
    (chance.py: z (sqrt(rho) + sqrt(1 - rho))); 0 unless siteChance."""
    if pol.admission_model != SITE_CHANCE or not pol.coverage > 0.5:
        return 0.0
    rho = pol.class_correlation
    return chance_z(pol.coverage) * (math.sqrt(rho) + math.sqrt(1.0 - rho)) * (1 + 1e-9)


def _spread_floor(pol: PowerPolicy) -> tuple[float, float]:
    """(z sqrt(rho), z sqrt(1 - rho)): what decide charges running jobs at
    least, per watt of their spreads' sum and of its root sum of squares."""
    if pol.admission_model != SITE_CHANCE or not pol.coverage > 0.5:
        return 0.0, 0.0
    z, rho = chance_z(pol.coverage), pol.class_correlation
    return z * math.sqrt(rho), z * math.sqrt(1.0 - rho)


class _Job:
    __slots__ = (
        "ctok",
        "drawn_to",
        "first_start",
        "floor",
        "idx",
        "learned",
        "limit",
        "meas_n",
        "nodes",
        "plan",
        "planned_total",
        "qj",
        "qkey",
        "queued_since",
        "ran",
        "remaining",
        "rj",
        "run_prog",
        "samples",
        "seg_start",
        "seg_tick",
        "shape",
        "slot",
        "state",
        "stopped_at",
        "stopped_until",
        "tj",
        "token",
        "view",
    )

    def __init__(self, idx: int, tj: TraceJob) -> None:
        self.idx = idx
        self.tj = tj
        self.view = JobView(
            tj.job_id,
            tj.workload_class,
            tj.replicas,
            tj.gpus_per_replica,
            tj.priority,
            tj.preemptible,
            tj.submit_s,
            tj.est_duration_s,
            tj.gpu_watts_hint,
        )
        self.shape = (tj.workload_class, tj.gpus)  # what the forecast depends on (Scheduler.shape)
        self.state = PENDING
        self.remaining = tj.duration_s
        self.ran = 0.0
        self.first_start: float | None = None
        self.seg_start = 0.0
        self.nodes: tuple[str, ...] = ()
        self.queued_since = tj.submit_s
        self.plan: PowerForecast | None = None
        # preempted after its own draw was seen: plan it at no less than that
        self.floor: PowerForecast | None = None
        self.planned_total = 0.0
        self.rj: RunningJob | None = None
        self.qj: QueuedJob | None = None
        self.qkey: tuple | None = None
        self.slot = -1
        self.meas_n = 0  # samples the meter took of it: one per tick it ran through
        self.samples: JobSamples | None = None  # drawn when a run starts (if measured)
        self.seg_tick = 0  # the tick before the meter first read this run
        self.drawn_to = 0  # the tick up to which meas_n counts
        self.token = 0
        self.stopped_at: float | None = None  # preempted at, until it runs again
        self.stopped_until = 0.0  # when its stopped time stops counting as lost
        self.learned = False  # its class learned it already (shed over-drawing)
        self.limit: float | None = None  # the power limit on its GPUs (W each)
        self.ctok = 0  # its completion's token: a new limit moves its end
        self.run_prog = 0.0  # progress in this run (natural seconds), for checkpoint loss


def simulate(
    jobs: list[TraceJob], policy: PowerPolicy, scheduler: Scheduler, cfg: SimConfig
) -> SimResult:
    """Replay `jobs` on cfg.nodes x cfg.gpus_per_node GPUs; return schedule and metrics."""
    return _Engine(jobs, policy, scheduler, cfg).run()


class _Engine:
    def __init__(
        self, jobs: list[TraceJob], policy: PowerPolicy, sched: Scheduler, cfg: SimConfig
    ) -> None:
        self.trace = jobs
        self.policy = policy  # the site's real policy: the cap metrics are measured against
        self.sched = sched
        self.dpol = sched.policy  # what decide plans against
        self.cfg = cfg
        self.t0 = cfg.start_epoch_s
        self.meter = Meter(
            cfg.seed,
            cfg.job_noise,
            cfg.meter_noise,
            policy.pue,
            policy.gpu_idle_watts,
            policy.gpu_tdp_watts,
        )
        self.nodes = [
            NodeState(f"node-{i}", cfg.gpus_per_node, cfg.gpus_per_node) for i in range(cfg.nodes)
        ]
        self.node_by_name = {n.name: n for n in self.nodes}
        self.free_index = NodeOrderIndex((n.name, n.gpus_free) for n in self.nodes)
        self.total_gpus = cfg.nodes * cfg.gpus_per_node
        self.free_gpus = self.total_gpus
        p = policy
        self.pue, self.idle_w = p.pue, p.gpu_idle_watts
        self.idle_site = p.idle_site_watts(cfg.nodes, self.total_gpus)
        self.jobs = [_Job(i, tj) for i, tj in enumerate(jobs)]
        for j in self.jobs:  # what its forecast depends on: the scheduler says
            j.shape = sched.shape(j.view)
        self.by_key = {j.tj.job_id: j for j in self.jobs}
        self.arrivals = sorted(self.jobs, key=lambda j: (j.tj.submit_s, j.idx))
        self.running: dict[str, _Job] = {}
        self.queue: list[tuple] = []  # sorted order keys (not starving)
        self.starving: list[tuple] = []  # sorted order keys (starving: they go first)
        # `queue` again, by job shape (class, GPUs): the jobs that might start
        # now are found without walking a deep queue
        self.queue_by_shape: dict[tuple[str, int], list[tuple]] = {}
        self.queued_n = 0
        self.completions: list[tuple[float, int, int, int]] = []  # (t, seq, idx, token)
        self.wakeups: list[tuple[float, int, int, int]] = []  # (t, kind, idx, token)
        self.starve_heap: list[tuple[float, int]] = []
        self.seq = 0
        self.segments: list[Segment] = []
        # ground truth: sum over running jobs of gpus * (gpu_watts - idle)
        self.truth_excess = 0.0
        self.planned_excess = 0.0  # same with the planned per-GPU watts (decide's projection)
        # siteChance (chance.py): decide plans a job at its mean plus a share of
        # the site's spread, never more than `spread_factor` x its own sd; so the
        # engine's bounds add that much of the running jobs' spreads (in GPU watts)
        self.spread_sum = 0.0
        self.spread_sq = 0.0  # sum over running jobs of (GPUs x spread per GPU)^2
        self.spread_factor = _spread_factor(sched.policy)
        self.spread_floor = _spread_floor(sched.policy)
        # metrics
        self.energy = 0.0
        self.over_s = 0.0
        self.worst_w = 0.0
        self.worst_pct = 0.0
        self.queue_s = 0.0
        self.ratio_s = 0.0
        self.gpu_s = 0.0
        self.preemptions = 0
        self.completed = 0
        self.limits_on = self.dpol.power_limits.enabled
        # decide sheds over-drawers first only through `_shed` (the power-limit
        # levers never read a job's own reading): `_first_overdraw`
        self.watch_overdraw = self.dpol.preemption and not self.limits_on
        self.n_limited = 0  # running jobs under a power limit
        self.throttle_lost = 0.0
        self.stopped_lost = 0.0
        self.checkpoint_lost = 0.0
        self.cycles = 0
        self.skipped = 0
        self.correction_s: list[float] = []
        self.duration_plans: list[tuple[bool, float, float]] = []
        self._corrected: set[tuple[int, int]] = set()  # (job, run token) re-planned once
        self.series: dict[str, list[float]] = (
            {"t": [], "site_w": [], "cap_w": [], "queue": []} if cfg.record_series else {}
        )
        # decide's columns of the running jobs: running job i sits at slot
        # i < n_act (packed, swap-removed)
        n = self.total_gpus
        self.n_act = 0
        self.s_gpus = np.zeros(n)
        self.s_plan = np.zeros(n)  # planned watts per GPU (re-tightened in place)
        self.s_end = np.zeros(n)  # expected end, epoch seconds
        self.s_pre = np.zeros(n, dtype=bool)
        self.s_spread = np.zeros(n)  # siteChance: sd of the planned watts per GPU
        self._slot_arrays = (self.s_gpus, self.s_plan, self.s_end, self.s_pre, self.s_spread)
        self.slot_job: list[_Job | None] = [None] * n
        self.slot_rj: list[RunningJob | None] = [None] * n  # slot_job[i].rj
        self._last_changed = False
        self._build_cap_lookup()
        self.cp_heap: list[tuple[int, int, int]] = []  # (tick index, job idx, token)
        self._pol_now = sched.policy
        self._pol_valid_until = -math.inf
        self._starving_set: set[tuple] = set()
        # queued jobs planned at their own measured draw (`_Job.floor`): under
        # siteChance one may be charged less than its class's forecast
        self.floored: set[int] = set()
        self.meas_site: float | None = None  # last meter reading, corrected for jobs gone since
        self.tick_done = 0  # the last control tick the meter has read
        self.truth_sq = 0.0  # sum over running jobs of (GPUs x true watts per GPU)^2
        self.over_since: float | None = None
        # the last cycle saw measured power above the plan: decide planned with the excess
        self.excess_seen = False
        # when time alone may change the last decision (`_book_replan`)
        self.replan_from = math.inf
        self.replan_tick = math.inf

    # ------------------------------------------------------------------ helpers

    def cap_at(self, t: float) -> float:
        """The site's cap at trace time t (piecewise constant between window edges)."""
        return self._cap_vals[bisect_right(self._cap_edges, t)]

    def _build_cap_lookup(self) -> None:
        # the site's cap in trace time, and decide's in absolute time: no scan
        # of a long schedule per query
        edges, caps = cap_steps(self.policy.cap_watts, self.policy.cap_schedule)
        self._cap_edges = [e - self.t0 for e in edges]
        self._cap_vals = list(caps)
        self._cap_edges_t, self._cap_vals_t = tuple(self._cap_edges), tuple(caps)
        dpol = self.dpol
        dedges, dcaps = cap_steps(dpol.cap_watts, dpol.cap_schedule)
        self._dcap_edges = list(dedges)
        self._dcap_vals = list(dcaps)
        self._decap_vals = [c * (1.0 - dpol.safety_margin) for c in dcaps]
        self._min_decap = min(self._decap_vals)

    def _dcap_at(self, now: float) -> float:
        """dpol.cap_at(now)."""
        return self._dcap_vals[bisect_right(self._dcap_edges, now)]

    def _decap_at(self, now: float) -> float:
        """dpol.effective_cap_at(now)."""
        return self._decap_vals[bisect_right(self._dcap_edges, now)]

    def _order_key(self, j: _Job) -> tuple:
        prio = -j.tj.priority if self.dpol.ordering == "PriorityFIFO" else 0
        return (prio, self.t0 + j.queued_since, j.tj.job_id, j.idx)

    def _enqueue(self, j: _Job, t: float) -> None:
        """Queue a job that arrived, or was preempted, at t. As the operator
        does, it keeps its place by submission (its TrainingJob's creation),
        and its wait limit counts from then: a preempted job does not go to
        the back of the queue."""
        j.state = QUEUED
        j.queued_since = j.tj.submit_s
        j.qkey = self._order_key(j)
        insort(self.queue, j.qkey)
        self._shape_add(j)
        self.queued_n += 1
        if j.floor is not None:
            self.floored.add(j.idx)
        view = j.view
        j.qj = QueuedJob(
            key=view.key,
            replicas=view.replicas,
            gpus_per_replica=view.gpus_per_replica,
            gpu_watts=0.0,
            priority=view.priority,
            submitted_s=self.t0 + j.queued_since,
            duration_s=0.0,
            preemptible=view.preemptible,
        )
        deadline = j.queued_since + self.dpol.max_wait_s
        heapq.heappush(self.starve_heap, (deadline, j.idx))
        if deadline + STARVE_NUDGE_S > t:  # (past it: the next cycle sees it starving)
            heapq.heappush(self.wakeups, (deadline + STARVE_NUDGE_S, 1, j.idx, 0))

    def _dequeue(self, j: _Job) -> None:
        lst = self.starving if j.qkey in self._starving_set else self.queue
        if lst is self.starving:
            self._starving_set.discard(j.qkey)
        else:
            self._shape_remove(j)
        i = bisect_left(lst, j.qkey)
        del lst[i]
        self.queued_n -= 1
        self.floored.discard(j.idx)

    def _shape_add(self, j: _Job) -> None:
        keys = self.queue_by_shape.get(j.shape)
        if keys is None:
            keys = self.queue_by_shape[j.shape] = []
        insort(keys, j.qkey)

    def _shape_remove(self, j: _Job) -> None:
        keys = self.queue_by_shape[j.shape]
        del keys[bisect_left(keys, j.qkey)]
        if not keys:
            del self.queue_by_shape[j.shape]

    def _promote_starving(self, now_abs: float) -> None:
        """Move jobs past the max wait to the front list, as order_queue would."""
        limit = self.dpol.max_wait_s
        h = self.starve_heap
        while h:
            deadline, idx = h[0]
            j = self.jobs[idx]
            if (
                j.state != QUEUED
                or deadline != j.queued_since + limit
                or j.qkey in self._starving_set
            ):
                heapq.heappop(h)  # stale: from an earlier stay in the queue
                continue
            if not (now_abs - j.qj.submitted_s > limit):
                break
            heapq.heappop(h)
            del self.queue[bisect_left(self.queue, j.qkey)]
            self._shape_remove(j)
            insort(self.starving, j.qkey)
            self._starving_set.add(j.qkey)

    # ------------------------------------------------------------------ the loop

    def run(self) -> SimResult:
        pol = self.policy
        period = self.dpol.control_period_s
        # cap edges (relative), and one period before each for the look-ahead shed
        edges: set[float] = set()
        for w in list(pol.cap_schedule) + list(self.dpol.cap_schedule):
            for e in (w.start_s, w.end_s):
                edges.add(e - self.t0)
                edges.add(e - self.t0 - period)
        for e in edges:
            if e >= 0:
                heapq.heappush(self.wakeups, (e, 0, -1, 0))
        measures = self.sched.measures
        every = self.cfg.every_tick
        tick_k = 1
        arr_i = 0
        n_arr = len(self.arrivals)
        t_prev = 0.0
        self.last_activity = 0.0
        acc_at_activity = self._acc()
        while True:
            if (
                not self.running
                and arr_i >= n_arr
                and (not self.queued_n or (not self.wakeups and self.replan_tick == math.inf))
            ):
                break  # all done, or stuck: nothing runs or arrives and no edge is ahead
            t_event = math.inf
            if arr_i < n_arr:
                t_event = self.arrivals[arr_i].tj.submit_s
            if self.completions and self.completions[0][0] < t_event:
                t_event = self.completions[0][0]
            if self.wakeups and self.wakeups[0][0] < t_event:
                t_event = self.wakeups[0][0]
            if self.replan_tick < t_event:
                t_event = self.replan_tick
            t = t_event
            need = False
            event = False  # every_tick: a tick, or something happened (not a stale entry)
            if tick_k * period <= t_prev:
                tick_k = int(t_prev // period) + 1  # the first tick after the last event
            if every:
                if tick_k * period <= t_event:  # one tick at a time, each a cycle
                    if measures and self.running:
                        self._measure_ticks(tick_k, 1)
                    t = tick_k * period
                    tick_k += 1
                    event = True
            elif measures and self.running:
                # control ticks up to the next event, measured in bulk; stop at the
                # first one that needs a cycle (over the cap, or a reservation tightened)
                n = int(t_event // period) - tick_k + 1
                if n > 0:
                    used, hit = self._measure_ticks(tick_k, n)
                    tick_k += used
                    if hit:
                        t = (tick_k - 1) * period
                        need = True
            if t == math.inf:
                break
            assert t >= t_prev, "an event was booked in the past"
            self._integrate(t_prev, t)
            t_prev = t
            activity = False
            # completions
            while self.completions and self.completions[0][0] <= t:
                _, _, idx, token = heapq.heappop(self.completions)
                j = self.jobs[idx]
                if j.state != RUNNING or j.ctok != token:
                    continue
                self._finish(j, t)
                activity = event = True
                if self.queued_n:
                    need = True
            # arrivals
            while arr_i < n_arr and self.arrivals[arr_i].tj.submit_s <= t:
                j = self.arrivals[arr_i]
                arr_i += 1
                self._enqueue(j, t)
                activity = event = True
                if not need and (
                    self._could_start(j, t)
                    or t > self.replan_from
                    or self._takes_reservation(j, t)
                    or self._end_moving(t)
                    # a job admitted at its queued charge may be charged more running
                    # beside the others: deciding at this event, decide may shed it
                    or self._may_shed(t)
                ):
                    need = True
            # wakeups: cap edges, starvation deadlines, follow-ups after a shed or
            # after a resumed job was planned lower than admitted
            while self.wakeups and self.wakeups[0][0] <= t:
                _, kind, idx, token = heapq.heappop(self.wakeups)
                if kind >= 3:  # a running job's planned end, as decide sees it, moved
                    j = self.jobs[idx]
                    if j.state == RUNNING and j.token == token:
                        event = True
                        if self.queued_n:
                            need = True
                        if kind == 3:
                            self._push_end_wakeup(j, past=True)
                elif kind != 1 or self.jobs[idx].state == QUEUED:
                    need = event = True
            if t >= self.replan_tick:  # see _book_replan
                need = event = True
                self.replan_tick = math.inf
            if (need or (every and event)) and (self.queued_n or self.running):
                if self._cycle(t):
                    # a shed admits nothing: look again one period later
                    heapq.heappush(self.wakeups, (t + period, 2, -1, 0))
                activity = activity or self._last_changed
            else:
                self.skipped += 1
            if activity:
                self.last_activity = t
                acc_at_activity = self._acc()
        horizon = self.last_activity
        return self._result(horizon, acc_at_activity)

    # ------------------------------------------------------------------ truth integrals

    def _acc(self) -> tuple:
        return (
            self.energy,
            self.over_s,
            self.worst_w,
            self.worst_pct,
            self.queue_s,
            self.ratio_s,
            self.gpu_s,
        )

    def _integrate(self, a: float, b: float) -> None:
        dt = b - a
        site = self.idle_site + self.pue * self.truth_excess
        cap = self.cap_at(a)
        if self.series:
            s = self.series
            s["t"].append(a)
            s["site_w"].append(site)
            s["cap_w"].append(cap)
            s["queue"].append(float(self.queued_n))
        if dt <= 0:
            return
        self.energy += site * dt
        self.gpu_s += (self.total_gpus - self.free_gpus) * dt
        if site > cap + EPS_W:
            self.over_s += dt
            over = site - cap
            if over > self.worst_w:
                self.worst_w = over
            pct = 100.0 * over / cap
            if pct > self.worst_pct:
                self.worst_pct = pct
        if self.queued_n:
            self.queue_s += dt
            self.ratio_s += dt * site / cap

    # ------------------------------------------------------------------ measurement

    def _measure_ticks(self, k0: int, n: int) -> tuple[int, bool]:
        """Control ticks k0 .. k0+n-1: read the site meter; re-forecast running
        jobs whose checkpoint falls on one.

        Nothing starts or stops between these ticks, so true site power is
        constant and the readings are drawn in one block up to the next
        checkpoint. Returns how many ticks were consumed and whether the last
        one needs a decision cycle: over the cap, a reservation re-forecast, or,
        with jobs queued, a reading that may change what decide adds to its
        plan for power measured above it (a reading above the plan, or the
        first after a cycle that saw one).
        """
        period = self.dpol.control_period_s
        site_w = self.idle_site + self.pue * self.truth_excess
        sd = self.meter.site_sd(site_w, self.truth_sq)
        cap_edges, cap_vals = self._cap_edges, self._cap_vals
        # a reading above this (less a watt of slack for the engine's running
        # sums) may add to decide's plan; nothing changes the plan in this block
        planned = self._planned_floor()
        waiting = self.queued_n > 0
        force = self.excess_seen and waiting  # the excess decide planned with changes now
        # the most decide may plan (`_plan_top`); below every usable cap, no job's
        # own reading can make it shed (`_first_overdraw`)
        od_top = self._plan_top() if self.watch_overdraw else -math.inf
        od_floor = self._min_decap - 1.0
        cp = self.cp_heap
        jobs = self.jobs
        done = 0
        while done < n:
            kk = k0 + done
            while cp:  # drop checkpoints of jobs no longer running (or restarted since)
                _, idx, token = cp[0]
                j = jobs[idx]
                if j.state == RUNNING and j.token == token:
                    break
                heapq.heappop(cp)
            k = n - done
            if cp and cp[0][0] - kk + 1 < k:
                k = cp[0][0] - kk + 1
            if force:
                k = 1
            # the first of these ticks where a protected job's own reading makes it
            # an over-drawer while the plan may be over the cap: decide sheds it then
            first_od = self._first_overdraw(kk, k, od_top) if od_top > od_floor else -1
            cap = cap_vals[bisect_right(cap_edges, kk * period)]
            if k == 1:
                site = site_w + sd * float(self.meter.normals(1)[0])
                limit = min(cap, planned) if waiting else cap
                first_over = 0 if site > limit or force or first_od == 0 else -1
                used = 1
            else:
                sites = self.meter.site_readings(site_w, sd, k)
                caps: float | np.ndarray = cap
                if cap != self.cap_at((kk + k - 1) * period):
                    caps = np.array([self.cap_at((kk + i) * period) for i in range(k)])
                limits = np.minimum(caps, planned) if waiting else caps
                over = sites > limits
                first_over = int(over.argmax())
                if not over[first_over]:
                    first_over = -1
                if first_od >= 0 and (first_over < 0 or first_od < first_over):
                    first_over = first_od
                used = first_over + 1 if first_over >= 0 else k
                site = float(sites[used - 1])
                self.meter.unread(k - used)  # the ticks after this one are read later
            t_tick = (kk + used - 1) * period
            self.tick_done = kk + used - 1
            self.meas_site = site
            if used > 1:
                # the ticks before the last were within the cap (not over their limit,
                # at most the cap): they ended any excursion
                self.over_since = None
            self.over_since = admission.over_cap_since(
                self.over_since,
                site,
                cap_vals[bisect_right(cap_edges, t_tick)],
                self.t0 + t_tick,
            )
            done += used
            hit = first_over >= 0
            if cp and cp[0][0] == kk + used - 1 and self._tighten(kk + used - 1):
                # a plan moved: a waiting job may fit, or (a plan can rise) a shed be due
                hit = hit or waiting or self._may_shed(t_tick)
                if self.watch_overdraw:
                    od_top = self._plan_top()
            if hit:
                return done, True
        return done, False

    def _first_overdraw(self, kk: int, k: int, top: float) -> int:
        """The first of ticks kk .. kk+k-1 (0-based; -1: none) at which a running
        job shed only as an over-drawer (not preemptible) reads above its
        admission forecast by more than the tolerance, while the plan (at most
        `top`, `_plan_top`) may be over the usable cap then or a period on.

        decide sheds over-drawers first, preemptible or not, when the plan is
        over the cap. A plan over the cap that sheds nothing holds only such
        protected jobs (a preemptible one would have been shed at the cycle
        that saw the plan rise), so deciding every period, the first tick whose
        reading makes one an over-drawer sheds it (issue 16). Its samples were
        drawn when its run started: this reads them, it draws nothing.
        """
        pol = self.dpol
        period = pol.control_period_s
        # the usable caps of these ticks and a period on (no edge falls strictly
        # inside a block of ticks but its last: each edge is an event)
        edges = self._dcap_edges
        lo = bisect_right(edges, self.t0 + kk * period)
        hi = bisect_right(edges, self.t0 + (kk + k) * period)
        if top <= min(self._decap_vals[lo : hi + 1]) - 1.0:
            return -1
        tol = 1.0 + pol.overdraw_tolerance
        first = -1
        for j in self.slot_job[: self.n_act]:
            rj = j.rj
            if j.tj.preemptible or rj.forecast_gpu_watts is None or j.samples is None:
                continue
            x = j.samples.x
            lo = j.meas_n + (kk - j.drawn_to) - 1  # its sample at tick kk
            hi = min(lo + (k if first < 0 else first), x.size)
            if lo >= hi:
                continue
            i = first_above(x, lo, hi, rj.forecast_gpu_watts * tol)
            if i >= 0:
                first = i
                if i == 0:
                    break
        return first

    def _catch_up(self, j: _Job) -> None:
        """Draw a running job's samples for the ticks read since its last draw."""
        m = self.tick_done - j.drawn_to
        if m <= 0:
            return
        j.drawn_to = self.tick_done
        j.meas_n += m
        assert j.samples is not None  # drawn when the run started (the meter reads it)
        j.samples.ensure(j.meas_n)  # as many as the run can pass through: nothing to draw

    def _last_sample(self, j: _Job) -> float:
        assert j.samples is not None
        return j.samples.at(j.meas_n - 1)

    def _job_moments(self, j: _Job) -> tuple[int, float, float]:
        """Count, mean and variance of its last RING samples (a Prometheus
        range query's worth); no samples yet: (0, 0, 0)."""
        if j.samples is None or not j.meas_n:
            return 0, 0.0, 0.0
        return j.samples.moments(max(0, j.meas_n - RING), j.meas_n)

    def _read_this_run(self, j: _Job) -> bool:
        """Has the meter read this job since it last started?"""
        return self.tick_done > j.seg_tick

    def _push_checkpoint(self, j: _Job, count: int, tick_k: int) -> None:
        """Book j's next tightening at the tick where its sample count reaches a checkpoint."""
        nxt = _next_checkpoint(count)
        heapq.heappush(self.cp_heap, (tick_k + nxt - count, j.idx, j.token))

    def _tighten(self, tick_k: int) -> bool:
        """Re-forecast running jobs whose checkpoint is this tick; True if any moved."""
        changed = False
        cp = self.cp_heap
        while cp and cp[0][0] == tick_k:
            _, idx, token = heapq.heappop(cp)
            j = self.jobs[idx]
            if j.state != RUNNING or j.token != token or j.rj is None or j.plan is None:
                continue
            self._catch_up(j)
            self._push_checkpoint(j, j.meas_n, tick_k)
            if (idx, token) not in self._corrected:
                self._corrected.add((idx, token))
                self.correction_s.append(tick_k * self.dpol.control_period_s - j.seg_start)
            new = self.sched.tighten(j.plan, *self._job_moments(j))
            rj = j.rj
            if new.gpu_watts != rj.gpu_watts or new.spread_gpu_watts != rj.spread_gpu_watts:
                self.planned_excess += j.tj.gpus * (new.gpu_watts - rj.gpu_watts)
                self.spread_sum += j.tj.gpus * (new.spread_gpu_watts - rj.spread_gpu_watts)
                self.spread_sq += (j.tj.gpus * new.spread_gpu_watts) ** 2 - (
                    j.tj.gpus * rj.spread_gpu_watts
                ) ** 2
                rj.gpu_watts = new.gpu_watts
                rj.spread_gpu_watts = new.spread_gpu_watts
                self.s_plan[j.slot] = new.gpu_watts
                self.s_spread[j.slot] = new.spread_gpu_watts
                changed = True
        return changed

    # ------------------------------------------------------------------ job life

    def _queued_forecast(self, j: _Job) -> PowerForecast:
        """What a queued job is planned at: its class's forecast, or its own
        measured draw if it was preempted drawing more."""
        f = self.sched.forecast(j.view)
        if j.floor is not None and j.floor.gpu_watts > f.gpu_watts:
            return j.floor
        return f

    def _could_start(self, j: _Job, t: float) -> bool:
        """Necessary condition for decide to start this job now (it may still not)."""
        if j.tj.gpus > self.free_gpus:
            return False
        f = self._queued_forecast(j)
        low = self._charge_low(j.tj.gpus, f.gpu_watts, f.spread_gpu_watts)
        return low <= self._avail_now(t) + 1.0

    def _takes_reservation(self, j: _Job, t: float) -> bool:
        """Might a job that cannot start now take one of the first
        `reservationDepth` reservations? Then the job that held the last one
        holds none, and another may start where it would have run.

        Counts the jobs ahead of it that are surely blocked (those take
        reservations whatever else happens): a lower bound of what decide
        counts, so a True here may be needless, a False never wrong.
        """
        pue, idle, free = self.pue, self.idle_w, self.free_gpus
        avail = self._avail_now(t) + 1.0
        usable = self._decap_at(self.t0 + t) - self.idle_site
        depth = self.dpol.reservation_depth

        k = self.spread_factor

        def reserves(job: _Job) -> bool:  # surely blocked, and within the cap now
            g = job.tj.gpus
            f = self._queued_forecast(job)
            w = pue * g * (f.gpu_watts - idle)  # at least what decide plans it at
            top = w + k * pue * g * f.spread_gpu_watts  # at most that
            low = self._charge_low(g, f.gpu_watts, f.spread_gpu_watts)
            return (g > free or low > avail) and top <= usable

        blocked = 0  # (j itself may reserve even above the cap now: a later one may be higher)
        for lst in (self.starving, self.queue):
            for key in lst:
                if key == j.qkey:
                    return blocked < depth
                if blocked >= depth:
                    return False
                if reserves(self.jobs[key[3]]):
                    blocked += 1
        return blocked < depth

    def _end_moving(self, t: float) -> bool:
        """Does decide's view of a running job's planned end move with now at
        t? It plans max(end, now + period) until the first tick at or past
        the end (then the horizon): from a period before the end to that tick.
        (A little wide at both edges: a needless cycle at an event is safe.)"""
        n = self.n_act
        if not n:
            return False
        period = self.dpol.control_period_s
        ends = self.s_end[:n] - self.t0
        return bool(np.any((ends - period - 1e-6 < t) & (t <= np.ceil(ends / period) * period)))

    def _planned_floor(self) -> float:
        """At most what decide projects for the running jobs (less a watt of
        slack for the running sums): a reading above it may add to its plan.
        siteChance charges them at least z (sqrt(rho) sum sd + sqrt(1 - rho)
        sqrt(sum sd^2)) above their means (chance.py); a little less is kept."""
        floor = self.idle_site + self.pue * self.planned_excess - 1.0
        if self.spread_floor[0] or self.spread_floor[1]:
            common, indep = self.spread_floor
            sq = math.sqrt(max(self.spread_sq, 0.0))
            floor += 0.999 * self.pue * (common * self.spread_sum + indep * sq)
        return floor

    def _charge_low(self, g: int, watts: float, spread: float) -> float:
        """At most what decide charges a queued job of g GPUs (site watts above
        idle): its mean and, under siteChance, z sqrt(rho) sd plus z sqrt(1 - rho)
        times its increment over the largest base it can have, every running
        job's variance (chance.queued_charges; a little less is kept). The
        necessary checks for a start hold a job to this, not to its mean: on
        a site planned close to the cap, a job whose mean fits but whose charge
        never does passed them at every tick (issue 16: 41,716 cycles for 800
        jobs against 967 under perJobQuantile)."""
        w = self.pue * g * (watts - self.idle_w)
        if spread <= 0.0 or not self.spread_floor[0]:
            return w
        common, indep = self.spread_floor
        sd = self.pue * g * spread
        base = self.pue * self.pue * max(self.spread_sq, 0.0)
        inc = sd * sd / (math.sqrt(base + sd * sd) + math.sqrt(base))
        return w + 0.999 * (common * sd + indep * inc)

    def _avail_now(self, t: float) -> float:
        """At least what decide has free now above its plan (its plan is at
        least `_planned_floor`, and at least the site's reading)."""
        ecap = self._decap_at(self.t0 + t)
        projected = self._planned_floor() + 1.0
        meas = self._snapshot_measured()
        if meas is not None and meas > projected:
            projected = meas
        return ecap - projected

    def _snapshot_measured(self) -> float | None:
        return self.meas_site if self.sched.measures else None

    def _start(self, j: _Job, t: float, nodes: tuple[str, ...], plan: PowerForecast) -> None:
        gpr = j.tj.gpus_per_replica
        for name in nodes:
            self.node_by_name[name].gpus_free -= gpr
        self.free_index.take(nodes, gpr)
        g = j.tj.gpus
        self.free_gpus -= g
        first = j.first_start is None
        if first:
            j.first_start = t
        if j.stopped_at is not None:  # preempted: it lost the time it stood stopped
            self.stopped_lost += g * preempted_lost_s(self._stopped_s(j, t), 0.0)
            j.stopped_at = None
        # Planned, as the operator plans it, for the whole run it was admitted
        # with, from this start: the operator cannot know how much of it ran.
        # (The job itself needs only `remaining`: that is ground truth.)
        j.planned_total = self.sched.duration(j.view)
        if first and j.view.est_duration_s is None:
            self.duration_plans.append((j.tj.preemptible, j.planned_total, j.tj.duration_s))
        j.state = RUNNING
        j.seg_start = t
        j.nodes = nodes
        j.plan = plan
        j.token += 1
        j.ctok += 1
        j.run_prog = 0.0
        planned_rest = j.planned_total
        slot = self.n_act
        self.n_act += 1
        j.slot = slot
        self.slot_job[slot] = j
        self.s_gpus[slot] = g
        # the meter first reads this run at the next tick
        j.seg_tick = j.drawn_to = int(t // self.dpol.control_period_s)
        watts, spread = plan.gpu_watts, plan.spread_gpu_watts
        if j.meas_n >= 3:  # resumed: its own earlier samples tighten it at once
            if self.sched.measures:
                self._corrected.add((j.idx, j.token))
                self.correction_s.append(0.0)
            own = self.sched.tighten(plan, *self._job_moments(j))
            watts, spread = own.gpu_watts, own.spread_gpu_watts
            if watts < plan.gpu_watts:
                # decide admitted it at more than it is planned at now: at the next
                # tick, the operator's next cycle, a waiting job may fit in the rest
                tick = (j.seg_tick + 1) * self.dpol.control_period_s
                heapq.heappush(self.wakeups, (tick, 2, -1, 0))
        j.rj = RunningJob(
            key=j.view.key,
            replicas=j.tj.replicas,
            gpus_per_replica=gpr,
            gpu_watts=watts,
            priority=j.tj.priority,
            preemptible=j.tj.preemptible,
            started_s=self.t0 + t,
            expected_end_s=self.t0 + t + planned_rest,
            nodes=nodes,
            # as admitted (its per-job bound under siteChance): over-drawers are shed first
            forecast_gpu_watts=plan.calibrated_gpu_watts,
            spread_gpu_watts=spread,
        )
        self.slot_rj[slot] = j.rj
        self.s_plan[slot] = watts
        self.s_end[slot] = j.rj.expected_end_s
        self.s_pre[slot] = j.tj.preemptible
        self.s_spread[slot] = spread
        self.spread_sum += g * spread
        self.spread_sq += (g * spread) ** 2
        self.running[j.view.key] = j
        self.truth_excess += g * (j.tj.gpu_watts - self.idle_w)
        self.truth_sq += (g * j.tj.gpu_watts) ** 2
        self.planned_excess += g * (watts - self.idle_w)
        heapq.heappush(self.completions, (t + j.remaining, self.seq, j.idx, j.ctok))
        self._push_end_wakeup(j)
        if self.sched.measures:
            self._push_checkpoint(j, j.meas_n, j.seg_tick)
            # this run's samples, drawn now: one per tick it can run through
            span = j.meas_n + math.ceil(j.remaining / self.dpol.control_period_s) + 1
            if j.samples is None:
                j.samples = JobSamples(self.meter, j.tj.gpu_watts, span)
            else:
                j.samples.ensure(span)
        self.seq += 1

    def _push_end_wakeup(self, j: _Job, past: bool = False) -> None:
        """Wake at the next tick where decide's view of this run's planned end
        moves: the first a period or less before it (decide then plans the job
        to end a period on) and, once that came, the first at or past it (then
        to the horizon: its end is unknown). Either can move a blocked job's
        reservation later and so let a later job start; the operator, deciding
        every period, would."""
        period = self.dpol.control_period_s
        t0 = self.t0
        end = j.rj.expected_end_s
        k = max(int((end - t0) // period) - 2, 0)
        while t0 + k * period + (0.0 if past else period) < end:  # decide's arithmetic
            k += 1
        kind = 4 if past else 3
        at = k * period
        if at < j.seg_start:  # a run planned shorter than a period: already moved
            at = (int(j.seg_start // period) + 1) * period
        heapq.heappush(self.wakeups, (at, kind, j.idx, j.token))

    def _stop(self, j: _Job, t: float) -> float:
        """Take a running job off the site; return how long this segment ran."""
        gpr = j.tj.gpus_per_replica
        for name in j.nodes:
            self.node_by_name[name].gpus_free += gpr
        self.free_index.release(j.nodes, gpr)
        g = j.tj.gpus
        self.free_gpus += g
        del self.running[j.view.key]
        true_w = drawn_watts(j.tj.gpu_watts, j.limit)
        self.truth_excess -= g * (true_w - self.idle_w)
        self.truth_sq -= (g * true_w) ** 2
        self.planned_excess -= g * (j.rj.gpu_watts - self.idle_w)
        self.spread_sum -= g * j.rj.spread_gpu_watts
        self.spread_sq -= (g * j.rj.spread_gpu_watts) ** 2
        if not self.running:  # re-anchor the sums: no drift over a long replay
            self.truth_excess = 0.0
            self.truth_sq = 0.0
            self.planned_excess = 0.0
            self.spread_sum = 0.0
            self.spread_sq = 0.0
        self._catch_up(j)
        if self._read_this_run(j) and self.meas_site is not None:
            # the meter's last reading included this job; it is gone now
            last = drawn_watts(self._last_sample(j), j.limit)
            self.meas_site -= self.pue * g * (last - self.idle_w)
        slot = j.slot
        last = self.n_act - 1
        if slot != last:  # keep the running jobs packed: move the last one here
            for arr in self._slot_arrays:
                arr[slot] = arr[last]
            moved = self.slot_job[last]
            self.slot_job[slot] = moved
            self.slot_rj[slot] = self.slot_rj[last]
            moved.slot = slot
        self.slot_job[last] = None
        self.slot_rj[last] = None
        self.n_act = last
        j.slot = -1
        if j.limit is not None:
            self.n_limited -= 1
        j.token += 1
        return self._progress(j, t)

    def _progress(self, j: _Job, t: float) -> float:
        """Account the segment since `seg_start` at its limit's speed; return its wall time."""
        wall = t - j.seg_start
        prog = wall if j.limit is None else wall / slowdown(j.tj.gpu_watts, j.limit)
        j.ran += prog
        j.remaining -= prog
        j.run_prog += prog
        self.throttle_lost += j.tj.gpus * throttled_lost_s(j.tj.gpu_watts, j.limit, wall)
        return wall

    def _set_limit(self, j: _Job, t: float, limit: float | None) -> None:
        """Put a running job under a new power limit (None: none) from t.

        Its segment so far is closed ('continued'), its GPUs draw min(natural, limit)
        and its end moves: what is left of its work, at the new limit's speed.
        """
        g = j.tj.gpus
        old_w = drawn_watts(j.tj.gpu_watts, j.limit)
        if t > j.seg_start:
            self._progress(j, t)
            self.segments.append(Segment(j.view.key, j.seg_start, t, j.nodes, "continued", j.limit))
            j.seg_start = t
        self.n_limited += (limit is not None) - (j.limit is not None)
        j.limit = limit
        new_w = drawn_watts(j.tj.gpu_watts, limit)
        self.truth_excess += g * (new_w - old_w)
        self.truth_sq += (g * new_w) ** 2 - (g * old_w) ** 2
        assert j.rj is not None
        j.rj.gpu_limit_watts = limit
        j.ctok += 1
        end = t + max(j.remaining, 0.0) * slowdown(j.tj.gpu_watts, limit)
        heapq.heappush(self.completions, (end, self.seq, j.idx, j.ctok))
        self.seq += 1

    def _finish(self, j: _Job, t: float) -> None:
        self._stop(j, t)
        j.remaining = 0.0
        j.state = DONE
        self.completed += 1
        self.segments.append(Segment(j.view.key, j.seg_start, t, j.nodes, "completed", j.limit))
        j.limit = None
        mean = j.samples.mean(j.meas_n) if j.samples is not None and j.meas_n else None
        assert j.plan is not None
        if not j.learned:
            self.sched.completed(j.view, mean, j.ran, j.plan)
        j.samples = None
        j.rj = None

    def _stopped_s(self, j: _Job, t: float) -> float:
        """How long a preempted job has lost by `t`: stopped, until the cap rose again
        (after that it waits like any queued job) or it would have finished."""
        assert j.stopped_at is not None
        return max(0.0, min(t, j.stopped_until) - j.stopped_at)

    def _preempt(self, j: _Job, t: float) -> None:
        would_end = t + max(j.remaining, 0.0)
        self._stop(j, t)
        # lost while the cut lasts, as the levers cost it (levers.preempt_cost's cut_s)
        j.stopped_at = t
        j.stopped_until = min(cut_end_s(self._cap_edges_t, self._cap_vals_t, t), would_end)
        if self.sched.measures:
            n, mean, var = self._job_moments(j)
            if n >= 3:
                # as the operator does: what it drew beats what its class says, or a
                # job that draws more than its class is readmitted and shed again
                j.floor = self.sched.measured_floor(n, mean, var)
        self.preemptions += 1
        self.segments.append(Segment(j.view.key, j.seg_start, t, j.nodes, "preempted", j.limit))
        j.limit = None
        every = self.cfg.checkpoint_every_s
        if every > 0:  # its progress since the last checkpoint is lost
            lost = j.run_prog % every
            j.remaining += lost
            j.ran -= lost
            self.checkpoint_lost += j.tj.gpus * preempted_lost_s(0.0, lost)
        j.rj = None
        self._enqueue(j, t)

    # ------------------------------------------------------------------ one cycle

    def _queued_for_decide(self, t: float, whole: bool = False) -> tuple[list[QueuedJob], bool]:
        """The queue in decide's order, less jobs that can neither start nor reserve;
        and whether any job in it might start now.

        Starving jobs, then the queue in order, are kept until
        `reservationDepth` jobs are surely blocked; after that only jobs that
        pass the check for now are kept (in the queue, found through
        `queue_by_shape`).
        """
        sched = self.sched
        pue, idle = self.pue, self.idle_w
        free = self.free_gpus
        avail = self._avail_now(t) + 1.0
        ecap_above_idle = self._decap_at(self.t0 + t) - self.idle_site
        depth = math.inf if whole else self.dpol.reservation_depth
        jobs = self.jobs
        # per shape: (watts per GPU, surely blocked now, may hold a reservation,
        # spread per GPU); siteChance plans a job between w and w + k x its sd
        known: dict[tuple[str, int], tuple[float, bool, bool, float]] = {}
        k = self.spread_factor

        def judge(g: int, watts: float, spread: float = 0.0) -> tuple[float, bool, bool, float]:
            top = pue * g * (watts - idle + k * spread)
            low = self._charge_low(g, watts, spread)
            return watts, g > free or low > avail, top <= ecap_above_idle, spread

        def check(shape: tuple[str, int], view: JobView) -> tuple[float, bool, bool, float]:
            f = sched.forecast(view)
            known[shape] = res = judge(shape[1], f.gpu_watts, f.spread_gpu_watts)
            return res

        out: list[QueuedJob] = []
        blocked = 0
        candidate = False

        def keep(j: _Job, watts: float, spread: float) -> None:
            qj = j.qj
            qj.gpu_watts = watts
            qj.spread_gpu_watts = spread
            qj.duration_s = sched.duration(j.view)  # the whole run, as the operator plans it
            out.append(qj)

        queue = self.queue
        cut = len(queue)
        for lst in (self.starving, queue):
            for pos, key in enumerate(lst):
                if lst is queue and blocked >= depth:
                    cut = pos
                    break
                j = jobs[key[3]]
                res = known.get(j.shape) or check(j.shape, j.view)
                if j.floor is not None and j.floor.gpu_watts > res[0]:
                    res = judge(j.shape[1], j.floor.gpu_watts)
                watts, sure_block, may_reserve, spread = res
                if sure_block and blocked >= depth:
                    continue
                candidate = candidate or not sure_block
                keep(j, watts, spread)
                if sure_block and may_reserve:
                    blocked += 1
        if cut < len(queue) and free > 0 and avail >= 0:
            first = queue[cut]
            tail: list[tuple] = []
            for shape, keys in self.queue_by_shape.items():
                if shape[1] > free:
                    continue  # surely blocked, whatever its forecast
                view = jobs[keys[0][3]].view  # any job of the shape: its class forecast is theirs
                watts, sure_block, _, _ = known.get(shape) or check(shape, view)
                if not sure_block:  # (one planned higher, at its own draw, may still be)
                    tail.extend(keys[bisect_left(keys, first) :])
            for idx in self.floored:
                # planned at its own draw with no spread, a job may fit where its
                # class's forecast, charged its spread, surely does not
                j = jobs[idx]
                shape = j.shape
                if j.qkey < first or j.qkey in self._starving_set or shape[1] > free:
                    continue
                res = known.get(shape) or check(shape, j.view)
                if (
                    res[1]
                    and j.floor.gpu_watts > res[0]
                    and not judge(shape[1], j.floor.gpu_watts)[1]
                ):
                    tail.append(j.qkey)
            tail.sort()
            for key in tail:
                j = jobs[key[3]]
                watts, _, _, spread = known[j.shape]
                if j.floor is not None and j.floor.gpu_watts > watts:
                    watts, spread = j.floor.gpu_watts, 0.0  # planned at its own draw
                keep(j, watts, spread)
            candidate = candidate or bool(tail)
        return out, candidate

    def _plan_top(self) -> float:
        """The most decide may plan the site at with the running jobs: their
        means and `spread_factor` x their spreads (it charges none more)."""
        spread = self.spread_factor * self.pue * self.spread_sum
        return self.idle_site + self.pue * self.planned_excess + spread

    def _plan_may_exceed(self, t: float) -> bool:
        """Might decide's plan be over the usable cap now or one period on?"""
        now = self.t0 + t
        target = min(self._decap_at(now), self._decap_at(now + self.dpol.control_period_s))
        return self._plan_top() > target - 1.0

    def _may_shed(self, t: float) -> bool:
        """Could decide preempt now? (Conservative: True whenever it might.)"""
        pol = self.dpol
        if not self.running:
            return False
        if self.n_limited:  # a limit may be released, or moved
            return True
        if not pol.preemption and not self.limits_on:
            return False
        now = self.t0 + t
        if self._plan_may_exceed(t):
            return True
        meas = self._snapshot_measured()
        return (
            meas is not None
            and self.over_since is not None
            and meas > self._dcap_at(now) - 1.0
            and now - self.over_since >= pol.grace_period_s - 1e-6
        )

    def _cycle(self, t: float) -> bool:
        """Run decide on the current state and apply it; True if it shed load."""
        now = self.t0 + t
        self._promote_starving(now)
        meas = self.meas_site if self.sched.measures else None
        planned = self._planned_floor()
        self.excess_seen = meas is not None and meas > planned
        every = self.cfg.every_tick
        queued, candidate = self._queued_for_decide(t, every) if self.queued_n else ([], False)
        may_shed = self._may_shed(t)
        if not candidate and not may_shed and not every:
            # decide could neither admit nor preempt: skip it (its waits are not needed);
            # a moving booking matters again only once a job could start (an event)
            self._book_replan(None, t)
            self._last_changed = False
            self.skipped += 1
            return False
        r = self.n_act
        running = self.slot_rj[:r]
        if self.sched.measures and may_shed:  # only shedding reads a job's own reading
            done = self.tick_done
            for j in self.slot_job[:r]:
                # `_catch_up`, then `_last_sample` if `_read_this_run` (inline: every
                # running job at every cycle that may shed)
                if done > j.drawn_to:
                    j.meas_n += done - j.drawn_to
                    j.drawn_to = done
                    j.samples.ensure(j.meas_n)
                j.rj.measured_gpu_watts = (
                    float(j.samples.x[j.meas_n - 1]) if done > j.seg_tick else None
                )
        planned = self.s_plan[:r]
        snap = Snapshot(
            now_s=now,
            policy=self._policy_at(now),
            nodes=self.nodes,
            running=running,
            queued=queued,
            measured_site_watts=self._snapshot_measured(),
            over_cap_since_s=self.over_since if self.sched.measures else None,
            running_columns=RunningColumns(
                self.s_gpus[:r], planned, planned, self.s_end[:r], self.s_pre[:r], self.s_spread[:r]
            ),
            free_index=self.free_index,
            durations_known=self.sched.durations_known,
        )
        # the replay reads no starts and no waits
        dec = admission.decide(snap, estimate_starts=False, explain=False)
        self.cycles += 1
        self._book_replan(dec.replan_at_s, t)
        self._last_changed = bool(dec.admits or dec.preempts)
        if self.cfg.decision_log is not None:
            self.cfg.decision_log.append(
                (t, tuple((a.key, a.nodes) for a in dec.admits), tuple(p.key for p in dec.preempts))
            )
        for p in dec.preempts:
            j = self.by_key[p.key]
            if j.rj is not None and admission.overdraws(j.rj, snap.policy.overdraw_tolerance):
                # as the operator does: the class learns the overdraw now, once
                self.sched.overdrew(j.view, j.rj.measured_gpu_watts, j.plan)
                j.learned = True
            self._preempt(j, t)
        if self.limits_on:
            for key, j in list(self.running.items()):
                limit = dec.gpu_limits.get(key)
                if limit != j.limit:
                    self._set_limit(j, t, limit)
                    self._last_changed = True
        for a in dec.admits:
            j = self.by_key[a.key]
            plan = self._queued_forecast(j)
            self._dequeue(j)
            self._start(j, t, a.nodes, plan)
        return bool(dec.preempts)

    def _book_replan(self, at_s: float | None, t: float) -> None:
        """Decide again where time passing alone could change this decision: a
        reservation booked from the next cycle on moves with now, and once its
        run reaches into another step of the plan, it may no longer fit there
        and leave room for another job. The operator would see that at its
        next cycle after that moment: the first tick, or any event, after it."""
        if at_s is None:
            self.replan_from = self.replan_tick = math.inf
            return
        rel = at_s - self.t0
        period = self.dpol.control_period_s
        self.replan_from = rel - 1e-6  # (a little early is safe)
        self.replan_tick = max(math.ceil(rel / period), int(t // period) + 1) * period

    def _policy_at(self, now: float) -> PowerPolicy:
        """The policy less cap windows that cannot matter now: ended, or beyond the
        planning horizon. decide reads windows only in [now, now + HORIZON_S], so its
        decisions are unchanged, and a long schedule of windows costs nothing."""
        if now < self._pol_valid_until:
            return self._pol_now
        full = self.dpol.cap_schedule
        horizon = now + admission.HORIZON_S
        keep = tuple(w for w in full if w.end_s > now and w.start_s <= horizon)
        later = [w.start_s - admission.HORIZON_S for w in full if w.start_s > horizon]
        ends = [w.end_s for w in keep]
        self._pol_valid_until = min([*later, *ends, math.inf])
        if keep != self._pol_now.cap_schedule:
            self._pol_now = dataclasses.replace(self.dpol, cap_schedule=keep)
        return self._pol_now

    # ------------------------------------------------------------------ result

    def _result(self, horizon: float, acc: tuple) -> SimResult:
        energy, over_s, worst_w, worst_pct, queue_s, ratio_s, gpu_s = acc
        # queued (or preempted and never resumed) jobs: one unfinished row each
        for j in self.jobs:
            if j.state in (QUEUED, PENDING):
                self.segments.append(Segment(j.view.key, None, None, (), "unfinished"))
        first = {j.view.key: j.first_start for j in self.jobs if j.first_start is not None}
        return SimResult(
            scheduler=self.sched.name,
            jobs=self.trace,
            segments=self.segments,
            horizon_s=horizon,
            first_start=first,
            completed=self.completed,
            preemptions=self.preemptions,
            energy_j=energy,
            seconds_over_cap=over_s,
            worst_overshoot_w=worst_w,
            worst_overshoot_pct=worst_pct,
            queue_time_s=queue_s,
            cap_ratio_queue_s=ratio_s,
            gpu_seconds=gpu_s,
            total_gpus=self.total_gpus,
            decision_cycles=self.cycles,
            skipped_cycles=self.skipped,
            forecast_miss_rate=self.sched.miss_rate(),
            correction_s=self.correction_s,
            duration_plans=self.duration_plans,
            throttle_lost_gpu_s=self.throttle_lost,
            checkpoint_lost_gpu_s=self.checkpoint_lost,
            stopped_lost_gpu_s=self.stopped_lost
            + sum(
                j.tj.gpus * self._stopped_s(j, horizon)
                for j in self.jobs
                if j.stopped_at is not None
            ),
            series=self.series,
        )


def _next_checkpoint(count: int) -> int:
    for c in TIGHTEN_AT:
        if c > count:
            return c
    last = TIGHTEN_AT[-1]
    return last + TIGHTEN_EVERY * ((count - last) // TIGHTEN_EVERY + 1)
