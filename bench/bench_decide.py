"""One decision cycle on a large snapshot: wattcap's core against the gpu-only baseline.

Both run the same `decide` on the same snapshot; gpu-only has an unbounded cap,
so the ratio is the cost of planning in watts on top of counting GPUs.

    python bench/bench_decide.py [--queued 10000] [--nodes 1000] [--repeat 7]
        [--reservation-depth N]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import time

from wattcap.admission import NodeState, QueuedJob, RunningJob, Snapshot, decide
from wattcap.model import CapWindow, PowerPolicy


def build(queued: int, nodes: int, gpus_per_node: int, seed: int) -> Snapshot:
    """A busy site: about 70 % of GPUs running, a deep queue, a DR window ahead."""
    rng = random.Random(seed)
    now = 1_782_864_000.0  # 2026-07-01T00:00:00Z
    tdp, idle = 700.0, 70.0
    node_states = [NodeState(f"node-{i}", gpus_per_node, gpus_per_node) for i in range(nodes)]
    running: list[RunningJob] = []
    for i, n in enumerate(node_states):
        busy = rng.choice((0, 4, 8, 8, 8))
        if busy:
            n.gpus_free -= busy
            running.append(
                RunningJob(
                    f"run-{i}",
                    1,
                    busy,
                    rng.uniform(300, 650),
                    rng.randint(0, 3),
                    rng.random() < 0.3,
                    now - 600,
                    now + rng.uniform(60, 20000),
                    (n.name,),
                )
            )
    q = [
        QueuedJob(
            f"q-{i}",
            rng.choice((1, 1, 1, 2, 4)),
            rng.choice((1, 2, 4, 8)),
            rng.uniform(250, 700),
            rng.randint(0, 3),
            now - rng.uniform(0, 7200),
            rng.uniform(600, 36000),
            rng.random() < 0.3,
        )
        for i in range(queued)
    ]
    it_full = nodes * 800 + nodes * gpus_per_node * tdp
    policy = PowerPolicy(
        cap_watts=1.2 * it_full * 0.62,
        gpu_tdp_watts=tdp,
        gpu_idle_watts=idle,
        cap_schedule=(CapWindow(now + 3600, now + 3 * 3600, 1.2 * it_full * 0.5, "dr"),),
    )
    return Snapshot(now, policy, node_states, running, q)


def timeit(snap: Snapshot, repeat: int, render: bool = False) -> tuple[float, int]:
    """Median seconds per cycle; with `render`, every wait's message is built
    too, as the operator does when it writes statuses."""
    times, admitted = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        d = decide(snap)
        if render:
            for w in d.waits:
                _ = w.message
        times.append(time.perf_counter() - t0)
        admitted = len(d.admits)
    return statistics.median(times), admitted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--queued", type=int, default=10_000)
    ap.add_argument("--nodes", type=int, default=1_000)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--reservation-depth", type=int, default=None, help="default: the policy's")
    args = ap.parse_args()
    snap = build(args.queued, args.nodes, args.gpus_per_node, seed=1)
    if args.reservation_depth is not None:
        snap.policy = dataclasses.replace(snap.policy, reservation_depth=args.reservation_depth)
    unbounded = dataclasses.replace(snap.policy, cap_watts=float("inf"), cap_schedule=())
    base = dataclasses.replace(snap, policy=unbounded)
    w_t, w_n = timeit(snap, args.repeat)
    r_t, _ = timeit(snap, args.repeat, render=True)
    g_t, g_n = timeit(base, args.repeat)
    print(
        f"decision cycle: {args.queued} queued, {len(snap.running)} running, "
        f"{args.nodes} nodes x {args.gpus_per_node} GPUs, reservationDepth "
        f"{snap.policy.reservation_depth} (median of {args.repeat})"
    )
    print(f"  wattcap   {w_t * 1e3:8.1f} ms  admitted {w_n}")
    print(f"  wattcap   {r_t * 1e3:8.1f} ms  with all {args.queued - w_n} wait messages rendered")
    print(f"  gpu-only  {g_t * 1e3:8.1f} ms  admitted {g_n}")
    print(
        f"  ratio wattcap/gpu-only {w_t / g_t:.2f}x   target <= 100 ms: "
        f"{'met' if w_t <= 0.1 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
