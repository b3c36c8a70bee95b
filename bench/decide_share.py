"""How much of a replay is the decision core, and how much the engine around it.

Replays the `bench_sim.py` trace with `wattcap`, keeping every decision
`admission.decide` returned; then replays it again with decide replaced by
those decisions, handed back in order. The second replay runs the same
cycles on the same states (the script checks it writes the same schedule),
so its wall time is the engine alone: the floor that no faster decide can
go under. Both figures come from this one run.

    python bench/decide_share.py [--jobs 100000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import bench_sim
from wattcap import admission
from wattcap.admission import Decision, Snapshot
from wattcap.sim import engine
from wattcap.sim.engine import SimConfig, SimResult, simulate
from wattcap.sim.schedulers import make_scheduler


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    trace, policy, start = bench_sim.default_replay(a.jobs, a.seed)
    nodes, gpn = bench_sim.NODES, bench_sim.GPUS_PER_NODE

    def replay() -> tuple[float, SimResult]:
        cfg = SimConfig(nodes, gpn, start, seed=a.seed)
        t = time.perf_counter()
        res = simulate(trace, policy, make_scheduler("wattcap", policy), cfg)
        return time.perf_counter() - t, res

    real = admission.decide
    kept: list[Decision] = []

    def keeping(snap: Snapshot, **kw: bool) -> Decision:
        d = real(snap, **kw)
        kept.append(d)
        return d

    recorded: Iterator[Decision] = iter(kept)

    def replaying(snap: Snapshot, **kw: bool) -> Decision:
        return next(recorded)

    try:
        engine.admission.decide = keeping  # type: ignore[assignment]
        full, res = replay()
        engine.admission.decide = replaying  # type: ignore[assignment]
        alone, again = replay()
    finally:
        engine.admission.decide = real
    if again.segments != res.segments or again.decision_cycles != res.decision_cycles:
        raise SystemExit("the replay with recorded decisions wrote another schedule")
    print(f"{a.jobs} jobs, {res.decision_cycles} decision cycles")
    print(f"replay with decide         {full:7.1f} s")
    print(f"replay, decisions replayed {alone:7.1f} s  (the engine alone)")
    print(f"decide's share: {1 - alone / full:.0%}; engine/replay ratio {alone / full:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
