"""The site's outlook for the next 24 h, as the operator publishes it in
PowerPolicy status: the cap schedule against the draw this cycle planned.

Why it exists: the plan lives only inside one `decide` call. Users (the
`kubectl wattcap` plugin, alerts through /metrics) need to see it without
recomputing it, so the operator writes what its own decision holds: running
work to its planned end, this cycle's admissions, and the reservations booked
for blocked jobs at their estimated starts. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .admission import Decision, QueuedJob, RunningJob
from .model import PowerPolicy, format_time

HORIZON_S = 86400.0
MAX_STEPS = 96  # a busier plan is published as a 15-minute envelope
Step = tuple[float, float, float, float, float]  # at, cap, usable cap, planned, committed


def outlook(
    dec: Decision,
    pol: PowerPolicy,
    running: Sequence[RunningJob],
    queued: Sequence[QueuedJob],
    now_s: float,
    horizon_s: float = HORIZON_S,
) -> dict[str, Any]:
    """The plan as a step function over [now, now + horizon), and what alerts need.

    Each step holds the cap, the usable cap (less the safety margin), the
    planned draw (everything the decision holds power for) and the committed
    draw (idle power and non-preemptible admitted work: what a cap drop cannot
    shed). `nextCapDrop` is the next step whose cap is lower than the one
    before it, with the least usable cap less committed draw over the window
    it opens. `pastMaxWait` counts waiting jobs past their maxWait (or maxDelay).
    """
    end_s = now_s + horizon_s
    soonest_end = now_s + pol.control_period_s  # an overrunning job is planned to end then
    gone = {p.key for p in dec.preempts}
    loads: list[tuple[float, float, float, bool]] = []  # start, end, site watts, committed
    for r in running:
        if r.key not in gone:
            w = pol.job_site_watts(r.gpus, r.gpu_watts)
            loads.append((now_s, max(r.expected_end_s, soonest_end), w, not r.preemptible))
    # a deep queue has few admissions and reservations: index only those
    wanted = {a.key for a in dec.admits}
    booked = [wt for wt in dec.waits if wt.est_start_s is not None]
    wanted.update(wt.key for wt in booked)
    by_key = {q.key: q for q in queued if q.key in wanted}
    for a in dec.admits:
        q = by_key.get(a.key)
        if q is not None:
            loads.append((now_s, now_s + max(q.duration_s, 1.0), a.site_watts, not q.preemptible))
    for wt in booked:
        q = by_key.get(wt.key)
        if q is not None and wt.est_start_s is not None:
            w = pol.job_site_watts(q.gpus, q.gpu_watts)
            loads.append((wt.est_start_s, wt.est_start_s + q.duration_s, w, False))
    base = dec.idle_site_watts + dec.unmanaged_watts  # neither can be shed by a cap drop
    if dec.measured_site_watts is not None and not dec.preempts:
        # the core plans as if a measured draw above its projection persists
        drawn_now = base + sum(w for s, _, w, _ in loads if s <= now_s)
        base += max(0.0, dec.measured_site_watts - drawn_now)

    # a sweep over load edges: each step's sums in one pass, however many jobs
    deltas: dict[float, list[float]] = {}
    planned = committed = base
    for s, e, w, fixed in loads:
        if e <= now_s or s >= end_s or e <= s:
            continue
        if s <= now_s:
            planned += w
            committed += w if fixed else 0.0
        else:
            d = deltas.setdefault(s, [0.0, 0.0])
            d[0] += w
            d[1] += w if fixed else 0.0
        if e < end_s:
            d = deltas.setdefault(e, [0.0, 0.0])
            d[0] -= w
            d[1] -= w if fixed else 0.0
    steps: list[Step] = []
    for t in sorted({now_s, *deltas, *pol.cap_changes(now_s, end_s)}):
        d = deltas.get(t)
        if d is not None:
            planned += d[0]
            committed += d[1]
        cap = pol.cap_at(t)
        steps.append((t, cap, cap * (1.0 - pol.safety_margin), planned, committed))
    return {
        "horizonSeconds": int(horizon_s),
        "steps": [_step(*s) for s in _envelope(steps, now_s, end_s)],
        "nextCapDrop": _next_drop(steps, pol),
        "pastMaxWait": _past_max_wait(dec, pol, queued, now_s),
    }


def _step(t: float, cap: float, usable: float, planned: float, committed: float) -> dict[str, Any]:
    return {
        "at": format_time(t),
        "capWatts": round(cap, 1),
        "usableCapWatts": round(usable, 1),
        "plannedWatts": round(planned, 1),
        "committedWatts": round(committed, 1),
    }


def _envelope(steps: list[Step], now_s: float, end_s: float) -> list[Step]:
    """At most MAX_STEPS steps: past that, the lowest cap and highest draws in
    each of MAX_STEPS equal slices, so the published plan never looks safer."""
    if len(steps) <= MAX_STEPS:
        return steps
    width = (end_s - now_s) / MAX_STEPS
    out: list[Step] = []
    k = 0
    for i in range(MAX_STEPS):
        lo, hi = now_s + i * width, now_s + (i + 1) * width
        while k + 1 < len(steps) and steps[k + 1][0] <= lo:
            k += 1
        inside = [steps[k]]
        j = k + 1
        while j < len(steps) and steps[j][0] < hi:
            inside.append(steps[j])
            j += 1
        out.append(
            (
                lo,
                min(s[1] for s in inside),
                min(s[2] for s in inside),
                max(s[3] for s in inside),
                max(s[4] for s in inside),
            )
        )
    return out


def _next_drop(steps: list[Step], pol: PowerPolicy) -> dict[str, Any] | None:
    for i in range(1, len(steps)):
        t, cap = steps[i][0], steps[i][1]
        if cap >= steps[i - 1][1]:
            continue
        window = pol.active_window(t)
        k = i
        span = []
        while k < len(steps) and steps[k][1] < steps[i - 1][1]:
            span.append(steps[k])
            k += 1
        headroom = min(s[2] - s[4] for s in span)
        return {
            "at": format_time(t),
            "capWatts": round(cap, 1),
            "window": window.name if window else None,
            "headroomWatts": round(headroom, 1),
        }
    return None


def _past_max_wait(
    dec: Decision, pol: PowerPolicy, queued: Sequence[QueuedJob], now_s: float
) -> int:
    """Jobs still waiting after this cycle that have waited past their limit."""
    admitted = {a.key for a in dec.admits}
    default = pol.max_wait_s
    n = 0
    for q in queued:
        if now_s - q.submitted_s > (default if q.max_delay_s is None else q.max_delay_s):
            n += q.key not in admitted
    return n
