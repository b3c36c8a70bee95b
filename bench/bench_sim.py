"""The simulator on a large synthetic trace: wattcap against the gpu-only baseline.

Generates the trace in-process (`wattcap.sim.synth.synthetic_trace` when it is
there, else a small local generator), replays it with `wattcap` and with
`gpu-only` through the same engine and the same `admission.decide`, and prints
jobs/s, wall seconds and the wattcap/gpu-only ratio, all measured in this run.
The cap lets about `--power-share` of the GPUs run at the classes' mean power,
so the site is power-bound, with a two-hour demand-response window each day.

    python bench/bench_sim.py [--jobs 100000] [--nodes 64] [--gpus-per-node 8]
        [--reservation-depth N]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import random
import statistics
import time
from typing import Any

from wattcap import profile
from wattcap.model import CapWindow, PowerPolicy, parse_time
from wattcap.sim import meter_math
from wattcap.sim.engine import SimConfig, SimResult, simulate
from wattcap.sim.report import summarize
from wattcap.sim.schedulers import make_scheduler
from wattcap.sim.trace import TraceJob

START = "2026-07-01T00:00:00Z"
# the default site and load (compare_decide.py replays the same)
NODES, GPUS_PER_NODE, LOAD, POWER_SHARE = 64, 8, 0.6, 0.75


def local_trace(
    n: int, *, seed: int, nodes: int, gpus_per_node: int, load: float
) -> list[TraceJob]:
    """Poisson arrivals, lognormal durations, a few power classes (modelled power)."""
    rng = random.Random(seed)
    classes = [("llm", 620.0), ("cnn", 540.0), ("speech", 420.0), ("rl", 300.0)]
    shapes = [(1, 1), (1, 2), (1, 4), (1, 8), (2, 8)]
    jobs = []
    mean_gpu_s = 0.0
    raw = []
    for i in range(n):
        r, g = rng.choice(shapes)
        g = min(g, gpus_per_node)
        r = min(r, nodes)
        d = max(60.0, round(rng.lognormvariate(math.log(1200), 1.2)))
        name, w = rng.choice(classes)
        raw.append((i, r, g, d, name, w * (1 + rng.gauss(0, 0.03))))
        mean_gpu_s += r * g * d
    rate = load * nodes * gpus_per_node / (mean_gpu_s / n)
    t = 0.0
    for i, r, g, d, name, w in raw:
        jobs.append(
            TraceJob(
                f"job-{i}",
                round(t, 3),
                float(d),
                r,
                g,
                name,
                rng.choice((0, 1, 2)),
                min(700.0, max(70.0, w)),
                preemptible=rng.random() < 0.4,
            )
        )
        t += rng.expovariate(rate)
    return jobs


def make_trace(n: int, *, seed: int, nodes: int, gpus_per_node: int, load: float):
    try:
        from wattcap.sim.synth import synthetic_trace
    except ImportError:
        return "local", local_trace(
            n, seed=seed, nodes=nodes, gpus_per_node=gpus_per_node, load=load
        )
    jobs = synthetic_trace(n, seed=seed, nodes=nodes, gpus_per_node=gpus_per_node, load=load)
    return "synth.synthetic_trace", jobs


def make_policy(jobs: list[TraceJob], nodes: int, gpn: int, share: float, start: float):
    idle, pue, base = 70.0, 1.2, 800.0
    mean_w = statistics.fmean(j.gpu_watts for j in jobs[:5000])
    idle_site = pue * (nodes * base + nodes * gpn * idle)
    cap = idle_site + pue * share * nodes * gpn * (mean_w - idle)
    dr_cap = idle_site + 0.6 * (cap - idle_site)
    span = max(j.submit_s for j in jobs)
    windows = tuple(
        CapWindow(start + d * 86400 + 17 * 3600, start + d * 86400 + 19 * 3600, dr_cap, "dr")
        for d in range(int(span // 86400) + 2)
    )
    return PowerPolicy(cap_watts=cap, cap_schedule=windows, pue=pue, node_base_watts=base)


def default_replay(jobs: int, seed: int) -> tuple[list[TraceJob], PowerPolicy, float]:
    """The default site's trace, policy and start (epoch s), for the benches
    that replay it as this one does by default."""
    start = parse_time(START, "start")
    _, trace = make_trace(jobs, seed=seed, nodes=NODES, gpus_per_node=GPUS_PER_NODE, load=LOAD)
    return trace, make_policy(trace, NODES, GPUS_PER_NODE, POWER_SHARE, start), start


def replay_args(doc: str) -> argparse.Namespace:
    """The options of a bench that replays the default site: --jobs and --seed."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    return ap.parse_args()


def replay_wattcap(
    trace: list[TraceJob], policy: PowerPolicy, start: float, seed: int, **config: Any
) -> SimResult:
    """`wattcap`'s replay of `trace` on the default site; `config`: more SimConfig fields."""
    cfg = SimConfig(NODES, GPUS_PER_NODE, start, seed=seed, **config)
    return simulate(trace, policy, make_scheduler("wattcap", policy), cfg)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--nodes", type=int, default=NODES)
    ap.add_argument("--gpus-per-node", type=int, default=GPUS_PER_NODE)
    ap.add_argument("--load", type=float, default=LOAD, help="offered load x GPU capacity")
    ap.add_argument("--power-share", type=float, default=POWER_SHARE)
    ap.add_argument("--reservation-depth", type=int, default=None, help="default: the policy's")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    start = parse_time(START, "start")
    t = time.perf_counter()
    source, jobs = make_trace(
        a.jobs, seed=a.seed, nodes=a.nodes, gpus_per_node=a.gpus_per_node, load=a.load
    )
    gen_s = time.perf_counter() - t
    policy = make_policy(jobs, a.nodes, a.gpus_per_node, a.power_share, start)
    if a.reservation_depth is not None:
        policy = dataclasses.replace(policy, reservation_depth=a.reservation_depth)
    span_d = max(j.submit_s for j in jobs) / 86400
    print(
        f"trace: {len(jobs)} jobs from {source} ({gen_s:.1f} s), arrivals over {span_d:.1f} days;"
        f" site {a.nodes} x {a.gpus_per_node} GPUs, cap {policy.cap_watts / 1e3:.0f} kW"
        f" with {len(policy.cap_schedule)} DR windows, reservationDepth {policy.reservation_depth}"
    )
    built = profile.COMPILED and meter_math.COMPILED
    print(
        "compiled modules (profile, meter_math): "
        + ("in use" if built else "NOT BUILT, running as plain Python: reinstall with a C compiler")
    )
    walls = {}
    for name in ("wattcap", "gpu-only"):
        cfg = SimConfig(a.nodes, a.gpus_per_node, start, seed=a.seed)
        t = time.perf_counter()
        res = simulate(jobs, policy, make_scheduler(name, policy), cfg)
        wall = time.perf_counter() - t
        walls[name] = wall
        s = summarize(res, nodes=a.nodes, gpus_per_node=a.gpus_per_node, seed=a.seed)
        print(
            f"{name:9s} wall {wall:6.1f} s  {len(jobs) / wall:8.0f} jobs/s  "
            f"cycles {s['decision_cycles']:7d}  completed {s['completed_jobs']}  "
            f"over cap {s['seconds_over_cap']:.0f} s  wait p50 {s['wait_p50_s'] or 0:.0f} s "
            f"p95 {s['wait_p95_s'] or 0:.0f} s  preemptions {s['preemptions']}"
        )
    print(f"ratio wattcap/gpu-only wall: {walls['wattcap'] / walls['gpu-only']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
