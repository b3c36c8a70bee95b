"""Where wattcap's gap to the clairvoyant oracle comes from (issue 16).

Replays stress traces (`wattcap.sim.stress.family`) with wattcap handed one
piece of the oracle's knowledge at a time, so each row says what not
knowing that piece costs: the cap used while jobs wait, the p50 and p95
wait, and seconds over the cap, as `wattcap simulate --json` gives them.

* `wattcap`: as shipped;
* `dur-pre`, `dur-nonpre`, `dur`: the true run time of preemptible jobs,
  of the others, of all, in place of the class's duration forecast;
* `power`: every job's true power, with no spread, in place of its class's
  distribution (one forecast per job, as the oracle's);
* `margin-0`: the policy's safetyMargin set to 0 (the oracle plans with none);
* `rho-0`: classCorrelation 0 (jobs of one class independent);
* `hints-unchecked`, `no-hints` (told less, for the `hints-*` traces): a
  hint used only as the prior of a class nothing of was measured (never
  checked against what was drawn: the behaviour before checked hints), and
  no hint at all;
* `everything`: all of the above at once (true durations and power, no
  margin): what is left to the oracle is how wattcap plans, not what it knows
  (it still preempts for windows, and plans a non-preemptible job near a
  window through it);
* `oracle`: the reference (`wattcap.sim.oracle`).

Everything else is wattcap's: its forecaster learns from what is measured,
and decide, the shedding and the measurement are the same. The rows of one
trace are one draw each: the figures move by a point or two with any
change of schedule, so compare across traces, not one row.

    python bench/oracle_gap.py [--only base spread-30 ...] [--seeds 1]
        [--variants wattcap power ...] [--jobs N]

`--jobs` shrinks every trace (for a quick look; the family has 400 jobs).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence

from wattcap.forecast import PowerForecast
from wattcap.model import PowerPolicy, parse_time
from wattcap.sim.engine import SimConfig, simulate
from wattcap.sim.report import summarize
from wattcap.sim.schedulers import JobView, Scheduler, WattcapScheduler, make_scheduler
from wattcap.sim.stress import START, StressSpec, StressTrace, family, stress_trace
from wattcap.sim.trace import TraceJob

# variant -> (durations told: "", "preemptible", "non-preemptible" or "all";
#             power told; policy fields changed)
VARIANTS: dict[str, tuple[str, bool, dict[str, float]]] = {
    "wattcap": ("", False, {}),
    "dur-pre": ("preemptible", False, {}),
    "dur-nonpre": ("non-preemptible", False, {}),
    "dur": ("all", False, {}),
    "power": ("", True, {}),
    "margin-0": ("", False, {"safety_margin": 0.0}),
    "rho-0": ("", False, {"class_correlation": 0.0}),
    "everything": ("all", True, {"safety_margin": 0.0, "class_correlation": 0.0}),
    "hints-unchecked": ("", False, {}),
    "no-hints": ("", False, {}),
}


class Told(WattcapScheduler):
    """wattcap told some of the trace's truth: durations (of some jobs) or power."""

    def __init__(
        self,
        policy: PowerPolicy,
        jobs: Sequence[TraceJob],
        durations: str = "",
        power: bool = False,
    ) -> None:
        super().__init__(policy)
        self.durations, self.power = durations, power
        self._true_w = {j.job_id: PowerForecast(float(j.gpu_watts), 1.0, "truth", 0) for j in jobs}
        self._true_s = {j.job_id: float(j.duration_s) for j in jobs}

    def forecast(self, job: JobView) -> PowerForecast:
        return self._true_w[job.key] if self.power else super().forecast(job)

    def shape(self, job: JobView) -> tuple[str, int]:
        # told its power, a job's forecast is its own: one per job, as the oracle's
        return (job.key, job.gpus) if self.power else super().shape(job)

    def duration(self, job: JobView) -> float:
        told = self.durations == "all" or self.durations == (
            "preemptible" if job.preemptible else "non-preemptible"
        )
        return self._true_s[job.key] if told else super().duration(job)


def scheduler(variant: str, policy: PowerPolicy, jobs: Sequence[TraceJob]) -> Scheduler:
    """The scheduler a row replays with."""
    if variant == "oracle":
        return make_scheduler("oracle", policy, jobs)
    durations, power, fields = VARIANTS[variant]
    told = Told(dataclasses.replace(policy, **fields), jobs, durations, power)
    if variant == "hints-unchecked":
        told.forecaster.hint_min_samples = math.inf
    return told


def trace(spec: StressSpec, variant: str) -> StressTrace:
    """The trace a row replays: the spec's, its hints left out for `no-hints`
    (the same jobs: a share of 0 draws the same numbers)."""
    bare = variant == "no-hints"
    return stress_trace(dataclasses.replace(spec, hint_share=0.0) if bare else spec)


def row(spec: StressSpec, variant: str) -> dict:
    """One replay's summary (`wattcap simulate --json`'s figures)."""
    st = trace(spec, variant)
    sched = scheduler(variant, st.policy, st.jobs)
    t0 = parse_time(START, "start")
    res = simulate(st.jobs, st.policy, sched, SimConfig(spec.nodes, spec.gpus_per_node, t0))
    return summarize(res, nodes=spec.nodes, gpus_per_node=spec.gpus_per_node, seed=0)


def line(name: str, variant: str, s: dict) -> str:
    cap = s["cap_used_while_waiting"]
    p50, p95 = s["wait_p50_s"], s["wait_p95_s"]
    return (
        f"{name:14s} {variant:10s} over {s['seconds_over_cap']:6.0f} s  cap used "
        + ("   n/a" if cap is None else f"{100 * cap:5.1f}%")
        + ("  p50    n/a" if p50 is None else f"  p50 {p50 / 1e3:6.1f} ks")
        + ("  p95    n/a" if p95 is None else f"  p95 {p95 / 1e3:6.1f} ks")
        + f"  preemptions {s['preemptions']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", help="traces whose name contains one of these")
    ap.add_argument("--seeds", type=int, default=1, help="draws of each trace")
    ap.add_argument("--variants", nargs="*", default=[*VARIANTS, "oracle"])
    ap.add_argument("--jobs", type=int, help="jobs per trace (default: the family's)")
    a = ap.parse_args(argv)
    for v in a.variants:
        if v != "oracle" and v not in VARIANTS:
            ap.error(f"unknown variant {v!r}; choose from {', '.join([*VARIANTS, 'oracle'])}")
    for spec in family():
        if a.only and not any(k in spec.name for k in a.only):
            continue
        for k in range(max(1, a.seeds)):
            s = dataclasses.replace(spec, seed=spec.seed + 100 * k)
            if a.jobs:
                s = dataclasses.replace(s, jobs=a.jobs)
            name = s.name if k == 0 else f"{s.name}-s{k + 1}"
            for v in a.variants:
                print(line(name, v, row(s, v)), flush=True)
    print("(job power in the stress traces is modelled, not measured per job)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
