"""The replay's cost against a baseline checkout's, measured in one run.

Replays the `bench_sim.py` trace with `wattcap`, once with the package of a
baseline checkout (another worktree, e.g. `git worktree add ../base <commit>`,
with its compiled modules built or copied in) and once with this one, each
in a subprocess of its own, one after the other. Prints both CPU and wall
seconds, their ratio, the decision cycles and seconds over the cap, and
whether the two admitted and preempted the same jobs at the same moments
(a speed-up must not move a decision). CPU seconds are the figure to
compare on a shared machine: wall time there moves with the other load.

    python bench/replay_ab.py --baseline ../base [--jobs 10000] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path

from decisions import same_acts

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CHILD = r"""
import pickle, sys, time
sys.path.insert(0, sys.argv[1])
import bench_sim
from wattcap import profile
from wattcap.sim.engine import SimConfig, simulate
from wattcap.sim.schedulers import make_scheduler
trace, policy, start = bench_sim.default_replay(int(sys.argv[2]), int(sys.argv[3]))
log = []
cfg = SimConfig(bench_sim.NODES, bench_sim.GPUS_PER_NODE, start, seed=int(sys.argv[3]),
                decision_log=log)
cpu, wall = time.process_time(), time.perf_counter()
res = simulate(trace, policy, make_scheduler("wattcap", policy), cfg)
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
acts = [e for e in log if e[1] or e[2]]
with open(sys.argv[4], "wb") as f:
    pickle.dump({"cpu": cpu, "wall": wall, "cycles": res.decision_cycles,
                 "over": res.seconds_over_cap, "acts": acts, "compiled": profile.COMPILED,
                 "package": profile.__file__}, f)
"""


def replay(checkout: Path, jobs: int, seed: int, out: Path) -> dict:
    """One replay with `checkout`'s package (its operator/ first on the path)."""
    env = dict(os.environ, PYTHONPATH=str(checkout / "operator"))
    subprocess.run(
        [sys.executable, "-c", CHILD, str(checkout / "bench"), str(jobs), str(seed), str(out)],
        env=env,
        check=True,
    )
    with out.open("rb") as f:
        return pickle.load(f)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--baseline", type=Path, required=True, help="a checkout to compare with")
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, checkout in (("baseline", a.baseline.resolve()), ("this tree", ROOT)):
            r = runs[name] = replay(checkout, a.jobs, a.seed, Path(tmp) / f"{len(runs)}.pkl")
            print(
                f"{name:9s} cpu {r['cpu']:7.1f} s  wall {r['wall']:7.1f} s  "
                f"cycles {r['cycles']:7d}  over cap {r['over']:.0f} s  "
                f"decisions that act {len(r['acts'])}  "
                f"({'compiled' if r['compiled'] else 'NOT compiled'}: {r['package']})"
            )
    base, new = runs["baseline"], runs["this tree"]
    print(
        f"ratio this/baseline: cpu {new['cpu'] / base['cpu']:.2f}, "
        f"wall {new['wall'] / base['wall']:.2f}"
    )
    return 0 if same_acts(base["acts"], new["acts"], ("baseline", "this tree")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
