"""`wattcap history export`: the site's finished TrainingJobs as a trace.

Platform teams tune a policy on their own history (`wattcap tune`), so the
export writes the simulator's trace format (shared/traces/FORMAT.md): when
each job was submitted, how long it ran, its size, class and priority, and
the power its GPUs drew. The power is read from Prometheus, per job, as the
mean of `DCGM_FI_DEV_POWER_USAGE` over its pods' GPUs across its run: the
meter's word, never a figure in the TrainingJob's status, which is a report
and not evidence.

A job Prometheus has no samples for (retention shorter than `--since`, or
its pods were never scraped) is left out and counted, so a trace never holds
a made-up power.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from .model import ManifestError, format_time, parse_duration, parse_time, parse_training_job
from .priorities import reported_priority
from .sim.trace import OPTIONAL_COLUMNS, REQUIRED_COLUMNS
from .telemetry import GPU_POWER_METRIC

COLUMNS = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)

# (namespace, Job name, start, end) -> mean per-GPU watts, or None when unmeasured
PowerLookup = Callable[[str, str, float, float], float | None]


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
            }
        )
    return rows, missing


def write_trace(rows: Iterable[Mapping[str, Any]], out: IO[str]) -> None:
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)


def prometheus_power(prom: Any) -> PowerLookup:
    """Mean per-GPU power of a Job's pods over its run, from Prometheus.

    The subquery averages every scraped GPU of the Job's pods (pod names are
    the Job's name plus a suffix) at each step of the run; the export takes
    the mean of those steps. Runs shorter than a step read as unmeasured.
    """

    def lookup(namespace: str, job_name: str, start_s: float, end_s: float) -> float | None:
        span = max(1, int(end_s - start_s))
        step = max(1, span // 120)
        selector = f'{GPU_POWER_METRIC}{{namespace="{namespace}",pod=~"{job_name}-.*"}}'
        query = f"avg_over_time(avg({selector})[{span}s:{step}s])"
        result = prom.custom_query(query, params={"time": end_s})
        if not result:
            return None
        try:
            value = float(result[0]["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            return None
        return value if value == value else None  # NaN: no samples in the window

    return lookup


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
    if not url:
        policies = custom.list_cluster_custom_object(API_GROUP, API_VERSION, "powerpolicies")
        urls = [
            ((p.get("spec") or {}).get("prometheus") or {}).get("url")
            for p in policies.get("items", [])
        ]
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
    rows, missing = trace_rows(jobs, prometheus_power(prom))
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
