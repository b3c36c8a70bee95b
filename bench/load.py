"""Load: N kwok nodes x 8 GPUs and a burst of M TrainingJobs on the local
control plane, against the operator as it is here and, back to back on the
same control plane, a baseline tree (`--ref DIR`, a worktree of an older
commit with its own .venv, e.g. `main` before issue 15, d750286).

For each operator, in turn (its own CRDs, a fresh namespace, the same burst):

- the operator's peak RSS (from /proc, polled every 0.5 s while it runs);
- cycle time p50 and p95, from the operator's own histogram
  `wattcap_cycle_duration_seconds` (bucket-interpolated, as Prometheus's
  `histogram_quantile` does), during the burst and in a steady window after;
- API server requests per cycle by verb (LIST also by resource), from the API
  server's own `apiserver_request_total`: the requests in the steady window
  with the operator running, less those in an equal window before it started
  (kwok's heartbeats, the controllers), divided by the cycles it completed;
- TrainingJob status PATCHes per cycle, during the burst and steady (nobody
  else patches TrainingJobs: no background to subtract), and the site
  Lease's renewals per cycle (a GET and a PUT each), counted by a watch on
  that one Lease: kwok's node Leases drown them in `apiserver_request_total`;
- the time from the apply of the burst to every job Admitted (or Running) or
  waiting with a reason (the apply itself is printed as the floor).

    make load NODES=100 JOBS=500 REF=/work/wt/h15ref
    python bench/load.py --nodes 100 --jobs 500 --ref ../h15ref
    python bench/load.py --nodes 1000 --jobs 5000              # this tree only
    python bench/load.py --nodes 1000 --jobs 5000 --ref ../h15ref --ref-only

Cycle figures are those of the load's one site (PowerPolicy "site"), never
merged across sites. --profile .venv/bin/py-spy records this tree's operator.

Starts the control plane with --nodes itself (fails if one is up with another
size) and leaves it up; `hack/cluster.sh down` afterwards. On 2 shared cores
the timings are noisy: compare the two operators of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from prometheus_client.parser import text_string_to_metric_families

from localsite import KUBECONFIG, ROOT, kubectl, prepare, priority_fields

HIST = "wattcap_cycle_duration_seconds"
SITE = "site"  # the one PowerPolicy localsite.prepare makes; the cycle figures are its loop's
Requests = dict[tuple[str, str], float]


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def histogram(port: int, site: str = SITE) -> tuple[dict[float, float], float]:
    """The cycle histogram's cumulative buckets (le -> count) and its count, for
    one site: the load's PowerPolicy `site`. The operator labels the histogram
    by site (one loop per PowerPolicy); the baseline (d750286) has one loop and
    no label, so a series without a `site` label counts as that site's. Series
    of other sites are never merged in."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    buckets: dict[float, float] = {}
    count = 0.0
    for fam in text_string_to_metric_families(text):
        if fam.name != HIST:
            continue
        for s in fam.samples:
            if s.labels.get("site", site) != site:
                continue
            if s.name == f"{HIST}_bucket":
                buckets[float(s.labels["le"])] = s.value
            elif s.name == f"{HIST}_count":
                count = s.value
    return buckets, count


def quantile(q: float, after: dict[float, float], before: dict[float, float]) -> float:
    """`histogram_quantile` over the observations between two scrapes."""
    les = sorted(after)
    cum = [after[le] - before.get(le, 0.0) for le in les]
    total = cum[-1] if cum else 0.0
    if total <= 0:
        return float("nan")
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in zip(les, cum, strict=True):
        if c >= rank:
            if le == float("inf"):
                return le  # beyond the last finite bucket (Prometheus says its bound)
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-12)
        prev_le, prev_c = le, c
    return les[-1]


def apiserver_requests() -> Requests:
    """apiserver_request_total summed by (verb, resource)."""
    out: Requests = defaultdict(float)
    for fam in text_string_to_metric_families(kubectl("get", "--raw", "/metrics")):
        if fam.name != "apiserver_request":
            continue
        for s in fam.samples:
            if s.name == "apiserver_request_total":
                out[(s.labels.get("verb", ""), s.labels.get("resource", ""))] += s.value
    return out


def delta(a: Requests, b: Requests) -> Requests:
    return {k: b.get(k, 0.0) - a.get(k, 0.0) for k in set(a) | set(b)}


def burst(ns: str, n: int, old_priority: bool) -> list[dict[str, Any]]:
    """The same M jobs for every operator; `old_priority`: the baseline's
    integer `spec.priority` instead of a PriorityClass."""
    rng = random.Random(1)
    out = []
    for i in range(n):
        gpus = rng.choice([1, 2, 4, 8])
        prio = rng.randint(0, 3)
        spec: dict[str, Any] = {
            "gpusPerReplica": gpus,
            "preemptible": rng.random() < 0.5,
            "workloadClass": f"c{gpus}",
            "expectedDuration": "1h",
            "template": {"metadata": {"annotations": {"wattcap.io/sim-duration": "1h"}}},
        }
        spec.update({"priority": prio} if old_priority else priority_fields(prio))
        out.append(
            {
                "apiVersion": "wattcap.io/v1alpha1",
                "kind": "TrainingJob",
                "metadata": {"name": f"load-{i:05d}", "namespace": ns},
                "spec": spec,
            }
        )
    return out


def settled(custom: client.CustomObjectsApi, ns: str) -> tuple[int, int, int]:
    """(jobs, admitted or running, waiting with a reason and a message)."""
    items = custom.list_namespaced_custom_object(
        "wattcap.io", "v1alpha1", ns, "trainingjobs", _request_timeout=120
    )["items"]
    admitted = waiting = 0
    for t in items:
        st = t.get("status") or {}
        if st.get("phase") in ("Admitted", "Running", "Succeeded"):
            admitted += 1
        elif st.get("phase") and st.get("reason") and st.get("message"):
            waiting += 1
    return len(items), admitted, waiting


def _operator_pid(spy: int) -> int:
    """The operator py-spy started (its only child)."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        kids = Path(f"/proc/{spy}/task/{spy}/children").read_text().split()
        if kids:
            return int(kids[0])
        time.sleep(0.1)
    raise SystemExit("py-spy started no operator")


class Renewals(threading.Thread):
    """Counts the writes to the site's Lease (its MODIFIED events) until stopped."""

    def __init__(self, api: client.ApiClient, site: str = SITE) -> None:
        super().__init__(daemon=True)
        self.api, self.lease_name, self.count = api, f"wattcap-site-{site}", 0
        self.watch = watch.Watch()

    def run(self) -> None:
        coord = client.CoordinationV1Api(self.api)
        try:
            for ev in self.watch.stream(
                coord.list_namespaced_lease,
                "default",
                field_selector=f"metadata.name={self.lease_name}",
                timeout_seconds=3600,
            ):
                if ev["type"] == "MODIFIED":
                    self.count += 1
        except Exception:  # the stream cut when the run ends: the count is what was seen
            return


class PeakRss(threading.Thread):
    """Polls a process's RSS until stopped; keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            self.peak = max(self.peak, rss_mib(self.pid))


def clear(ns: str) -> None:
    """Delete a run's namespace (its jobs, their pods) and wait until it is gone."""
    kubectl("delete", "namespace", ns, "--wait=true", "--timeout=600s")


def run_one(
    tree: Path, label: str, args: argparse.Namespace, old: bool, last: bool
) -> dict[str, Any]:
    """One operator (the tree's own venv and CRDs) against the same burst."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(tree / "crds"))
    nodes = args.nodes
    gpus = nodes * 8
    cap = nodes * (500 + 8 * 70) + args.cap_share * gpus * (700 - 70)
    ns = f"load-{label}-{int(time.time())}"
    prepare(ns, cap, controlPeriod=args.period)
    api = config.new_client_from_config(config_file=KUBECONFIG)
    custom = client.CustomObjectsApi(api)
    port = free_port()

    log_path = Path(f"/tmp/wattcap-load-{label}.log")
    with open(log_path, "wb") as log:
        cmd = [
            str(tree / ".venv/bin/python"),
            "-m",
            "wattcap.cli",
            "operator",
            *("--metrics-port", str(port)),
        ]
        if args.profile and label == "this-tree":
            # py-spy samples every thread (kopf's loop, the site loops, the
            # informer's watches); collapsed stacks, one line per stack
            out = f"/tmp/wattcap-load-{label}.folded"
            cmd = [args.profile, "record", "--format", "raw", "--rate", "20", "-o", out, "--", *cmd]
        op = subprocess.Popen(
            cmd,
            env={"PATH": "/usr/bin:/bin", "KUBECONFIG": KUBECONFIG, "HOME": str(Path.home())},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tree,
        )
    pid = _operator_pid(op.pid) if args.profile and label == "this-tree" else op.pid
    rss = PeakRss(pid)
    rss.start()
    renewals = Renewals(api)
    renewals.start()
    try:
        end = time.monotonic() + 120
        while True:  # the operator up and deciding: its first cycle done
            try:
                if histogram(port)[1] >= 1:
                    break
            except OSError:
                pass
            if op.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"{label}: no cycle observed in 120 s; see {log_path}")
            time.sleep(0.5)
        h0, n0 = histogram(port)
        r0, l0 = apiserver_requests(), renewals.count
        jobs = burst(ns, args.jobs, old)
        t0 = time.monotonic()

        def create(obj: dict[str, Any]) -> None:
            custom.create_namespaced_custom_object(
                "wattcap.io", "v1alpha1", ns, "trainingjobs", obj, _request_timeout=120
            )

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, jobs))
        t_apply = time.monotonic() - t0
        while True:
            total, admitted, waiting = settled(custom, ns)
            if total == args.jobs and admitted + waiting == total:
                break
            if op.poll() is not None:
                raise SystemExit(f"{label}: the operator exited ({op.returncode}); {log_path}")
            if time.monotonic() - t0 > args.timeout:
                raise SystemExit(
                    f"{label}: not settled after {args.timeout:.0f} s: "
                    f"{admitted}+{waiting}/{total}; {log_path}"
                )
            time.sleep(2)
        t_all = time.monotonic() - t0
        h1, n1 = histogram(port)
        r1, l1 = apiserver_requests(), renewals.count
        t1 = time.monotonic()
        time.sleep(args.window)
        h2, n2 = histogram(port)
        steady = delta(r1, apiserver_requests())
        l2 = renewals.count
        steady_s = time.monotonic() - t1
    finally:
        rss.done.set()
        renewals.watch.stop()
        os.kill(pid, signal.SIGTERM)  # under py-spy: it writes its stacks when the operator ends
        op.wait(60)
    # background: the same control plane, the same pods, no operator
    before = apiserver_requests()
    time.sleep(steady_s)
    background = delta(before, apiserver_requests())
    bg_s = steady_s
    if not last:  # the next operator gets the same control plane without these jobs
        clear(ns)
    cycles = max(n2 - n1, 1.0)
    in_burst = max(n1 - n0, 1.0)
    patches = ("PATCH", "trainingjobs")
    scale = steady_s / bg_s

    def per_cycle(keys: list[tuple[str, str]]) -> float:
        own = sum(steady.get(k, 0.0) - scale * background.get(k, 0.0) for k in keys)
        return round(max(own, 0.0) / cycles, 2)

    keys = sorted(set(steady) | set(background))
    verbs = sorted({v for v, _ in keys})
    by_verb = {v: per_cycle([k for k in keys if k[0] == v]) for v in verbs}
    lists = {r: per_cycle([(v, r)]) for v, r in keys if v == "LIST"}
    return {
        "operator": label,
        "tree": str(tree),
        "period": args.period,
        "admitted": admitted,
        "waiting": waiting,
        "apply_s": round(t_apply, 1),
        "apply_to_settled_s": round(t_all, 1),
        "peak_rss_mib": round(rss.peak),
        "last_bucket_s": max(le for le in h2 if le != float("inf")),
        "cycles_burst": int(n1 - n0),
        "cycle_p50_s_burst": round(quantile(0.5, h1, h0), 3),
        "cycle_p95_s_burst": round(quantile(0.95, h1, h0), 3),
        "cycles_steady": int(n2 - n1),
        "cycle_p50_s_steady": round(quantile(0.5, h2, h1), 3),
        "cycle_p95_s_steady": round(quantile(0.95, h2, h1), 3),
        "requests_per_cycle": per_cycle(keys),
        "status_patches_per_cycle_burst": round(delta(r0, r1).get(patches, 0.0) / in_burst, 2),
        "status_patches_per_cycle_steady": round(steady.get(patches, 0.0) / cycles, 2),
        "lease_renewals_per_cycle_burst": round((l1 - l0) / in_burst, 2),
        "lease_renewals_per_cycle_steady": round((l2 - l1) / cycles, 2),
        "requests_per_cycle_by_verb": {v: x for v, x in by_verb.items() if x >= 0.05},
        "list_calls_per_cycle": {r: x for r, x in lists.items() if x >= 0.05},
    }


ROWS = (
    ("apply (the API server stores the burst)", "apply_s", "{:.1f} s"),
    ("apply -> all admitted or waiting with a reason", "apply_to_settled_s", "{:.1f} s"),
    ("  admitted / waiting", None, None),
    ("operator peak RSS", "peak_rss_mib", "{} MiB"),
    ("cycle p50 / p95 during the burst", ("cycle_p50_s_burst", "cycle_p95_s_burst"), None),
    ("cycle p50 / p95 in the steady window", ("cycle_p50_s_steady", "cycle_p95_s_steady"), None),
    ("cycles in the steady window", "cycles_steady", "{}"),
    ("API server requests per cycle (less background)", "requests_per_cycle", "{:.1f}"),
    ("TrainingJob status PATCHes per cycle, burst", "status_patches_per_cycle_burst", "{:.2f}"),
    ("TrainingJob status PATCHes per cycle, steady", "status_patches_per_cycle_steady", "{:.2f}"),
    ("Lease renewals (GET + PUT) per cycle, burst", "lease_renewals_per_cycle_burst", "{:.2f}"),
    ("Lease renewals (GET + PUT) per cycle, steady", "lease_renewals_per_cycle_steady", "{:.2f}"),
)


def seconds(x: float, last: float) -> str:
    """A quantile; past the histogram's last finite bucket, only that bound is known."""
    return f"> {last:g}" if x == float("inf") else f"{x:.3f}"


def report(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    print(f"load: {args.nodes} kwok nodes x 8 GPUs, a burst of {args.jobs} TrainingJobs")
    print(f"{'':50s}" + "".join(f"{r['operator']:>22s}" for r in results))
    for title, key, fmt in ROWS:
        cells = []
        for r in results:
            if key is None:
                cells.append(f"{r['admitted']} / {r['waiting']}")
            elif isinstance(key, tuple):
                last = r["last_bucket_s"]
                cells.append(f"{seconds(r[key[0]], last)} / {seconds(r[key[1]], last)} s")
            else:
                cells.append(fmt.format(r[key]))
        print(f"{title:50s}" + "".join(f"{c:>22s}" for c in cells))
    for r in results:
        print(f"  {r['operator']}: requests per cycle by verb {r['requests_per_cycle_by_verb']}")
        print(f"  {r['operator']}: LIST calls per cycle by resource {r['list_calls_per_cycle']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=500)
    ap.add_argument("--ref", type=Path, help="baseline worktree (with .venv), run second")
    ap.add_argument(
        "--ref-old-priority",
        action="store_true",
        help="the baseline reads spec.priority, not priorityClassName: d750286 does, "
        "newer trees do not (until 2026-12-07 this was always on, which its help said to avoid)",
    )
    ap.add_argument(
        "--ref-only",
        action="store_true",
        help="run only the baseline (the big run's two operators in two holds of the machine)",
    )
    ap.add_argument("--period", default="5s", help="the PowerPolicy's controlPeriod")
    ap.add_argument("--window", type=float, default=30.0, help="steady-state window, s")
    ap.add_argument("--cap-share", type=float, default=0.5, help="GPUs at TDP the cap has room for")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--profile",
        metavar="PY_SPY",
        help="run this tree's operator under py-spy (stacks: /tmp/wattcap-load-this-tree.folded)",
    )
    args = ap.parse_args()

    subprocess.run(
        [str(ROOT / "hack" / "cluster.sh"), "up", "--nodes", str(args.nodes)], check=True
    )
    have = len(kubectl("get", "nodes", "-l", "type=kwok", "-o", "name").split())
    if have != args.nodes:
        raise SystemExit(f"the control plane is up with {have} nodes: hack/cluster.sh down first")
    left = [n for n in kubectl("get", "namespaces", "-o", "name").split() if "/load-" in n]
    if left:  # a run's last operator leaves its jobs running, holding the cap and GPUs
        raise SystemExit(f"an earlier run's jobs are still here ({left}): cluster.sh down first")
    results = []
    if not args.ref_only:
        results.append(run_one(ROOT, "this-tree", args, old=False, last=not args.ref))
    if args.ref:
        ref = args.ref.resolve()
        results.append(run_one(ref, "baseline", args, old=args.ref_old_priority, last=True))
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    if args.json:
        print(json.dumps({"nodes": args.nodes, "jobs": args.jobs, "runs": results}, indent=2))
    else:
        report(args, results)


if __name__ == "__main__":
    main()
