"""wattcap with and without GPU power limits (the second lever), side by side, one run.

Two sites: the shipped trace (`data/traces/alibaba-v2023-h100-3d.csv` with
`examples/policies/site-dr.yaml`: a 2-hour window taking the cap from 160 to 140 kW) and a
stress trace (`wattcap.sim.stress`, default spec) whose demand-response window takes 25 %
of the cap's headroom above idle away. Each is replayed twice with the `wattcap` scheduler
through the same engine: `spec.powerLimits` off (today: preempt), and on (minFraction 0.5).

"GPU-h lost" is lost work as the levers define it when they choose between throttling
and preempting (`wattcap.powerlimit.throttled_lost_s`, `preempted_lost_s`: one
definition, used by `levers.py`'s cost and the simulator's accounts), unweighted here:
the GPU time by which jobs end later than unconstrained, plus the work they do again.
A throttled job loses (wall time - progress) while limited; a preempted one the time it
stands stopped while the cut lasts (until the cap rises again, it runs again or it would
have finished), and its progress since its last checkpoint
(`--checkpoint`, default 30 min of progress; the simulator's `checkpoint_every_s`), done
again, so both runs pay for preemption as a real site would. Seconds over the cap are
the ground truth, and the independent checker (`wattcap.sim.check`, from the schedule's
gpu_limit_w) recomputes them.

    python bench/bench_powerlimits.py [--checkpoint 1800] [--stress-jobs 400]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from wattcap.model import PowerLimits, PowerPolicy, parse_time
from wattcap.sim.check import ScheduleRow, check
from wattcap.sim.engine import SimConfig, SimResult, simulate
from wattcap.sim.report import summarize
from wattcap.sim.run import load_policy
from wattcap.sim.schedulers import make_scheduler
from wattcap.sim.stress import START, StressSpec, stress_trace
from wattcap.sim.trace import TraceJob, load_trace

ROOT = Path(__file__).resolve().parents[1]


def replay(
    jobs: list[TraceJob], pol: PowerPolicy, nodes: int, gpn: int, start: float, ckpt: float
) -> tuple[dict, SimResult, float]:
    cfg = SimConfig(nodes, gpn, start, checkpoint_every_s=ckpt)
    t = time.perf_counter()
    res = simulate(jobs, pol, make_scheduler("wattcap", pol), cfg)
    wall = time.perf_counter() - t
    rows = [
        ScheduleRow(s.job_id, s.start_s, s.end_s, list(s.nodes), s.outcome, s.gpu_limit_w)
        for s in res.segments
    ]
    c = check(jobs, rows, pol, nodes=nodes, gpus_per_node=gpn, start_epoch_s=start, redo=True)
    s = summarize(res, nodes=nodes, gpus_per_node=gpn, seed=0)
    s["checker_seconds_over_cap"] = c.seconds_over_cap
    s["checker_problems"] = len(c.problems)
    preempt = res.checkpoint_lost_gpu_s + res.stopped_lost_gpu_s
    s["lost_gpu_h"] = (preempt + res.throttle_lost_gpu_s) / 3600.0
    s["lost_preempt_gpu_h"] = preempt / 3600.0
    s["lost_stopped_gpu_h"] = res.stopped_lost_gpu_s / 3600.0
    s["lost_redone_gpu_h"] = res.checkpoint_lost_gpu_s / 3600.0
    s["lost_throttle_gpu_h"] = res.throttle_lost_gpu_s / 3600.0
    s["throttled_segments"] = sum(1 for g in res.segments if g.gpu_limit_w is not None)
    return s, res, wall


ROWS = (
    ("preemptions", "preemptions", "{:.0f}"),
    ("GPU-h lost (total)", "lost_gpu_h", "{:.1f}"),
    ("  to preemption", "lost_preempt_gpu_h", "{:.1f}"),
    ("    stopped", "lost_stopped_gpu_h", "{:.1f}"),
    ("    done again", "lost_redone_gpu_h", "{:.1f}"),
    ("  to throttling", "lost_throttle_gpu_h", "{:.1f}"),
    ("throttled segments", "throttled_segments", "{:.0f}"),
    ("p95 wait (h)", "wait_p95_s", "h"),
    ("energy (MWh)", "energy_mwh", "{:.2f}"),
    ("makespan (h)", "horizon_s", "h"),
    ("cap used while waiting", "cap_used_while_waiting", "%"),
    ("s over cap (truth)", "seconds_over_cap", "{:.0f}"),
    ("s over cap (checker)", "checker_seconds_over_cap", "{:.0f}"),
    ("checker problems", "checker_problems", "{:.0f}"),
    ("completed jobs", "completed_jobs", "{:.0f}"),
)


def fmt(v: float | None, how: str) -> str:
    if v is None:
        return "n/a"
    if how == "h":
        return f"{v / 3600.0:.2f}"
    if how == "%":
        return f"{100.0 * v:.1f} %"
    return how.format(v)


def table(name: str, off: dict, on: dict, walls: tuple[float, float]) -> str:
    out = [f"\n== {name} ({off['jobs']} jobs, {off['nodes']} x {off['gpus_per_node']} GPUs)"]
    out.append(f"{'':26s}{'limits off':>14s}{'limits on':>14s}")
    for label, key, how in ROWS:
        out.append(f"{label:26s}{fmt(off[key], how):>14s}{fmt(on[key], how):>14s}")
    out.append(f"{'replay wall (s)':26s}{walls[0]:>14.1f}{walls[1]:>14.1f}")
    if off["preemptions"]:
        cut = 1.0 - on["preemptions"] / off["preemptions"]
        out.append(f"preemptions avoided: {100.0 * cut:.0f} %")
    if off["lost_gpu_h"] > 0:
        out.append(f"lost work with limits / without: {on['lost_gpu_h'] / off['lost_gpu_h']:.2f}")
    return "\n".join(out)


def compare(name: str, jobs, pol, nodes, gpn, start, ckpt) -> str:
    on_pol = dataclasses.replace(pol, power_limits=PowerLimits(enabled=True, min_fraction=0.5))
    off, _, w_off = replay(jobs, pol, nodes, gpn, start, ckpt)
    on, _, w_on = replay(jobs, on_pol, nodes, gpn, start, ckpt)
    return table(name, off, on, (w_off, w_on))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=float, default=1800.0, help="s of progress per checkpoint")
    ap.add_argument("--stress-jobs", type=int, default=400)
    ap.add_argument("--skip-shipped", action="store_true")
    args = ap.parse_args()
    start = parse_time(START, "start")
    if not args.skip_shipped:
        jobs = load_trace(ROOT / "data/traces/alibaba-v2023-h100-3d.csv")
        pol = load_policy(ROOT / "examples/policies/site-dr.yaml")
        print(compare("shipped trace, site-dr.yaml", jobs, pol, 64, 8, start, args.checkpoint))
    spec = StressSpec(name="dr25", jobs=args.stress_jobs, dr_depth=0.25)
    st = stress_trace(spec)
    print(
        compare(
            "stress trace, 25 % demand-response drop",
            st.jobs,
            st.policy,
            spec.nodes,
            spec.gpus_per_node,
            start,
            args.checkpoint,
        )
    )


if __name__ == "__main__":
    main()
