"""Faults for the chaos suite, each done to a real part the way it happens in a site.

- the leader replica SIGKILLed (a crash, an OOM kill) and started again;
- the leader replica SIGSTOPped past its lease (a frozen node), then thawed;
- kube-apiserver or etcd SIGKILLed and restarted (`hack/cluster.sh restart`);
- Prometheus stopped for a while (`hack/prometheus.sh down`, then `up`);
- the exporter scraped twice (a second scrape job on the same target, as a
  ServiceMonitor and a PodMonitor that both match it do);
- a foreign exporter serving a GPU of a node outside the site at 1000 W.

`Ledger` watches what must never happen whatever the fault (a TrainingJob
lost, a Job made twice, a non-preemptible job suspended) by listing the
namespace about once a second in a background thread; `over_cap_beyond_grace`
judges the referee's samples against the cap in force at each moment.
The operator under test is never asked: these read the API server only.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from conftest import ROOT, OperatorProcess
from kubernetes import client, config
from referee import Sample

PROM = str(ROOT / "hack" / "prometheus.sh")
CLUSTER = str(ROOT / "hack" / "cluster.sh")
TIMEOUT = 5  # s, every API call here: a restarting API server must not hang the driver


def over_cap_beyond_grace(
    samples: Iterable[Sample], cap_at: Callable[[float], float], grace_s: float
) -> float:
    """Seconds the samples spent over the cap in force, not counting the first
    `grace_s` of each excursion (each sample holds until the next one)."""
    total, since = 0.0, None
    for a, b in itertools.pairwise(samples):
        if a.site_w > cap_at(a.t) + 1e-6:
            since = a.t if since is None else since
            total += max(0.0, b.t - max(a.t, since + grace_s))
        else:
            since = None
    return total


class Replicas:
    """Operator replicas as the chart runs them: each its own process and
    HOSTNAME; a killed one is started again under the same name (a restarted
    pod), with a new lease identity."""

    def __init__(self, kc: str, log_dir: Path, n: int = 2, lease_s: int = 5) -> None:
        self.kc = kc
        self.log_dir = log_dir
        self.lease_s = lease_s
        self.names = [f"replica-{i}" for i in range(n)]
        self.procs: dict[str, OperatorProcess] = {}
        api = config.new_client_from_config(config_file=kc)
        self.coord = client.CoordinationV1Api(api)

    def start(self, name: str) -> None:
        op = OperatorProcess(self.kc, self.log_dir / f"{name}.log", env={"HOSTNAME": name})
        op.start()
        self.procs[name] = op

    def start_all(self) -> None:
        for n in self.names:
            self.start(n)

    def stop_all(self) -> None:
        for op in self.procs.values():
            if op.proc is not None and op.proc.poll() is None:
                os.kill(op.proc.pid, signal.SIGCONT)  # a frozen one must be able to stop
            op.stop()

    def holder_identity(self, site: str = "site") -> str | None:
        """Who holds the site's Lease and renewed it within its duration;
        None when nobody does (or the API server cannot say)."""
        try:
            lease = self.coord.read_namespaced_lease(
                f"wattcap-site-{site}", "default", _request_timeout=TIMEOUT
            )
        except Exception:
            return None
        spec = lease.spec
        if spec is None or not spec.holder_identity or spec.renew_time is None:
            return None
        age = time.time() - spec.renew_time.timestamp()
        return (
            spec.holder_identity if age <= (spec.lease_duration_seconds or self.lease_s) else None
        )

    def holder(self) -> str | None:
        """The replica (by name) that holds the Lease now."""
        who = self.holder_identity() or ""
        return next((n for n in self.names if who.startswith(f"{n}-")), None)

    def wait_leader(self, timeout_s: float, other_than: str | None = None) -> str:
        """The replica that holds the Lease, once it is not `other_than`."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            who = self.holder()
            if who is not None and who != other_than:
                return who
            time.sleep(0.25)
        raise AssertionError(f"no replica (other than {other_than}) took the lease in {timeout_s}s")

    def kill_leader(self, timeout_s: float = 60) -> tuple[str, float]:
        """SIGKILL the leader; once another replica holds the Lease, start the
        killed one again (its pod restarting). Returns it and the takeover time."""
        leader = self.wait_leader(timeout_s)
        t0 = time.monotonic()
        self.procs[leader].kill()
        self.wait_leader(timeout_s, other_than=leader)
        took = time.monotonic() - t0
        self.start(leader)
        return leader, took

    def freeze_leader(self, extra_s: float, timeout_s: float = 60) -> tuple[str, float]:
        """SIGSTOP the leader until another replica holds the lease, and
        `extra_s` longer; then SIGCONT. Returns it and how long it was frozen."""
        leader = self.wait_leader(timeout_s)
        proc = self.procs[leader].proc
        assert proc is not None
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            self.wait_leader(timeout_s, other_than=leader)
            time.sleep(extra_s)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        return leader, time.monotonic() - t0


def restart(component: str) -> None:
    """SIGKILL a control-plane component and start it again (waits for /readyz)."""
    subprocess.run([CLUSTER, "restart", component], check=True, timeout=180)


def prometheus(extra_scrape_configs: str | None = None) -> None:
    """`hack/prometheus.sh up`, with further scrape jobs or without them."""
    env = dict(os.environ)
    env.pop("PROM_EXTRA_SCRAPE_CONFIGS", None)
    if extra_scrape_configs:
        fd, path = tempfile.mkstemp(prefix="chaos-scrape-", suffix=".yml")
        with os.fdopen(fd, "w") as fh:
            fh.write(extra_scrape_configs)
        env["PROM_EXTRA_SCRAPE_CONFIGS"] = path
    subprocess.run([PROM, "up"], check=True, env=env, timeout=120)


def prometheus_down() -> None:
    subprocess.run([PROM, "down"], check=True, timeout=60)


def scrape_job(name: str, target: str) -> str:
    return (
        f"  - job_name: {name}\n"
        "    honor_labels: true\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )


class ForeignExporter:
    """An exporter of GPUs that are not the site's: one GPU of `node` at
    `watts` (1000 W: more than any GPU can draw)."""

    def __init__(self, port: int = 9401, node: str = "foreign-node-0", watts: float = 1000.0):
        body = (
            "# TYPE DCGM_FI_DEV_POWER_USAGE gauge\n"
            f'DCGM_FI_DEV_POWER_USAGE{{gpu="0",UUID="GPU-foreign-0",Hostname="{node}",'
            f'modelName="NVIDIA H100 80GB HBM3"}} {watts}\n'
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.port = port
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ForeignExporter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Ledger:
    """What the namespace must never show, recorded by polling it in a thread.

    - a TrainingJob applied and then gone (lost);
    - two Jobs of one TrainingJob at once, or a new Job for one whose earlier
      Job was never seen suspended (only a preempted job is ever moved, by
      deleting its suspended Job and making a new one);
    - a non-preemptible job's Job suspended, or the job shown Preempted.
    """

    kc: str
    ns: str
    every_s: float = 1.0
    violations: list[str] = field(default_factory=list)
    tjs: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> last seen
    job_uids: dict[str, list[str]] = field(default_factory=dict)  # TJ uid -> Job uids, in order
    suspended: set[str] = field(default_factory=set)  # Job uids ever seen suspended
    preempted: set[str] = field(default_factory=set)  # TJ uids ever seen Preempted
    polls: int = 0
    errors: int = 0

    def __post_init__(self) -> None:
        api = config.new_client_from_config(config_file=self.kc)
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ledger", daemon=True)

    def __enter__(self) -> Ledger:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_ev.set()
        self.thread.join(30)

    def _run(self) -> None:
        while not self.stop_ev.is_set():
            try:
                self.poll()
            except Exception:  # an API server restarting: try again
                self.errors += 1
            self.stop_ev.wait(self.every_s)

    def poll(self) -> None:
        tjs = self.custom.list_namespaced_custom_object(
            "wattcap.io", "v1alpha1", self.ns, "trainingjobs", _request_timeout=TIMEOUT
        )["items"]
        jobs = self.batch.list_namespaced_job(self.ns, _request_timeout=TIMEOUT).items
        with self.lock:
            self.polls += 1
            self._record(tjs, jobs)

    def _bad(self, msg: str) -> None:
        if msg not in self.violations:
            self.violations.append(msg)

    def _record(self, tjs: list[dict[str, Any]], jobs: list[Any]) -> None:
        by_uid = {}
        for t in tjs:
            meta = t["metadata"]
            self.tjs[meta["name"]] = t
            by_uid[meta["uid"]] = t
            spec, st = t.get("spec") or {}, t.get("status") or {}
            if st.get("phase") == "Preempted":
                self.preempted.add(meta["uid"])
                if not spec.get("preemptible", False):
                    self._bad(f"non-preemptible {meta['name']} shown Preempted")
        live: dict[str, list[str]] = {}
        for j in jobs:
            owner = next((r.uid for r in j.metadata.owner_references or [] if r.controller), None)
            if owner is None:
                continue
            uid = j.metadata.uid
            if j.spec.suspend:
                self.suspended.add(uid)
            if j.metadata.deletion_timestamp is None:
                live.setdefault(owner, []).append(j.metadata.name)
            tj = by_uid.get(owner)
            name = tj["metadata"]["name"] if tj else owner
            pre = bool(((tj or {}).get("spec") or {}).get("preemptible", False))
            seen = self.job_uids.setdefault(owner, [])
            if (
                uid not in seen
                and seen
                and not (pre and (seen[-1] in self.suspended or owner in self.preempted))
            ):
                self._bad(f"{name}: Job made again (uids {[*seen, uid]}) without a preemption")
            if uid not in seen:
                seen.append(uid)
            if j.spec.suspend and tj and not pre:
                self._bad(f"non-preemptible {name}: its Job {j.metadata.name} suspended")
        for owner, names in live.items():
            if len(names) > 1:
                self._bad(f"TrainingJob {owner} has {len(names)} Jobs at once: {names}")

    def lost(self, applied: Iterable[str]) -> list[str]:
        """Applied TrainingJobs the API server no longer has (a fresh list)."""
        items = self.custom.list_namespaced_custom_object(
            "wattcap.io", "v1alpha1", self.ns, "trainingjobs", _request_timeout=TIMEOUT
        )["items"]
        return sorted(set(applied) - {t["metadata"]["name"] for t in items})

    def phases(self) -> dict[str, str]:
        with self.lock:
            return {n: (t.get("status") or {}).get("phase", "") for n, t in self.tjs.items()}

    def bad(self) -> list[str]:
        with self.lock:
            return list(self.violations)
