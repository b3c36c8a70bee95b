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

import time
from collections.abc import Iterator

import bench_sim
from wattcap import admission
from wattcap.admission import Decision, Snapshot
from wattcap.sim import engine
from wattcap.sim.engine import SimResult


def main() -> int:
    a = bench_sim.replay_args(__doc__)
    trace, policy, start = bench_sim.default_replay(a.jobs, a.seed)

    def replay() -> tuple[float, SimResult]:
        t = time.perf_counter()
        res = bench_sim.replay_wattcap(trace, policy, start, a.seed)
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
