"""kopf wiring only: watch events wake one decision loop per site.

Per-object handlers never admit: they only wake the loop, so two handlers can
never each take the last kilowatt. The loop is a daemon on the governing
PowerPolicy (the oldest, if there are several) and runs a cycle every control
period, or sooner when a TrainingJob or an owned Job changes.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import kopf
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from . import metrics
from .cluster import Cluster
from .controller import (
    GPU,
    LABEL_TJ,
    ControllerMemory,
    Plan,
    SiteState,
    condition,
    cycle,
)
from .forecast import Forecaster
from .model import (
    API_GROUP,
    API_VERSION,
    ManifestError,
    PowerPolicy,
    format_time,
    parse_power_policy,
    parse_time,
)
from .telemetry import Reading, Telemetry

WAKE = threading.Event()
MIN_GAP_S = 1.0  # debounce: a burst of watch events costs one cycle, not hundreds
METRICS_PORT = 0
log = logging.getLogger("wattcap")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="wattcap.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="wattcap.io")
    metrics.serve(METRICS_PORT)


@kopf.on.event(API_GROUP, API_VERSION, "trainingjobs")
def trainingjob_event(**_: Any) -> None:
    WAKE.set()


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_TJ: kopf.PRESENT})
def owned_job_event(**_: Any) -> None:
    WAKE.set()


def _governing(cluster: Cluster) -> str | None:
    items = cluster.list_policies()
    items.sort(key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]))
    return items[0]["metadata"]["name"] if items else None


@kopf.daemon(API_GROUP, API_VERSION, "powerpolicies", cancellation_timeout=10.0)
def site_loop(name: str, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """The admission loop for one site. Errors never admit: a cycle that cannot
    read the cluster does nothing and is retried."""
    cluster = Cluster()
    mem: ControllerMemory | None = None
    telemetry: Telemetry | None = None
    period = 15.0
    while not stopped:
        started = time.monotonic()
        try:
            if _governing(cluster) != name:
                _set_active(
                    cluster,
                    name,
                    "AnotherPolicyGoverns",
                    "the oldest PowerPolicy governs; this one waits",
                )
                stopped.wait(30)
                continue
            body = cluster.custom.get_cluster_custom_object(
                API_GROUP, API_VERSION, "powerpolicies", name
            )
            try:
                policy = parse_power_policy(body)
            except ManifestError as err:
                _set_active(
                    cluster, name, "InvalidPolicy", f"{err}; nothing is admitted until it is fixed"
                )
                stopped.wait(10)
                continue
            period = policy.control_period_s
            if mem is None:
                mem = ControllerMemory(
                    Forecaster(policy.gpu_tdp_watts, policy.gpu_idle_watts, policy.coverage)
                )
            WAKE.clear()
            state = cluster.read_site(policy)
            if policy.prometheus_url:
                if telemetry is None or telemetry.url != policy.prometheus_url:
                    telemetry = Telemetry(policy.prometheus_url)
                state.reading = _read_power(telemetry, policy, state)
            now = time.time()
            plan = cycle(state, mem, now)
            plan.policy_status["conditions"].append(
                condition(
                    "Active",
                    "True",
                    "Governing",
                    f"governs {len(state.nodes)} nodes",
                    format_time(now),
                )
            )
            cluster.apply(plan, state, name)
            if plan.decision is not None:
                _record(plan, state, mem, now, time.monotonic() - started)
        except (ApiException, HTTPError, OSError) as err:
            log.warning("cycle failed, nothing admitted; retrying: %s", err)
            stopped.wait(min(period, 5.0))
            continue
        _sleep_until_due(stopped, started, period)


def _set_active(cluster: Cluster, name: str, reason: str, message: str) -> None:
    """Say on the PowerPolicy why it is not governing this cycle."""
    cond = condition("Active", "False", reason, message, format_time(time.time()))
    cluster.patch_policy_status(name, {"conditions": [cond]})


def _read_power(telemetry: Telemetry, policy: PowerPolicy, state: SiteState) -> Reading:
    """Measured power of the site's GPU nodes; never raises."""
    names, gpus = [], 0
    for n in state.nodes:
        count = int(str(((n.get("status") or {}).get("allocatable") or {}).get(GPU, 0)) or 0)
        if count > 0:
            names.append(n["metadata"]["name"])
            gpus += count
    reading = telemetry.read(policy, names, gpus)
    metrics.PROMETHEUS_UP.set(1 if reading.ok else 0)
    return reading


def _record(
    plan: Plan, state: SiteState, mem: ControllerMemory, now: float, seconds: float
) -> None:
    dec = plan.decision
    assert dec is not None
    metrics.record_cycle(dec, int(plan.policy_status.get("runningJobs", 0)), seconds)
    metrics.record_outlook(plan.policy_status)
    while mem.finished:
        workload_class, measured, forecast = mem.finished.pop()
        metrics.FORECAST_ERROR.labels(workload_class).set((measured - forecast) / forecast)
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
            metrics.ADMISSION_LATENCY.observe(max(0.0, now - parse_time(stamp, "created")))


def _sleep_until_due(stopped: kopf.DaemonStopped, started: float, period: float) -> None:
    """Wait for the next period, or a wake-up, but never less than the debounce gap."""
    while not stopped:
        elapsed = time.monotonic() - started
        if elapsed >= period or (WAKE.is_set() and elapsed >= MIN_GAP_S):
            return
        stopped.wait(min(0.2, period - elapsed))
