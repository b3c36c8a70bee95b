"""kopf wiring only: watch events wake one decision loop per site.

Per-object handlers never admit: they only wake the loops, so two handlers can
never each take the last kilowatt. Every PowerPolicy is a site with its own
loop (a kopf daemon) and its own Lease; each cycle decides on that site's
nodes and TrainingJobs only (`sites.site_view`), every control period, or
sooner when a TrainingJob's or a PowerPolicy's spec changes or an owned Job
changes.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import kopf
from kubernetes.client.rest import ApiException

from . import metrics
from .cluster import Cluster, Fence, LeaseLost
from .controller import (
    GPU,
    LABEL_TJ,
    ControllerMemory,
    Plan,
    SiteState,
    condition,
    cycle,
    next_admit_pace,
    note_write_failures,
)
from .forecast import Forecaster
from .health import LIVENESS
from .lease import SiteLease
from .model import (
    API_GROUP,
    API_VERSION,
    ManifestError,
    PowerPolicy,
    format_time,
    parse_power_policy,
    parse_time,
)
from .promaccess import PromAccess
from .sites import invalid_policy_statuses, report_site, site_view
from .telemetry import Reading, Telemetry


class Wakes:
    """One wake-up per site loop: a watch event wakes every site (each cycle
    then decides only what is its own); one loop clearing its wake-up must
    not swallow another's."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def of(self, site: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(site, threading.Event())

    def drop(self, site: str) -> None:
        with self._lock:
            self._events.pop(site, None)

    def set(self) -> None:
        with self._lock:
            for event in self._events.values():
                event.set()


WAKE = Wakes()
# a cycle's writes that can wait (new waiting jobs' first answers, refreshes of
# text) stop this long after the cycle started, after their first chunk: in a
# burst the rest go out in the next cycles, which keeps each one short (at
# 1.5 s, a 2-core control plane's burst cycles were 1.5 to 1.7 s, a few 2.1 s)
OPTIONAL_WRITES_UNTIL_S = 1.0
# a cycle longer than this logs where its time went (`_log_slow`)
SLOW_CYCLE_S = 1.0
MIN_GAP_S = 1.0  # debounce: a burst of watch events costs one cycle, not hundreds
METRICS_PORT = 0
LEASE_DURATION_S = 15
PROM_ACCESS = PromAccess()  # which Prometheus the operator may read, and how (cli flags)
log = logging.getLogger("wattcap")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    # no call may hang forever: kopf's own requests and watches time out too
    settings.networking.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.watching.connect_timeout = 10
    settings.watching.client_timeout = 330  # a little past the server's own timeout
    # server-side: only the Jobs wattcap owns stream here, not every Job in the cluster
    settings.watching.label_selectors["batch", "jobs"] = LABEL_TJ
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="wattcap.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="wattcap.io")
    metrics.serve(METRICS_PORT)


class SpecChanges:
    """Which watch events change what the loop decides on: an object seen for
    the first time, a deleted one, or a new spec (`metadata.generation`). The
    loop's own status writes leave the generation as it is, so they never wake
    it; otherwise every cycle's status patch would start the next cycle, and a
    site with a 60 s period would decide about once a second."""

    def __init__(self) -> None:
        self._seen: dict[str, Any] = {}
        self._lock = threading.Lock()

    def changed(self, event_type: str | None, body: Mapping[str, Any]) -> bool:
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        with self._lock:
            if event_type == "DELETED":
                self._seen.pop(uid, None)  # bounded by the objects that exist
                return True
            generation = meta.get("generation")
            if uid in self._seen and self._seen[uid] == generation:
                return False
            self._seen[uid] = generation
            return True


SPECS = SpecChanges()


@kopf.on.event(API_GROUP, API_VERSION, "trainingjobs")
def trainingjob_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    if SPECS.changed(type, body):
        WAKE.set()


@kopf.on.event(API_GROUP, API_VERSION, "powerpolicies")
def powerpolicy_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    """A cap lowered by hand (a demand-response event) is met now, not a period later."""
    if SPECS.changed(type, body):
        WAKE.set()


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_TJ: kopf.PRESENT})
def owned_job_event(**_: Any) -> None:
    WAKE.set()


@kopf.daemon(API_GROUP, API_VERSION, "powerpolicies", cancellation_timeout=10.0)
def site_loop(name: str, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """The admission loop for one site. Errors never admit: a cycle that fails
    does nothing more, is counted in `wattcap_errors_total` and is retried;
    whatever it raises, the loop goes on (kopf would otherwise restart it a
    minute later, and the site would go undecided meanwhile). Each completed
    cycle is reported to the liveness probe."""
    cluster = Cluster()
    site = _Site(name)
    LIVENESS.started(name, site.period)
    try:
        while not stopped:
            started = time.monotonic()
            step = ["read"]
            try:
                pause = _run_cycle(cluster, name, site, started, step)
            except Exception as err:  # everything: the loop is what keeps the site under its cap
                kind = f"http_{err.status}" if isinstance(err, ApiException) else type(err).__name__
                metrics.count_error(step[0], kind, name)
                log.warning("cycle failed at %s, nothing admitted; retrying: %r", step[0], err)
                stopped.wait(min(site.period, 5.0))
                continue
            LIVENESS.completed(name, site.period)
            collect_between_cycles()
            if pause:
                stopped.wait(pause)
                continue
            _sleep_until_due(stopped, started, site.period, site.wake)
    finally:
        LIVENESS.stopped(name)
        WAKE.drop(name)
        metrics.forget_site(name)
        if site.lease is not None:
            site.lease.release()


# the collector's generation thresholds while the site loops run: 10x Python's default
# for the oldest generation, so that a cycle (about 100,000 new objects on a site of
# 5,000 TrainingJobs, bench/bench_cycle.py) runs no full collection of its own
COLLECTOR_THRESHOLDS = (700, 10, 100)
_COLLECTING = threading.Lock()


def collect_between_cycles() -> None:
    """Run Python's full garbage collection now, between cycles, not inside the next one.

    A full (oldest-generation) collection walks every object the process holds: the
    cluster picture, the caches, kopf. With Python's defaults one started whenever a
    cycle had allocated enough, 60 to 120 ms on a big site, landing in whichever step
    allocated: most of the cycle's p95 (bench/bench_cycle.py). So each loop collects
    everything once after its cycle (in the time it sleeps anyway), then freezes what
    survived (`gc.freeze`): the collections the next cycle triggers walk only what it
    allocated. Freezing is undone first here, every time, so garbage that was frozen
    (a cycle of objects dropped since) is freed by the next call: memory stays bounded
    by what is alive (tests/unit/test_collector.py). The raised threshold keeps a
    cycle's own allocations from starting a full collection; should no loop call this
    again, full collections still run on their own, about every 700,000 new objects."""
    with _COLLECTING:
        gc.set_threshold(*COLLECTOR_THRESHOLDS)
        gc.unfreeze()
        gc.collect()
        gc.freeze()


class _Site:
    """What one site loop keeps between cycles."""

    def __init__(self, name: str) -> None:
        self.wake = WAKE.of(name)
        self.mem: ControllerMemory | None = None
        self.telemetry: Telemetry | None = None
        self.lease: SiteLease | None = None
        self.period = 15.0


def _run_cycle(cluster: Cluster, name: str, site: _Site, started: float, step: list[str]) -> float:
    """One cycle, in steps (`step[0]` names the one running, for the error metric).
    Returns how long to pause instead of the usual period (0: none)."""
    policies = cluster.list_policies()
    body = next((p for p in policies if p["metadata"]["name"] == name), None)
    if body is None:
        return 5.0  # deleted: kopf stops this daemon
    try:
        policy = parse_power_policy(body)
    except ManifestError as err:
        _set_active(cluster, name, "InvalidPolicy", f"{err}; nothing is admitted until it is fixed")
        step[0] = "invalid_policy"
        _report_invalid(cluster, name, site, policies, str(err))
        return 10.0
    site.period = policy.control_period_s
    if site.lease is None:
        site.lease = SiteLease(
            cluster.coordination,
            name,
            duration_s=LEASE_DURATION_S,
            request_timeout_s=cluster.timeout[1],
        )
    step[0] = "lease"
    if not site.lease.holds():
        return site.period  # a standby replica: another one decides this site
    if site.mem is None:
        site.mem = ControllerMemory(
            Forecaster(policy.gpu_tdp_watts, policy.gpu_idle_watts, policy.coverage)
        )
    mem = site.mem
    site.wake.clear()
    read_at = time.monotonic()  # after a renewal: the writes below are fenced from here
    # the whole cluster's picture, then this site's part of it
    view = site_view(cluster.read_site(replace(policy, node_selector={})), policies, policy)
    state = view.state
    metrics.PROMETHEUS_CONFIGURED.labels(name).set(1 if policy.prometheus_url else 0)
    if policy.prometheus_url:
        step[0] = "telemetry"
        if site.telemetry is None or site.telemetry.url != policy.prometheus_url:
            site.telemetry = Telemetry(policy.prometheus_url, access=PROM_ACCESS)
        state.reading = _read_power(site.telemetry, policy, state, name)
    step[0] = "lease"
    if not site.lease.holds():  # renewed between read and decision: a big site's cycle
        return site.period  # may outlast half a lease and still write (lease.py)
    step[0] = "decide"
    now = time.time()
    read_s = time.monotonic() - started
    plan = cycle(state, mem, now)
    for where, kind in plan.errors:
        metrics.count_error(where, kind, name)
    now_iso = format_time(now)
    plan.policy_status["conditions"].append(
        condition(
            "Active",
            "True",
            "Governing",
            f"governs {len(state.nodes)} nodes; decided by {site.lease.identity}",
            now_iso,
        )
    )
    state = report_site(plan, view, now_iso)
    step[0] = "write"
    if not site.lease.fresh(read_at):
        # paused past half a lease since the read: another replica may be deciding now
        metrics.count_error("write", "lease_lost", name)
        metrics.CYCLE_SECONDS.labels(name).observe(time.monotonic() - started)  # still counts
        log.warning("lease lost or cycle too slow; this cycle's writes are dropped")
        return 0.0
    lease = site.lease

    def fence() -> bool:  # checked between chunks of writes (lease.py)
        return lease.fresh(read_at)

    decided = time.monotonic()
    try:
        failures = cluster.apply_jobs(plan, fence)
        for f in failures:
            metrics.count_error("write", f"http_{f.code}" if f.code else f.reason, name)
        note_write_failures(plan, mem, failures, now)
        for _ in range(cluster.apply_pod_limits(plan, fence)):
            metrics.count_error("write", "pod_limit", name)
        jobs_done = time.monotonic()
        _apply_status(cluster, plan, state, name, fence, started + OPTIONAL_WRITES_UNTIL_S)
    except LeaseLost as err:
        # what went out was written under the Lease; a Job created without its
        # status is adopted by whichever replica decides next
        metrics.count_error("write", "lease_lost", name)
        metrics.CYCLE_SECONDS.labels(name).observe(time.monotonic() - started)
        log.warning("lease lost during this cycle's writes; the rest are dropped: %s", err)
        return 0.0
    mem.cycle_s = time.monotonic() - started
    _learn_pace(mem, plan, cluster, started + mem.cycle_s - decided, name)
    if mem.cycle_s > SLOW_CYCLE_S:
        _log_slow(plan, cluster, mem.cycle_s, read_s, decided - started, jobs_done - decided)
    if plan.decision is not None:
        _record(plan, state, mem, now, mem.cycle_s, name)
    # admissions paced to the next cycle, or new jobs still owed their first answer:
    # the next cycle comes soon, not a period later (its own writes wake nobody)
    return MIN_GAP_S if plan.paced or cluster.status_writes.firsts_deferred else 0.0


def _writes(plan: Plan, cluster: Cluster) -> int:
    """The cycle's writes to the API server: Jobs, statuses and Events."""
    jobs = len(plan.create_jobs) + len(plan.resume_jobs) + len(plan.delete_jobs)
    return jobs + sum(cluster.status_sent) + len(plan.events) + (1 if plan.policy_status else 0)


def _learn_pace(
    mem: ControllerMemory, plan: Plan, cluster: Cluster, write_s: float, site: str
) -> None:
    """Set the next cycle's admission pace from how fast this cycle's writes went."""
    mem.admit_pace = next_admit_pace(mem.admit_pace, _writes(plan, cluster), write_s)
    metrics.ADMIT_PACE.labels(site).set(mem.admit_pace)


def _log_slow(
    plan: Plan,
    cluster: Cluster,
    total_s: float,
    read_s: float,
    until_decided_s: float,
    jobs_s: float,
) -> None:
    """Where a slow cycle's time went, so an operator can tell a slow API server
    (reads, writes) from a big site (the decision) without a profiler."""
    must, could_wait = cluster.status_sent
    log.info(
        "cycle took %.2f s: read %.2f s, decide %.2f s, Jobs %.2f s (%d created, %d resumed, "
        "%d deleted, %d paced), statuses and Events %.2f s (%d of substance, %d that could "
        "wait, %d Events)",
        total_s,
        read_s,
        until_decided_s - read_s,
        jobs_s,
        len(plan.create_jobs),
        len(plan.resume_jobs),
        len(plan.delete_jobs),
        plan.paced,
        total_s - until_decided_s - jobs_s,
        must,
        could_wait,
        len(plan.events),
    )


def _report_invalid(
    cluster: Cluster, name: str, site: _Site, policies: list[dict[str, Any]], why: str
) -> None:
    """Tell the jobs of a site whose PowerPolicy the operator refuses why they
    wait (the Lease holder only, as for every job write)."""
    if site.lease is None:
        site.lease = SiteLease(
            cluster.coordination, name, duration_s=LEASE_DURATION_S,
            request_timeout_s=cluster.timeout[1],
        )  # fmt: skip
    if not site.lease.holds():
        return
    state = cluster.read_site(PowerPolicy(cap_watts=1.0, name=name))  # every node, every job
    now_iso = format_time(time.time())
    plan = Plan(tj_status=invalid_policy_statuses(state, policies, name, why, now_iso))
    _apply_status(cluster, plan, state, name)


def _apply_status(
    cluster: Cluster,
    plan: Plan,
    state: SiteState,
    site: str,
    fence: Fence | None = None,
    until: float | None = None,
) -> None:
    """Write the cycle's statuses (those that can wait until `until`, monotonic);
    count the refused ones, and report the due refreshes and first answers the
    cycle left for later (a share too small for the site, or a burst of new
    jobs being answered)."""
    for _ in range(cluster.apply_status(plan, state, site, fence, until)):
        metrics.count_error("status", "refused", site)
    metrics.STATUS_DEFERRED.labels(site).set(cluster.status_writes.deferred)
    metrics.STATUS_FIRSTS_DEFERRED.labels(site).set(cluster.status_writes.firsts_deferred)


def _set_active(cluster: Cluster, name: str, reason: str, message: str) -> None:
    """Say on the PowerPolicy why it is not governing this cycle."""
    cond = condition("Active", "False", reason, message, format_time(time.time()))
    cluster.patch_policy_status(name, {"conditions": [cond]})


def _read_power(telemetry: Telemetry, policy: PowerPolicy, state: SiteState, site: str) -> Reading:
    """Measured power of the site's GPU nodes; never raises."""
    gpus: dict[str, int] = {}
    for n in state.nodes:
        count = _int(((n.get("status") or {}).get("allocatable") or {}).get(GPU, 0))
        if count > 0:
            gpus[n["metadata"]["name"]] = count
    reading = telemetry.read(policy, gpus)
    metrics.PROMETHEUS_UP.labels(site).set(1 if reading.ok else 0)
    return reading


def _int(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _record(
    plan: Plan, state: SiteState, mem: ControllerMemory, now: float, seconds: float, site: str
) -> None:
    dec = plan.decision
    assert dec is not None
    metrics.record_cycle(dec, int(plan.policy_status.get("runningJobs", 0)), seconds, site)
    metrics.record_outlook(plan.policy_status, site)
    for workload_class, measured, forecast in mem.finished:  # oldest first: the last one stays
        metrics.record_forecast_error(workload_class, measured, forecast, site)
    mem.finished.clear()
    metrics.FORECAST_HISTORIES.labels(site).set(mem.forecaster.histories())
    metrics.FORECAST_EVICTED.labels(site).inc(mem.forecaster.take_evicted())
    created = {
        (t["metadata"].get("namespace", "default"), t["metadata"]["name"]): t["metadata"].get(
            "creationTimestamp"
        )
        for t in state.trainingjobs
    }
    for a in dec.admits:
        ns, _, nm = a.key.partition("/")
        stamp = created.get((ns, nm))
        if stamp:
            metrics.ADMISSION_LATENCY.labels(site).observe(
                max(0.0, now - parse_time(stamp, "created"))
            )


def _sleep_until_due(
    stopped: kopf.DaemonStopped, started: float, period: float, wake: threading.Event
) -> None:
    """Wait for the next period, or a wake-up, but never less than the debounce gap."""
    while not stopped:
        elapsed = time.monotonic() - started
        if elapsed >= period or (wake.is_set() and elapsed >= MIN_GAP_S):
            return
        stopped.wait(min(0.2, period - elapsed))
