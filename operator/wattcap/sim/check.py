"""An independent checker: trust the trace and the schedule CSV, nothing else.

From the trace (ground-truth `gpu_watts`), the schedule, the policy and the
site's size, `check` rebuilds the FORMAT.md power curve as a sweep over
segment edges, submits and cap-window edges, and recomputes what the
simulator claims: seconds over the cap, worst overshoot, energy, share of
the cap used while jobs wait, waits, completed jobs and preemptions, and GPU
occupancy per node. It shares no code with the engine; `problems` lists
every rule the schedule breaks (a node over its GPUs, overlapping segments,
a completed job that did not run its full duration, ...).

    python -m wattcap.sim.check --trace T.csv --schedule S.csv --policy P.yaml \
        --nodes N --gpus-per-node G --start 2026-07-01T00:00:00Z
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..model import PowerPolicy
from ..powerlimit import drawn_watts, slowdown
from .trace import TraceJob

OVER_EPS_W = 1e-3  # more than this above the cap counts as over
DURATION_TOL_S = 1e-6


@dataclass(slots=True)
class ScheduleRow:
    job_id: str
    start_s: float | None
    end_s: float | None
    nodes: list[str]
    outcome: str
    gpu_limit_w: float | None = None


@dataclass(slots=True)
class CheckResult:
    horizon_s: float
    seconds_over_cap: float
    worst_overshoot_w: float
    worst_overshoot_pct: float
    energy_mwh: float
    cap_used_while_waiting: float | None
    queue_nonempty_s: float
    waits: dict[str, float]
    wait_p50_s: float | None
    wait_p95_s: float | None
    completed_jobs: int
    preemptions: int
    max_gpus_on_a_node: int
    gpu_utilisation: float | None
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__slots__ if k != "waits"}
        return d


def load_schedule(path: str | Path) -> list[ScheduleRow]:
    rows: list[ScheduleRow] = []
    with open(path, newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            start = rec["start_s"].strip()
            end = rec["end_s"].strip()
            nodes = [n for n in rec["nodes"].split(";") if n] if rec["nodes"] else []
            limit = (rec.get("gpu_limit_w") or "").strip()
            rows.append(
                ScheduleRow(
                    rec["job_id"],
                    float(start) if start else None,
                    float(end) if end else None,
                    nodes,
                    rec["outcome"].strip(),
                    float(limit) if limit else None,
                )
            )
    return rows


def _cap_curve(policy: PowerPolicy, t_abs: np.ndarray) -> np.ndarray:
    cap = np.full(t_abs.shape, policy.cap_watts, dtype=float)
    for w in policy.cap_schedule:
        inside = (t_abs >= w.start_s) & (t_abs < w.end_s)
        cap = np.where(inside & (w.cap_watts < cap), w.cap_watts, cap)
    return cap


def check(
    trace: list[TraceJob],
    schedule: list[ScheduleRow],
    policy: PowerPolicy,
    *,
    nodes: int,
    gpus_per_node: int,
    start_epoch_s: float,
    redo: bool = False,
) -> CheckResult:
    """Recompute the run's figures from the trace and the schedule alone.

    A segment under a power limit draws min(gpu_watts, gpu_limit_w) per GPU and does
    1 / slowdown of its length in work (`wattcap.powerlimit`), so a completed job's work
    is its duration and its run time no less. `redo`: a preempted job loses the work since
    its last checkpoint (SimConfig.checkpoint_every_s), so its work may exceed it.
    """
    problems: list[str] = []
    jobs = {j.job_id: j for j in trace}
    node_names = {f"node-{i}" for i in range(nodes)}
    by_job: dict[str, list[ScheduleRow]] = defaultdict(list)
    for r in schedule:
        if r.job_id not in jobs:
            problems.append(f"{r.job_id}: not in the trace")
            continue
        by_job[r.job_id].append(r)
    for jid in jobs:
        if jid not in by_job:
            problems.append(f"{jid}: missing from the schedule")

    # ---- per-job rules, waits, queue intervals
    seg_t: list[float] = []  # power and occupancy deltas
    seg_w: list[float] = []
    seg_g: list[float] = []
    node_events: dict[str, list[tuple[float, int]]] = defaultdict(list)
    q_t: list[float] = []
    q_d: list[int] = []
    waits: dict[str, float] = {}
    completed = 0
    preemptions = 0
    horizon = max([j.submit_s for j in trace] or [0.0])
    for r in schedule:
        if r.end_s is not None:
            horizon = max(horizon, r.end_s)
    idle = policy.gpu_idle_watts
    for jid, rows in by_job.items():
        j = jobs[jid]
        segs = sorted((r for r in rows if r.start_s is not None), key=lambda r: r.start_s)
        empty = [r for r in rows if r.start_s is None]
        for r in empty:
            if r.outcome != "unfinished" or r.end_s is not None:
                problems.append(f"{jid}: a row without start_s must be 'unfinished' with no end")
        ran = 0.0
        progress = 0.0  # natural seconds of work: a segment under a limit runs slower
        lost_some = False  # preempted: a checkpointed job may redo work
        prev: ScheduleRow | None = None
        prev_end: float | None = None
        queued_from = j.submit_s
        for k, r in enumerate(segs):
            if r.end_s is None or r.end_s < r.start_s:
                problems.append(f"{jid}: segment at {r.start_s} has no valid end")
                continue
            if r.start_s < j.submit_s - 1e-9:
                problems.append(f"{jid}: starts at {r.start_s} before its submit {j.submit_s}")
            if prev_end is not None and r.start_s < prev_end - 1e-9:
                problems.append(f"{jid}: segments overlap at {r.start_s}")
            if len(r.nodes) != j.replicas:
                problems.append(f"{jid}: {len(r.nodes)} node entries for {j.replicas} replicas")
            for n in r.nodes:
                if n not in node_names:
                    problems.append(f"{jid}: unknown node {n!r}")
            if r.outcome not in ("completed", "preempted", "unfinished", "continued"):
                problems.append(f"{jid}: unknown outcome {r.outcome!r}")
            if r.outcome == "continued" and k == len(segs) - 1:
                problems.append(f"{jid}: its last segment is 'continued'")
            if (
                prev is not None
                and prev.outcome == "continued"
                and (abs(r.start_s - (prev.end_s or 0.0)) > 1e-6 or r.nodes != prev.nodes)
            ):
                problems.append(f"{jid}: a 'continued' run resumes elsewhere or later")
            if r.gpu_limit_w is not None and r.gpu_limit_w <= 0:
                problems.append(f"{jid}: gpu_limit_w {r.gpu_limit_w!r} is not positive")
            if r.outcome == "completed" and k != len(segs) - 1:
                problems.append(f"{jid}: runs again after completing")
            if k == 0:
                waits[jid] = r.start_s - j.submit_s
            q_t += [queued_from, r.start_s]
            q_d += [1, -1]
            ran += r.end_s - r.start_s
            progress += (r.end_s - r.start_s) / slowdown(j.gpu_watts, r.gpu_limit_w)
            prev = r
            prev_end = r.end_s
            queued_from = r.end_s
            if r.end_s > r.start_s:
                seg_t += [r.start_s, r.end_s]
                dw = j.gpus * (drawn_watts(j.gpu_watts, r.gpu_limit_w) - idle)
                seg_w += [dw, -dw]
                seg_g += [j.gpus, -j.gpus]
                for n in r.nodes:
                    node_events[n] += [
                        (r.start_s, j.gpus_per_replica),
                        (r.end_s, -j.gpus_per_replica),
                    ]
            if r.outcome == "preempted":
                preemptions += 1
                lost_some = redo
        last = segs[-1].outcome if segs else "unfinished"
        if last == "completed":
            completed += 1
            tol = DURATION_TOL_S * max(1.0, j.duration_s)
            # its work done: exactly, or more where a preemption lost some to redo
            short = progress < j.duration_s - tol
            if short or (not lost_some and progress > j.duration_s + tol):
                problems.append(
                    f"{jid}: completed after {progress!r} s of work of {j.duration_s!r} s"
                )
            if ran < j.duration_s - tol:
                problems.append(f"{jid}: finished in {ran!r} s, sooner than its {j.duration_s!r} s")
        else:
            if not lost_some and progress > j.duration_s + DURATION_TOL_S * max(1.0, j.duration_s):
                problems.append(
                    f"{jid}: ran {progress!r} s of work, more than its {j.duration_s!r} s"
                )
            q_t += [queued_from, horizon]  # still waiting at the end
            q_d += [1, -1]

    # ---- the sweep: every point where power, queue or cap can change
    t0 = start_epoch_s
    edges = [e - t0 for w in policy.cap_schedule for e in (w.start_s, w.end_s)]
    pts = np.unique(
        np.array([0.0, horizon, *seg_t, *q_t, *[e for e in edges if 0.0 < e < horizon]])
    )
    pts = pts[(pts >= 0.0) & (pts <= horizon)]
    n = pts.size
    dw = np.zeros(n)
    dg = np.zeros(n)
    dq = np.zeros(n)
    if seg_t:
        i = np.searchsorted(pts, np.array(seg_t))
        np.add.at(dw, i, np.array(seg_w))
        np.add.at(dg, i, np.array(seg_g))
    if q_t:
        i = np.searchsorted(pts, np.minimum(np.array(q_t), horizon))
        np.add.at(dq, i, np.array(q_d, dtype=float))
    excess = np.cumsum(dw)
    busy = np.cumsum(dg)
    queued = np.cumsum(dq)
    site = policy.pue * (nodes * policy.node_base_watts + nodes * gpus_per_node * idle + excess)
    cap = _cap_curve(policy, pts + t0)
    dt = np.diff(pts)  # interval k is [pts[k], pts[k+1])
    site_i, cap_i, q_i, busy_i = site[:-1], cap[:-1], queued[:-1], busy[:-1]
    over = (site_i > cap_i + OVER_EPS_W) & (dt > 0)
    waiting = (q_i > 0.5) & (dt > 0)
    qtime = float(dt[waiting].sum())
    total_gpus = nodes * gpus_per_node

    # ---- per-node occupancy
    max_on_node = 0
    for node, evs in node_events.items():
        evs.sort(key=lambda e: (e[0], e[1]))  # releases before takes at one instant
        level = 0
        for _, d in evs:
            level += d
            if level > max_on_node:
                max_on_node = level
            if level > gpus_per_node:
                problems.append(f"{node}: {level} GPUs in use of {gpus_per_node}")
                break

    wl = list(waits.values())
    return CheckResult(
        horizon_s=horizon,
        seconds_over_cap=float(dt[over].sum()),
        worst_overshoot_w=float((site_i - cap_i)[over].max()) if over.any() else 0.0,
        worst_overshoot_pct=float((100.0 * (site_i - cap_i) / cap_i)[over].max())
        if over.any()
        else 0.0,
        energy_mwh=float((site_i * dt).sum()) / 3.6e9,
        cap_used_while_waiting=float((site_i / cap_i * dt)[waiting].sum()) / qtime
        if qtime > 0
        else None,
        queue_nonempty_s=qtime,
        waits=waits,
        wait_p50_s=float(np.percentile(wl, 50)) if wl else None,
        wait_p95_s=float(np.percentile(wl, 95)) if wl else None,
        completed_jobs=completed,
        preemptions=preemptions,
        max_gpus_on_a_node=max_on_node,
        gpu_utilisation=float((busy_i * dt).sum()) / (total_gpus * horizon)
        if horizon > 0
        else None,
        problems=problems,
    )


def main(argv: list[str] | None = None) -> int:
    from .run import load_policy, parse_start

    p = argparse.ArgumentParser(prog="python -m wattcap.sim.check", description=__doc__)
    p.add_argument("--trace", required=True)
    p.add_argument("--schedule", required=True)
    p.add_argument("--policy", required=True)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--gpus-per-node", type=int, required=True)
    p.add_argument("--start", required=True)
    a = p.parse_args(argv)
    from .trace import load_trace

    res = check(
        load_trace(a.trace),
        load_schedule(a.schedule),
        load_policy(a.policy),
        nodes=a.nodes,
        gpus_per_node=a.gpus_per_node,
        start_epoch_s=parse_start(a.start),
    )
    print(json.dumps(res.as_dict(), indent=2))
    return 1 if res.problems else 0


if __name__ == "__main__":
    sys.exit(main())
