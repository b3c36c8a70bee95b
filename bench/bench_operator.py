"""The operator end to end: `kubectl apply` of N TrainingJobs until every one is
admitted or waiting with a reason, with the operator's CPU and memory.

Needs the local control plane (hack/cluster.sh up) and the CRDs. The baseline
is the API server's own time to accept the same objects (the apply itself),
so the ratio is what wattcap adds on top of storing the jobs.

    python bench/bench_operator.py [--jobs 500]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import yaml

from localsite import kubectl, prepare, priority_fields, start

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def jobs(ns: str, n: int) -> str:
    rng = random.Random(1)
    docs = []
    for i in range(n):
        gpus = rng.choice([1, 2, 4, 8])
        docs.append(
            {
                "apiVersion": "wattcap.io/v1alpha1",
                "kind": "TrainingJob",
                "metadata": {"name": f"bench-{i:04d}", "namespace": ns},
                "spec": {
                    "gpusPerReplica": gpus,
                    **priority_fields(rng.randint(0, 3)),
                    "workloadClass": f"c{gpus}",
                    "expectedDuration": "1h",
                    "template": {"metadata": {"annotations": {"wattcap.io/sim-duration": "1h"}}},
                },
            }
        )
    return yaml.safe_dump_all(docs)


def settled(ns: str) -> tuple[int, int, int]:
    items = json.loads(kubectl("get", "trainingjobs.wattcap.io", "-n", ns, "-o", "json"))["items"]
    admitted = waiting = 0
    for t in items:
        st = t.get("status") or {}
        if st.get("phase") in ("Admitted", "Running"):
            admitted += 1
        elif st.get("phase") == "Queued" and st.get("reason") and st.get("message"):
            waiting += 1
    return len(items), admitted, waiting


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=500)
    args = ap.parse_args()
    ns = f"bench-{int(time.time())}"
    prepare(ns, 30_000, controlPeriod="5s")
    op = start("operator", "--metrics-port", "0")
    try:
        time.sleep(5)  # operator start-up is not what is measured
        cpu0, peak_rss = cpu_seconds(op.pid), rss_mib(op.pid)
        t0 = time.monotonic()
        kubectl("apply", "-f", "-", stdin=jobs(ns, args.jobs))
        t_apply = time.monotonic() - t0
        while True:
            total, admitted, waiting = settled(ns)
            peak_rss = max(peak_rss, rss_mib(op.pid))
            if total == args.jobs and admitted + waiting == total:
                break
            if time.monotonic() - t0 > 600:
                raise SystemExit(f"not settled after 600 s: {admitted}+{waiting}/{total}")
            time.sleep(0.5)
        t_all = time.monotonic() - t0
        cpu = cpu_seconds(op.pid) - cpu0
    finally:
        op.terminate()
        op.wait(20)
        kubectl("delete", "namespace", ns, "--wait=false")
    print(f"operator end to end: {args.jobs} TrainingJobs on the local control plane")
    print(f"  kubectl apply (baseline: API server stores them)  {t_apply:6.1f} s")
    print(
        f"  apply -> all admitted or waiting with a reason    {t_all:6.1f} s  "
        f"({admitted} admitted, {waiting} waiting)"
    )
    print(f"  ratio to the baseline                              {t_all / t_apply:6.2f}x")
    print(f"  operator CPU {cpu:.1f} s, peak RSS {peak_rss:.0f} MiB")


if __name__ == "__main__":
    main()
