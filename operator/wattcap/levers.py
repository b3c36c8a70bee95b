"""Two levers, one plan: meet a cut in the cap by throttling, preempting or both.

Pure, no I/O; `admission.decide` calls it when the policy enables power limits.

A cut (the cap one control period from now is below the projection, or the measured draw
stayed over the cap past the grace period) is `need` watts of site power that must go.
Either lever frees it:

- **throttle** a running job: limit its GPUs to L W each. It frees PUE x GPUs x (natural - L)
  and runs slower by `powerlimit.slowdown`, losing (1 - 1/slowdown) of its progress while
  the cut lasts. Never below the site's floor (minFraction x TDP, and the limit at which it
  would run `maxSlowdown` times slower), never above TDP.
- **preempt** a preemptible job: it frees all its power above idle and loses all progress
  while the cut lasts, plus `preemptionLoss` (work since its last checkpoint, restart).

Lost work (one definition, `powerlimit.throttled_lost_s` and `preempted_lost_s`, which
the simulator and bench/bench_powerlimits.py account with too) is GPU-seconds weighted
by 1 + priority, so a priority-9 job's minute counts ten
times a priority-0 job's. Two plans are costed and the cheaper taken:

1. throttle first: throttle in order of marginal cost per watt (a job's next step down
   costs more than its last, so this spreads the cut); where throttling every job to its
   floor is not enough, preempt the jobs that lose least per watt, until the rest can be
   throttled to cover what remains;
2. preempt only, in the order the core sheds without limits (lowest priority, most
   recently started first).

Non-preemptible jobs are throttled, never preempted. The plan covers `need` exactly where
it can (the last throttle step is partial), so throttling leaves no slack for admission to
fill: nothing is admitted on the strength of a throttle.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from dataclasses import dataclass, field

from .powerlimit import limit_for_slowdown, preempted_lost_s, throttled_lost_s

STEP_FRACTION = 0.025  # a throttle step, as a fraction of TDP


@dataclass(frozen=True, slots=True)
class Candidate:
    """A running job as the levers see it."""

    key: str
    gpus: int
    natural_w: float  # per-GPU draw with no limit
    priority: int
    preemptible: bool
    ran_s: float  # how long this run has run (progress a preemption can lose)
    cut_s: float  # how long the cut applies to it: until it ends or the cap comes back
    throttleable: bool = True  # False: no node agent confirmed its limits; preempt, never throttle


@dataclass(frozen=True, slots=True)
class Site:
    """The constants the levers need from the policy."""

    pue: float
    idle_w: float
    tdp_w: float
    min_fraction: float
    max_slowdown: float | None
    preemption_loss_s: float
    preemption: bool


@dataclass(slots=True)
class LeverPlan:
    limits: dict[str, float] = field(default_factory=dict)  # key -> W per GPU; absent: none
    preempt: list[str] = field(default_factory=list)
    lost: float = 0.0  # weighted GPU-seconds
    covered: bool = True  # whether the plan frees all of `need`


def weight(priority: int) -> float:
    """Lost work is weighted by 1 + priority (a negative priority counts as 0)."""
    return 1.0 + max(priority, 0)


def floor_w(c: Candidate, site: Site) -> float:
    """The lowest limit the site allows for this job's GPUs (its natural draw, so no
    throttling at all, where no node agent confirms its limits)."""
    if not c.throttleable:
        return c.natural_w
    floor = site.min_fraction * site.tdp_w
    if site.max_slowdown is not None:
        floor = max(floor, limit_for_slowdown(c.natural_w, site.max_slowdown))
    return min(floor, site.tdp_w)


def throttle_cost(c: Candidate, limit_w: float) -> float:
    """Weighted GPU-seconds of progress a job loses at `limit_w` while the cut lasts."""
    return weight(c.priority) * c.gpus * throttled_lost_s(c.natural_w, limit_w, c.cut_s)


def preempt_cost(c: Candidate, site: Site) -> float:
    """Weighted GPU-seconds a preempted job loses: the cut, and its work since a checkpoint."""
    redone = min(c.ran_s, site.preemption_loss_s)
    return weight(c.priority) * c.gpus * preempted_lost_s(c.cut_s, redone)


def freed_by_preempt(c: Candidate, site: Site) -> float:
    return site.pue * c.gpus * max(c.natural_w - site.idle_w, 0.0)


def _throttle(cands: list[Candidate], need: float, site: Site) -> tuple[dict[str, float], float]:
    """Throttle `cands` to free `need` W at the least marginal cost; (limits, freed)."""
    limits: dict[str, float] = {}
    if need <= 0:
        return limits, 0.0
    step = STEP_FRACTION * site.tdp_w
    heap: list[tuple[float, int, float, float]] = []  # (cost per W, index, from W, to W)

    def push(i: int, frm: float) -> None:
        c = cands[i]
        to = min(max(frm - step, floor_w(c, site)), site.tdp_w)
        if to >= frm - 1e-9:
            return
        dw = site.pue * c.gpus * (frm - to)
        dc = throttle_cost(c, to) - throttle_cost(c, frm)
        heapq.heappush(heap, (dc / dw, i, frm, to))

    for i, c in enumerate(cands):
        push(i, c.natural_w)
    freed = 0.0
    while heap and freed < need:
        _, i, frm, to = heapq.heappop(heap)
        c = cands[i]
        dw = site.pue * c.gpus * (frm - to)
        if freed + dw >= need:  # a partial step: exactly what is left
            to = frm - (need - freed) / (site.pue * c.gpus)
            limits[c.key] = to
            freed = need
            break
        limits[c.key] = to
        freed += dw
        push(i, to)
    return limits, freed


def _cost(
    cands: list[Candidate], limits: dict[str, float], victims: list[str], site: Site
) -> float:
    by_key = {c.key: c for c in cands}
    lost = sum(throttle_cost(by_key[k], w) for k, w in limits.items())
    return lost + sum(preempt_cost(by_key[k], site) for k in victims)


def _throttle_first(cands: list[Candidate], need: float, site: Site) -> LeverPlan:
    def room(cs: list[Candidate]) -> float:  # what throttling cs to their floors frees
        return site.pue * sum(c.gpus * max(c.natural_w - floor_w(c, site), 0.0) for c in cs)

    victims: list[Candidate] = []
    rest = list(cands)
    left = need
    if site.preemption:
        pool = sorted(
            (c for c in cands if c.preemptible and freed_by_preempt(c, site) > 0),
            key=lambda c: (preempt_cost(c, site) / freed_by_preempt(c, site), c.key),
        )
        while left > room(rest) + 1e-6 and pool:
            v = pool.pop(0)
            victims.append(v)
            rest.remove(v)
            left -= freed_by_preempt(v, site)
    limits, freed = _throttle(rest, left, site)
    keys = [v.key for v in victims]
    return LeverPlan(limits, keys, _cost(cands, limits, keys, site), freed >= left - 1e-6)


def _preempt_only(cands: list[Candidate], need: float, site: Site, order: list[str]) -> LeverPlan:
    by_key = {c.key: c for c in cands}
    left = need
    victims: list[str] = []
    for k in order:
        if left <= 0:
            break
        c = by_key[k]
        victims.append(k)
        left -= freed_by_preempt(c, site)
    return LeverPlan({}, victims, _cost(cands, {}, victims, site), left <= 1e-6)


def choose(
    cands: list[Candidate], need: float, site: Site, shed_order: list[str] | None = None
) -> LeverPlan:
    """The levers' plan to free `need` W of site power, losing the least weighted work.

    `shed_order`: preemptible jobs in the order the core sheds without limits; the
    preempt-only plan follows it. With nothing to free, nothing is throttled.
    """
    if need <= 0:
        return LeverPlan()
    best = _throttle_first(cands, need, site)
    if site.preemption and shed_order is not None:
        alt = _preempt_only(cands, need, site, shed_order)
        if alt.covered and (not best.covered or alt.lost < best.lost - 1e-9):
            best = alt
    return best


def cut_end_s(edges: tuple[float, ...], caps: tuple[float, ...], at_s: float) -> float:
    """When the cap in force at `at_s` next rises (inf if it never does).

    `edges`, `caps` as `model.cap_steps` gives them: `caps[k]` holds on [edges[k-1], edges[k]).
    """
    i = bisect_right(edges, at_s)
    for k in range(i, len(edges)):
        if caps[k + 1] > caps[i]:
            return edges[k]
    return math.inf
