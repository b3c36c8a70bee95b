"""The operator's whole pure cycle on a big site, beside the decision core inside it.

`controller.cycle` is what the site loop runs between its read and its writes: parse
and validate every TrainingJob, forecast, `admission.decide`, and build every status;
then `Cluster.apply_status` picks the statuses to write (`statuswrites.py`: every change
of substance, a share of text refreshes) before its API calls. This times both on
1,000 nodes x 8 GPUs and 5,000 TrainingJobs (about 70 % of the GPUs busy with running,
ready jobs, the rest of the jobs waiting), in the steady state: each cycle sees the
statuses the previous one picked, and each write gives its object a new
resourceVersion, as the API server does.

Garbage collection as the operator runs it: each cycle follows
`handlers.collect_between_cycles` (a full collection, then the survivors frozen), as
the site loop calls it after every cycle, untimed (it runs while the loop sleeps).

Beside it, in the same run and interleaved, two more: the same cycles under Python's
default collector settings (`default_collector`: what the operator ran before it
collected between cycles), and the baseline: the default collector with the
operator's per-job caches emptied first (`forget`), so every TrainingJob is parsed
again. And the shares of `decide` (timed inside the cycles) and of the status picks
(the rest is the bookkeeping around the core), and the process's resident memory
after the first cycle and after the last. The API calls (the read and the writes)
are not in it: `bench/load.py` measures the loop end to end on a real API server.

    python bench/bench_cycle.py [--nodes 1000] [--jobs 5000] [--cycles 7]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import statistics
import time
from typing import Any

from wattcap import controller
from wattcap.controller import ControllerMemory, SiteState, cycle
from wattcap.forecast import Forecaster
from wattcap.handlers import collect_between_cycles
from wattcap.jobs import ANN_FORECAST, ANN_PLACEMENT, LABEL_TJ, job_name
from wattcap.model import PowerPolicy, format_time
from wattcap.priorities import TENANT_USABLE_LABEL, parse_priority_classes
from wattcap.statuswrites import StatusWrites

NOW = 1_782_864_000.0  # 2026-07-01T00:00:00Z
CLASSES = parse_priority_classes(
    {"metadata": {"name": f"prio-{v}", "labels": {TENANT_USABLE_LABEL: "true"}}, "value": v}
    for v in range(1, 6)
)


def node(name: str, gpus: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def trainingjob(i: int, rng: random.Random, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "wattcap.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {
            "name": f"j{i}",
            "namespace": f"team-{i % 20}",
            "uid": f"uid-{i}",
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": format_time(NOW - rng.uniform(0, 7200)),
        },
        "spec": {
            "replicas": 1,
            "gpusPerReplica": gpus,
            "priorityClassName": f"prio-{rng.randint(1, 5)}",
            "preemptible": rng.random() < 0.5,
            "workloadClass": f"class-{rng.randint(0, 15)}",
            "expectedDuration": f"{rng.randint(1, 12)}h",
            "template": {"spec": {"containers": [{"name": "main", "image": "trainer:1"}]}},
        },
        "status": {},
    }


def owned_job(tj: dict[str, Any], node_name: str, watts: float) -> dict[str, Any]:
    name = tj["metadata"]["name"]
    return {
        "metadata": {
            "name": job_name(name),
            "namespace": tj["metadata"]["namespace"],
            "creationTimestamp": format_time(NOW - 600),
            "labels": {LABEL_TJ: name},
            "annotations": {
                ANN_PLACEMENT: json.dumps([node_name]),
                ANN_FORECAST: json.dumps({"gpuWatts": watts, "durationSeconds": 3600}),
            },
            "ownerReferences": [{"kind": "TrainingJob", "name": name}],
        },
        "spec": {"suspend": False},
        "status": {"active": 1, "ready": 1, "conditions": []},
    }


def site(nodes: int, jobs: int, seed: int) -> SiteState:
    rng = random.Random(seed)
    gpn = 8
    node_objs = [node(f"n{i}", gpn) for i in range(nodes)]
    running = int(nodes * 0.7)
    tjs, owned, pods = [], {}, []
    for i in range(jobs):
        tj = trainingjob(i, rng, gpn if i < running else rng.choice((1, 2, 4, 8)))
        tjs.append(tj)
        if i < running:
            ref = (tj["metadata"]["namespace"], tj["metadata"]["name"])
            owned[ref] = owned_job(tj, f"n{i}", rng.uniform(300, 650))
            pods.append(
                {
                    "metadata": {
                        "name": f"j{i}-0",
                        "namespace": ref[0],
                        "labels": {LABEL_TJ: ref[1]},
                    },
                    "spec": {"nodeName": f"n{i}", "containers": []},
                }
            )
    policy = PowerPolicy(
        cap_watts=nodes * gpn * 700 * 0.75,
        pue=1.0,
        node_base_watts=0,
        gpu_idle_watts=100,
        gpu_tdp_watts=700,
    )
    return SiteState(policy, node_objs, pods, tjs, owned, priority_classes=CLASSES)


Ref = tuple[str, str]


def forget(mem: ControllerMemory) -> None:
    """The baseline: what the operator caches per TrainingJob, emptied (and its
    statuses all compared: `pick_statuses(..., keys=False)`)."""
    for memo in (mem.parsed, mem.resolved, mem.times):
        memo.clear()
    controller._forecast_of.cache_clear()
    controller._placement_of.cache_clear()


def default_collector() -> None:
    """Python's collector as it starts: nothing frozen, the default thresholds."""
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)


def rss_mib() -> float:
    """The process's resident memory now (Linux), MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def pick_statuses(
    state: SiteState, plan: Any, writes: StatusWrites, now: float, keys: bool = True
) -> dict[Ref, dict[str, Any]]:
    """What `Cluster.apply_status` does before its API calls: the statuses it writes."""
    current = {}
    for tj in state.trainingjobs:
        meta = tj["metadata"]
        current[(meta["namespace"], meta["name"])] = tj.get("status") or {}
    return dict(writes.to_write(current, plan.tj_status, now, plan.status_keys if keys else {}))


def p95(xs: list[float]) -> float:
    """Nearest rank: with under 20 cycles, the slowest."""
    return sorted(xs)[math.ceil(0.95 * len(xs)) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=1_000)
    ap.add_argument("--jobs", type=int, default=5_000)
    ap.add_argument("--cycles", type=int, default=7)
    args = ap.parse_args()
    state = site(args.nodes, args.jobs, seed=1)
    by_ref = {(t["metadata"]["namespace"], t["metadata"]["name"]): t for t in state.trainingjobs}
    mem = ControllerMemory(Forecaster(700, 100))
    writes = StatusWrites()
    inner: list[float] = []
    decide = controller.decide

    def timed(snap: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return decide(snap)
        finally:
            inner.append(time.perf_counter() - t0)

    controller.decide = timed  # the same call, timed where the cycle makes it
    # per cycle: (whole, controller.cycle, decide, status picks), for each arm
    arms = ("operator", "default gc", "baseline")
    runs: dict[str, list[tuple[float, float, float, float]]] = {a: [] for a in arms}
    first, rss = 0.0, []
    full = {a: 0 for a in arms}  # full collections that started inside a timed cycle
    timing = [""]

    def count_full(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2 and timing[0]:
            full[timing[0]] += 1

    gc.callbacks.append(count_full)
    try:
        for k in range(len(arms) * args.cycles + 1):
            arm = arms[(k - 1) % len(arms)] if k > 0 else "operator"
            if arm == "operator":
                collect_between_cycles()  # as the site loop does after the cycle before
            else:
                default_collector()
            if arm == "baseline":
                forget(mem)
            now = NOW + 15 * k
            timing[0] = arm if k > 0 else ""
            t0 = time.perf_counter()
            plan = cycle(state, mem, now)
            t1 = time.perf_counter()
            picked = pick_statuses(state, plan, writes, now, keys=arm != "baseline")
            t2 = time.perf_counter()
            timing[0] = ""
            figures = (t2 - t0, t1 - t0, inner[-1], t2 - t1)
            if k == 0:
                first = t2 - t0
                rss.append(rss_mib())
            else:
                runs[arm].append(figures)
            for body in plan.create_jobs:  # the Jobs it created, not yet running
                meta = body["metadata"]
                state.jobs[plan.job_refs[(meta["namespace"], meta["name"])]] = body
            for ref, status in picked.items():  # written: a new resourceVersion
                meta = by_ref[ref]["metadata"]
                by_ref[ref]["status"] = status
                meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
            writes.written(picked)
            del plan, picked
        collect_between_cycles()
        rss.append(rss_mib())
    finally:
        controller.decide = decide
        gc.callbacks.remove(count_full)
        default_collector()
    print(
        f"pure cycle: {args.jobs} TrainingJobs, {len(state.pods)} running, {args.nodes} nodes x 8 "
        f"GPUs; first cycle {first * 1e3:.0f} ms (admits), then {args.cycles} steady cycles "
        f"of each, interleaved; p95 by nearest rank"
    )
    head = f"{'p50 ms':>7s} {'p95 ms':>7s} {'share':>5s}"
    print(f"  {'':24s} {' | '.join(f'{a:>21s}' for a in arms)}")
    print(f"  {'':24s} {' | '.join([head] * len(arms))}")
    for i, label in enumerate(
        ("cycle + status picks", "  controller.cycle", "    decide", "  status picks")
    ):
        cells = []
        for arm in arms:
            xs = [r[i] for r in runs[arm]]
            share = statistics.median(xs) / statistics.median(r[0] for r in runs[arm])
            cells.append(f"{statistics.median(xs) * 1e3:7.1f} {p95(xs) * 1e3:7.1f} {share:5.0%}")
        print(f"  {label:24s} {' | '.join(cells)}")
    whole = {a: [r[0] for r in runs[a]] for a in arms}
    for a in arms[1:]:
        print(
            f"  ratio operator/{a} p50 "
            f"{statistics.median(whole['operator']) / statistics.median(whole[a]):.2f}x, p95 "
            f"{p95(whole['operator']) / p95(whole[a]):.2f}x"
        )
    print(
        "  full collections inside the timed cycles: " + ", ".join(f"{a} {full[a]}" for a in arms)
    )
    print(
        f"  resident memory {rss[0]:.0f} MiB after the first cycle, {rss[-1]:.0f} MiB after "
        f"the last ({len(arms) * args.cycles} later); issue 15 target for the whole loop: "
        "p95 <= 2 s"
    )


if __name__ == "__main__":
    main()
