"""The replay against the reference that decides at every control period.

Replays a synthetic trace (the `bench_sim.py` generator and policy, on a site
of your choosing) twice: as `wattcap simulate` does, deciding only where the
outcome could change, and with `SimConfig(every_tick=True)`, deciding at
every tick and event on the whole queue, as the operator does. Prints both
walls and cycle counts, and whether the two admitted and preempted the same
jobs at the same moments; if not, the first decision where they part. The
unit tests hold small traces to this; larger ones find what they miss
(a reference replay of 1,000 jobs on 8 nodes takes about half a minute).

    python bench/replay_reference.py [--jobs 800] [--nodes 8] [--seed 1]
        [--scheduler wattcap]
"""

from __future__ import annotations

import argparse
import time

import bench_sim
from decisions import same_acts
from wattcap.model import parse_time
from wattcap.sim.engine import SimConfig, simulate
from wattcap.sim.schedulers import SCHEDULERS, make_scheduler


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=800)
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scheduler", choices=SCHEDULERS, default="wattcap")
    a = ap.parse_args()
    gpn = bench_sim.GPUS_PER_NODE
    start = parse_time(bench_sim.START, "start")
    _, trace = bench_sim.make_trace(
        a.jobs, seed=a.seed, nodes=a.nodes, gpus_per_node=gpn, load=bench_sim.LOAD
    )
    policy = bench_sim.make_policy(trace, a.nodes, gpn, bench_sim.POWER_SHARE, start)
    acts = {}
    for every in (False, True):
        log: list = []
        cfg = SimConfig(a.nodes, gpn, start, seed=a.seed, decision_log=log, every_tick=every)
        t = time.perf_counter()
        res = simulate(trace, policy, make_scheduler(a.scheduler, policy, trace), cfg)
        wall = time.perf_counter() - t
        acts[every] = [entry for entry in log if entry[1] or entry[2]]
        name = "reference (every tick)" if every else "replay"
        print(
            f"{name:23s} {wall:6.1f} s  cycles {res.decision_cycles:7d}  "
            f"decisions that act {len(acts[every])}  over cap {res.seconds_over_cap:.0f} s"
        )
    return 0 if same_acts(acts[False], acts[True], ("replay", "reference")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
