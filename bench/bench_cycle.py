"""The operator's whole pure cycle on a big site, beside the decision core inside it.

`controller.cycle` is what the site loop runs between its read and its writes: parse
and validate every TrainingJob, forecast, `admission.decide`, and build every status.
This times it on 1,000 nodes x 8 GPUs and 5,000 TrainingJobs (about 70 % of the GPUs
busy, the rest of the jobs waiting), in the steady state: each cycle sees the statuses
the previous one wrote (the changes of substance, which the operator writes at once;
its few text refreshes a cycle are left out), and each write gives its object a new
resourceVersion, as the API server does.

Beside it, in the same run and interleaved, the baseline: the same cycles with the spec
cache emptied first, so every TrainingJob is parsed again as before that cache; and
`decide`'s share, timed inside the cycles (the rest is the bookkeeping around the
core). The API calls (the read and the writes) are not in it: `bench/load.py` measures
the loop end to end on a real API server.

    python bench/bench_cycle.py [--nodes 1000] [--jobs 5000] [--cycles 7]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

from wattcap import controller
from wattcap.controller import ControllerMemory, SiteState, cycle
from wattcap.forecast import Forecaster
from wattcap.jobs import ANN_FORECAST, ANN_PLACEMENT, LABEL_TJ, job_name
from wattcap.model import PowerPolicy, format_time
from wattcap.priorities import TENANT_USABLE_LABEL, parse_priority_classes
from wattcap.statuswrites import substance_changed

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
        "status": {"active": 1, "conditions": []},
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=1_000)
    ap.add_argument("--jobs", type=int, default=5_000)
    ap.add_argument("--cycles", type=int, default=7)
    args = ap.parse_args()
    state = site(args.nodes, args.jobs, seed=1)
    mem = ControllerMemory(Forecaster(700, 100))
    inner: list[float] = []
    decide = controller.decide

    def timed(snap: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return decide(snap)
        finally:
            inner.append(time.perf_counter() - t0)

    controller.decide = timed  # the same call, timed where the cycle makes it
    whole: list[float] = []
    cold: list[float] = []
    try:
        for k in range(2 * args.cycles + 1):
            if k % 2 == 0 and k:
                mem.parsed.clear()  # the baseline: every TrainingJob parsed again
            t0 = time.perf_counter()
            plan = cycle(state, mem, NOW + 15 * k)
            (cold if k % 2 == 0 and k else whole).append(time.perf_counter() - t0)
            for body in plan.create_jobs:  # the Jobs it created, not yet running
                meta = body["metadata"]
                state.jobs[plan.job_refs[(meta["namespace"], meta["name"])]] = body
            for tj in state.trainingjobs:  # the statuses as the operator writes them
                ref = (tj["metadata"]["namespace"], tj["metadata"]["name"])
                if ref in plan.tj_status and substance_changed(tj["status"], plan.tj_status[ref]):
                    tj["status"] = plan.tj_status[ref]  # written: a new resourceVersion
                    meta = tj["metadata"]
                    meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
    finally:
        controller.decide = decide
    # the first cycle admits; the rest are the steady state, the two kinds interleaved
    steady, core = whole[1:], inner[1::2]
    p50, c50, b50 = statistics.median(steady), statistics.median(core), statistics.median(cold)
    print(
        f"pure cycle: {args.jobs} TrainingJobs, {len(state.pods)} running, {args.nodes} nodes x 8 "
        f"GPUs; first cycle {whole[0] * 1e3:.0f} ms (admits), then {len(steady)} + {len(cold)} "
        "steady cycles, interleaved"
    )
    ms = 1e3
    print(f"  controller.cycle              p50 {p50 * ms:7.1f} ms  max {max(steady) * ms:7.1f} ms")
    print(f"  baseline, every job re-parsed p50 {b50 * ms:7.1f} ms  max {max(cold) * ms:7.1f} ms")
    print(f"  decide, inside the cycles     p50 {c50 * ms:7.1f} ms  ({c50 / p50:.0%} of the cycle)")
    print(
        f"  ratios: cycle/baseline {p50 / b50:.2f}x, cycle/decide {p50 / c50:.0f}x; issue 15 "
        "target for the whole loop: p95 <= 2 s"
    )


if __name__ == "__main__":
    main()
