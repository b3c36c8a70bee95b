"""`wattcap history export`: the site's finished TrainingJobs as a trace.

Platform teams tune a policy on their own history (`wattcap tune`), so the
export writes the simulator's trace format (shared/traces/FORMAT.md): when
each job was submitted, how long it ran, its size, class and priority, and
the power its GPUs drew. The power is read from Prometheus, per job: the
mean of `DCGM_FI_DEV_POWER_USAGE` over its pods' GPUs at each step of its
run, and of those steps the ones at work (`forecast.steady_samples`, the rule
the operator learns a class by): not the pod's idle wait before its work,
its ramp, or its idle tail after, which would make the trace, and the policy
tuned on it, plan the class low. The meter's word, never a figure in the
TrainingJob's status, which is a report and not evidence.

A job Prometheus has no samples for (retention shorter than `--since`, or
its pods were never scraped) is left out and counted, so a trace never holds
a made-up power.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from .forecast import WARMUP_S, steady_samples
from .model import (
    DEFAULTS,
    ManifestError,
    PowerPolicy,
    format_time,
    parse_duration,
    parse_power_policy,
    parse_time,
    parse_training_job,
)
from .priorities import reported_priority
from .sim.trace import OPTIONAL_COLUMNS, REQUIRED_COLUMNS
from .telemetry import GPU_POWER_METRIC

COLUMNS = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)

# (namespace, Job name, start, end) -> mean per-GPU watts, or None when unmeasured
PowerLookup = Callable[[str, str, float, float], float | None]
# Steps a job's run is read at, at most (one a second for runs up to this long):
# fine enough that the warm-up the steady rule drops is a few steps, not one.
MAX_STEPS = 1000


@dataclass(frozen=True, slots=True)
class Finished:
    """A TrainingJob that succeeded, with what the trace needs of it."""

    namespace: str
    name: str
    job_name: str
    submitted_s: float
    started_s: float
    finished_s: float
    replicas: int
    gpus_per_replica: int
    workload_class: str
    priority: int
    preemptible: bool
    expected_duration_s: float | None
    gpu_watts_hint: float | None = None  # its spec.gpuWattsHint: the simulator checks it too


def finished_jobs(trainingjobs: Iterable[Mapping[str, Any]], since_s: float) -> list[Finished]:
    """Succeeded TrainingJobs that finished at or after `since_s`, oldest first.

    A job whose spec no longer parses, or whose status lacks its start or
    end, cannot be replayed faithfully and is left out.
    """
    out = []
    for tj in trainingjobs:
        status = tj.get("status") or {}
        if status.get("phase") != "Succeeded":
            continue
        try:
            spec = parse_training_job(tj)
            submitted = parse_time(tj["metadata"]["creationTimestamp"], "creationTimestamp")
            started = parse_time(status.get("startedAt"), "status.startedAt")
            finished = parse_time(status.get("finishedAt"), "status.finishedAt")
        except (ManifestError, KeyError):
            continue
        if finished < since_s or finished <= started:
            continue
        out.append(
            Finished(
                spec.namespace,
                spec.name,
                str(status.get("jobName") or spec.name),
                submitted,
                started,
                finished,
                spec.replicas,
                spec.gpus_per_replica,
                spec.workload_class,
                reported_priority(status, spec.priority),
                spec.preemptible,
                spec.expected_duration_s,
                spec.gpu_watts_hint,
            )
        )
    out.sort(key=lambda f: (f.submitted_s, f.namespace, f.name))
    return out


def trace_rows(jobs: Iterable[Finished], power: PowerLookup) -> tuple[list[dict[str, Any]], int]:
    """Trace rows (second 0 = the first submission) and how many jobs had no
    measured power and were left out."""
    rows: list[dict[str, Any]] = []
    missing = 0
    t0: float | None = None
    for f in jobs:
        t0 = f.submitted_s if t0 is None else t0
        watts = power(f.namespace, f.job_name, f.started_s, f.finished_s)
        if watts is None:
            missing += 1
            continue
        rows.append(
            {
                "job_id": f"{f.namespace}/{f.name}",
                "submit_s": round(f.submitted_s - t0, 3),
                "duration_s": round(f.finished_s - f.started_s, 3),
                "replicas": f.replicas,
                "gpus_per_replica": f.gpus_per_replica,
                "workload_class": f.workload_class,
                "priority": f.priority,
                "gpu_watts": round(watts, 1),
                "user": f.namespace,
                "preemptible": int(f.preemptible),
                "est_duration_s": ""
                if f.expected_duration_s is None
                else round(f.expected_duration_s, 3),
                "gpu_watts_hint": "" if f.gpu_watts_hint is None else f.gpu_watts_hint,
            }
        )
    return rows, missing


def write_trace(rows: Iterable[Mapping[str, Any]], out: IO[str]) -> None:
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)


def steady_watts(
    series: Sequence[tuple[float, float]], idle_watts: float, tdp_watts: float
) -> float | None:
    """A job's per-GPU draw at work from its (time, mean per-GPU watts) steps,
    oldest first: the mean of `forecast.steady_samples`. None for no steps."""
    steady = steady_samples(
        [(t, v) for t, v in series if math.isfinite(v)], idle_watts, tdp_watts, WARMUP_S
    )
    return sum(steady) / len(steady) if steady else None


def prometheus_power(
    prom: Any,
    idle_watts: float = DEFAULTS.gpu_idle_watts,
    tdp_watts: float = DEFAULTS.gpu_tdp_watts,
) -> PowerLookup:
    """Per-GPU power of a Job's pods at work over its run, from Prometheus.

    A range query averages every scraped GPU of the Job's pods (pod names are
    the Job's name plus a suffix) at each step of the run (a second, or the
    run over `MAX_STEPS`); `steady_watts` keeps the steps at work, which
    needs the GPU's idle power and TDP (the PowerPolicy's). A run with no
    step measured reads as unmeasured (None).
    """

    def lookup(namespace: str, job_name: str, start_s: float, end_s: float) -> float | None:
        span = max(1, int(end_s - start_s))
        step = max(1, span // MAX_STEPS)
        selector = f'{GPU_POWER_METRIC}{{namespace="{namespace}",pod=~"{job_name}-.*"}}'
        result = prom.custom_query_range(
            f"avg({selector})",
            start_time=datetime.fromtimestamp(start_s, UTC),
            end_time=datetime.fromtimestamp(end_s, UTC),
            step=f"{step}s",
        )
        if not result:
            return None
        try:
            series = [(float(t), float(v)) for t, v in result[0]["values"]]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
        return steady_watts(series, idle_watts, tdp_watts)

    return lookup


def site_gpu_power(policies: Iterable[Mapping[str, Any]], url: str | None) -> tuple[float, float]:
    """(idle, TDP) per GPU of the PowerPolicy that names Prometheus at `url`,
    else of the first that parses, else the model's defaults: the export
    separates a job's work from its idle wait by them as the operator does."""
    parsed: list[PowerPolicy] = []
    for p in policies:
        try:
            parsed.append(parse_power_policy(p))
        except (ManifestError, KeyError, TypeError):
            continue
    mine = [p for p in parsed if url and p.prometheus_url == url]
    pick = (mine or parsed or [DEFAULTS])[0]
    return pick.gpu_idle_watts, pick.gpu_tdp_watts


def since_seconds(value: str) -> float:
    """`--since` as seconds: a Go-style duration, or whole days (`7d`), which
    is how far back people think of a site's history."""
    text = value.strip()
    if text.endswith("d") and text[:-1].isdigit():
        return int(text[:-1]) * 86400.0
    return parse_duration(text, "--since")


def export_command(args: Any) -> int:
    """List TrainingJobs, read their power, write the trace; one line of errors."""
    import time

    import requests
    from kubernetes import client, config
    from prometheus_api_client import PrometheusApiClientException

    from .model import API_GROUP, API_VERSION
    from .promaccess import PromAccess

    try:
        since_s = time.time() - since_seconds(args.since)
    except ManifestError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config.load_kube_config(config_file=args.kubeconfig, context=args.context)
    custom = client.CustomObjectsApi()
    url = args.prometheus
    try:
        policies = custom.list_cluster_custom_object(API_GROUP, API_VERSION, "powerpolicies")
        items = policies.get("items", [])
    except client.ApiException as e:
        if not url:
            raise
        items = []  # --prometheus given: a reader not allowed PowerPolicies still exports
        if args.gpu_idle_watts is None or args.gpu_tdp_watts is None:
            print(
                f"warning: cannot list PowerPolicies ({e.status} {e.reason}); unless given,"
                f" a GPU's idle power is taken as {DEFAULTS.gpu_idle_watts:g} W and its TDP"
                f" as {DEFAULTS.gpu_tdp_watts:g} W (--gpu-idle-watts, --gpu-tdp-watts)",
                file=sys.stderr,
            )
    if not url:
        urls = [((p.get("spec") or {}).get("prometheus") or {}).get("url") for p in items]
        url = next((u for u in urls if u), None)
    if not url:
        print("error: no --prometheus URL and no PowerPolicy names one", file=sys.stderr)
        return 2
    tjs = custom.list_cluster_custom_object(API_GROUP, API_VERSION, "trainingjobs")
    jobs = finished_jobs(tjs.get("items", []), since_s)
    access = PromAccess(ca_file=args.prometheus_ca_file, token_file=args.prometheus_token_file)
    prom = access.connect(url, 10)
    try:
        prom.custom_query("vector(1)")  # unreachable or untrusted: say so, not an empty trace
    except (requests.RequestException, PrometheusApiClientException) as e:
        print(f"error: cannot read Prometheus at {url}: {e}", file=sys.stderr)
        return 1
    idle, tdp = site_gpu_power(items, url)
    idle = idle if args.gpu_idle_watts is None else args.gpu_idle_watts
    tdp = tdp if args.gpu_tdp_watts is None else args.gpu_tdp_watts
    rows, missing = trace_rows(jobs, prometheus_power(prom, idle, tdp))
    if args.out:
        with open(args.out, "w", encoding="utf-8", newline="") as fh:
            write_trace(rows, fh)
    else:
        write_trace(rows, sys.stdout)
    first = jobs[0].submitted_s if jobs else None
    print(
        f"exported {len(rows)} finished jobs"
        + (f"; {missing} left out with no measured power in Prometheus" if missing else "")
        + (f"; trace second 0 is {format_time(first)} (pass it as --start)" if first else ""),
        file=sys.stderr,
    )
    return 0
