"""What a simulation run reports: the summary (text or JSON), the schedule CSV, a plot.

Every figure is computed from the FORMAT.md power model on ground truth, so
`sim/check.py`, reading only the trace and the schedule, gets the same numbers.

Waits are first start minus submit. `wait_p50_s`/`wait_p95_s` count only jobs
that started; `wait_p95_incl_unstarted_s` also counts each never-started job
as waiting until the end of the run (a lower bound on its real wait).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from .engine import SimResult

SCHEDULE_COLUMNS = ("job_id", "start_s", "end_s", "nodes", "outcome", "gpu_limit_w")

# The JSON summary's keys, in order. Other tools read them: add, never rename.
SUMMARY_KEYS = (
    "scheduler",
    "jobs",
    "completed_jobs",
    "unfinished_jobs",
    "never_started_jobs",
    "preemptions",
    "horizon_s",
    "seconds_over_cap",
    "worst_overshoot_w",
    "worst_overshoot_pct",
    "cap_used_while_waiting",
    "queue_nonempty_s",
    "wait_p50_s",
    "wait_p95_s",
    "wait_p95_incl_unstarted_s",
    "waits_counted",
    "energy_mwh",
    "gpu_utilisation",
    "decision_cycles",
    "forecast_miss_rate",
    "nodes",
    "gpus_per_node",
    "seed",
)


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarize(res: SimResult, *, nodes: int, gpus_per_node: int, seed: int) -> dict[str, Any]:
    """The run's figures as a dict with SUMMARY_KEYS, JSON-ready."""
    waits = [
        res.first_start[j.job_id] - j.submit_s for j in res.jobs if j.job_id in res.first_start
    ]
    unstarted = [res.horizon_s - j.submit_s for j in res.jobs if j.job_id not in res.first_start]
    h = res.horizon_s
    out: dict[str, Any] = {
        "scheduler": res.scheduler,
        "jobs": len(res.jobs),
        "completed_jobs": res.completed,
        "unfinished_jobs": len(res.jobs) - res.completed,
        "never_started_jobs": len(unstarted),
        "preemptions": res.preemptions,
        "horizon_s": h,
        "seconds_over_cap": res.seconds_over_cap,
        "worst_overshoot_w": res.worst_overshoot_w,
        "worst_overshoot_pct": res.worst_overshoot_pct,
        "cap_used_while_waiting": (
            res.cap_ratio_queue_s / res.queue_time_s if res.queue_time_s > 0 else None
        ),
        "queue_nonempty_s": res.queue_time_s,
        "wait_p50_s": _pct(waits, 50),
        "wait_p95_s": _pct(waits, 95),
        "wait_p95_incl_unstarted_s": _pct(waits + unstarted, 95),
        "waits_counted": len(waits),
        "energy_mwh": res.energy_j / 3.6e9,
        "gpu_utilisation": res.gpu_seconds / (res.total_gpus * h) if h > 0 else None,
        "decision_cycles": res.decision_cycles,
        "forecast_miss_rate": res.forecast_miss_rate,
        "nodes": nodes,
        "gpus_per_node": gpus_per_node,
        "seed": seed,
    }
    assert tuple(out) == SUMMARY_KEYS
    return out


def _dur(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def format_summary(summary: dict[str, Any]) -> str:
    """The human summary printed without --json."""
    s = summary
    cap_used = s["cap_used_while_waiting"]
    util = s["gpu_utilisation"]
    miss = s["forecast_miss_rate"]
    lines = [
        f"scheduler            {s['scheduler']}  ({s['nodes']} nodes x {s['gpus_per_node']} GPUs,"
        f" {s['jobs']} jobs, {_dur(s['horizon_s'])} simulated)",
        f"over cap             {s['seconds_over_cap']:.0f} s; worst overshoot "
        f"{s['worst_overshoot_w'] / 1e3:.1f} kW ({s['worst_overshoot_pct']:.2f}% of cap)",
        "cap used while jobs wait "
        + ("n/a (queue never waited)" if cap_used is None else f"{100 * cap_used:.1f}%")
        + f" (queue non-empty {_dur(s['queue_nonempty_s'])})",
        f"wait                 p50 {_dur(s['wait_p50_s'])}, p95 {_dur(s['wait_p95_s'])} "
        f"over {s['waits_counted']} started jobs; p95 counting never-started jobs as waiting "
        f"to the end: {_dur(s['wait_p95_incl_unstarted_s'])}",
        f"completed            {s['completed_jobs']} of {s['jobs']} "
        f"({s['never_started_jobs']} never started)",
        f"energy               {s['energy_mwh']:.3f} MWh",
        f"preemptions          {s['preemptions']}",
        "GPU utilisation      " + ("n/a" if util is None else f"{100 * util:.1f}%"),
        f"decision cycles      {s['decision_cycles']}",
    ]
    if miss is not None:
        lines.append(f"forecast miss rate   {100 * miss:.1f}% (finished jobs above their forecast)")
    lines.append("(job power in a synthetic or joined trace is modelled, not measured per job)")
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def write_schedule(res: SimResult, path: str | Path) -> None:
    """The schedule in FORMAT.md's layout: one row per run segment."""
    rows = sorted(
        res.segments,
        key=lambda s: (math.inf if s.start_s is None else s.start_s, s.job_id),
    )
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(SCHEDULE_COLUMNS)
        for s in rows:
            w.writerow(
                [
                    s.job_id,
                    _num(s.start_s),
                    _num(s.end_s),
                    ";".join(s.nodes),
                    s.outcome,
                    _num(s.gpu_limit_w),
                ]
            )


def plot(res: SimResult, path: str | Path, *, title: str = "") -> None:
    """Site power (ground truth) against the cap, queue length beneath."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = res.series
    t = np.asarray(s.get("t", []), dtype=float) / 3600.0
    fig, (ax1, ax2) = plt.subplots(
        2, 1, sharex=True, figsize=(10, 6), gridspec_kw={"height_ratios": [3, 1]}
    )
    if t.size:
        ax1.step(t, np.asarray(s["site_w"]) / 1e3, where="post", label="site power (truth)")
        ax1.step(t, np.asarray(s["cap_w"]) / 1e3, where="post", color="red", label="cap")
        ax2.step(t, s["queue"], where="post", color="gray")
    ax1.set_ylabel("kW")
    ax1.legend(loc="upper right")
    ax1.set_title(title or f"wattcap simulate: {res.scheduler}")
    ax2.set_ylabel("jobs queued")
    ax2.set_xlabel("hours since trace start")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
