"""This checkout's decision core against another checkout's, side by side.

Wall times on this shared 2-core machine swing by 10 to 25 % from one run to
the next, and even between two processes started together: more than most
changes to `decide` are worth, so timing two runs one after the other says
little. This bench captures real snapshots from a replay of the
`bench_sim.py` trace (power-bound, demand-response windows), then times this
checkout's `decide` and the other's on each snapshot in turn, in one
process, so both see the machine at the same moment. It also counts the
snapshots where the two decide differently: a change meant only to be
faster must show 0. Against an identical checkout it read 1.009 and 1.013:
a ratio within 2 % of 1 is no difference.

    python bench/compare_decide.py --against ../old/operator [--jobs 40000]
        [--sample 0.05] [--rounds 4]

`--against` is the other checkout's `operator/` folder (e.g. made with
`git worktree add ../old <rev>`); its `wattcap` package is loaded under
another name next to this one. What is compared is `admission`: the
snapshots are this checkout's objects, so both sides place through this
checkout's free-GPU index and read this checkout's policy model.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import importlib
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import bench_sim
from wattcap import admission
from wattcap.admission import Snapshot
from wattcap.model import PowerPolicy
from wattcap.sim import engine
from wattcap.sim.engine import SimConfig, simulate
from wattcap.sim.schedulers import make_scheduler

OTHER = "wattcap_other"


def load_other(operator_dir: Path, into: Path) -> ModuleType:
    """The other checkout's `admission` module, as package `wattcap_other`."""
    src = operator_dir / "wattcap"
    if not (src / "admission.py").is_file():
        raise SystemExit(f"{src}: no wattcap/admission.py there (pass a checkout's operator/)")
    shutil.copytree(src, into / OTHER)
    sys.path.insert(0, str(into))
    return importlib.import_module(f"{OTHER}.admission")


def capture(jobs: int, share: float, seed: int) -> list[Snapshot]:
    """Snapshots of `share` of the decision cycles of a wattcap replay."""
    trace, policy, start = bench_sim.default_replay(jobs, seed)
    nodes, gpn = bench_sim.NODES, bench_sim.GPUS_PER_NODE
    rng = random.Random(seed)
    snaps: list[Snapshot] = []
    real = admission.decide

    def sampling(snap: Snapshot, **kw: bool) -> admission.Decision:
        if rng.random() < share:
            snaps.append(copy.deepcopy(snap))
        return real(snap, **kw)

    engine.admission.decide = sampling  # type: ignore[assignment]
    try:
        simulate(trace, policy, make_scheduler("wattcap", policy), SimConfig(nodes, gpn, start))
    finally:
        engine.admission.decide = real
    # Copies would each carry their own window schedule; the replay hands over
    # one object per schedule, which decide recognises by identity.
    shared: dict[tuple, PowerPolicy] = {}
    for i, s in enumerate(snaps):
        snaps[i] = dataclasses.replace(s, policy=shared.setdefault(s.policy.cap_schedule, s.policy))
    snaps.sort(key=lambda s: id(s.policy))
    return snaps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--against", type=Path, required=True, help="the other checkout's operator/")
    ap.add_argument("--jobs", type=int, default=40_000, help="jobs replayed to capture from")
    ap.add_argument("--sample", type=float, default=0.05, help="share of cycles captured")
    ap.add_argument("--rounds", type=int, default=4, help="rounded up to an even number")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    rounds = max(2, a.rounds + a.rounds % 2)
    with tempfile.TemporaryDirectory() as tmp:
        other = load_other(a.against.resolve(), Path(tmp))
        t = time.perf_counter()
        snaps = capture(a.jobs, a.sample, a.seed)
        print(
            f"captured {len(snaps)} snapshots from a {a.jobs}-job replay "
            f"({time.perf_counter() - t:.0f} s)"
        )
        sides = (admission.decide, other.decide)
        spent = [0.0, 0.0]
        differ = 0
        clock = time.perf_counter
        gc.disable()  # a collection landing in one side's call would count against it
        try:
            for r in range(rounds):
                # The second call on a snapshot finds it in warmer caches: run
                # against an identical checkout, the side called second in two
                # of three rounds looked 2.7 % faster. Each side goes first
                # equally often, per snapshot.
                order = (0, 1) if r % 2 else (1, 0)
                for s in snaps:
                    got = []
                    for k in order:
                        t0 = clock()
                        d = sides[k](s, estimate_starts=False, explain=False)
                        spent[k] += clock() - t0
                        got.append(
                            ([(x.key, x.nodes) for x in d.admits], [p.key for p in d.preempts])
                        )
                    differ += r == 0 and got[0] != got[1]
        finally:
            gc.enable()
    n = rounds * len(snaps)
    print(f"this checkout  {1e6 * spent[0] / n:7.1f} us per decision cycle")
    print(f"--against      {1e6 * spent[1] / n:7.1f} us per decision cycle")
    print(f"ratio this/against: {spent[0] / spent[1]:.3f}; snapshots decided differently: {differ}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
