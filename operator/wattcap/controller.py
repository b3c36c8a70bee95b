"""One operator cycle as a pure function: cluster objects in, a plan of writes out.

The cluster is the only state: a batch Job owned by a TrainingJob means the
job was admitted (suspended: preempted), and its `wattcap.io/placement`
annotation says where. Status fields are a report for users, never an input
the cycle relies on, so an operator killed between two writes rebuilds the
same picture on restart and never admits a job twice.

Kubernetes I/O lives in `cluster.py`; this module only reads plain dicts (the
API's JSON) and returns what to write, so it is tested without a cluster.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .admission import (
    PREEMPT_MEASURED,
    UNSCHEDULABLE,
    Decision,
    NodeState,
    QueuedJob,
    RunningJob,
    Snapshot,
    decide,
    fmt_watts,
    over_cap_since,
)
from .forecast import Forecaster, PowerForecast
from .model import (
    API,
    ManifestError,
    PowerPolicy,
    TrainingJobSpec,
    format_time,
    parse_time,
    parse_training_job,
)
from .telemetry import Reading

GPU = "nvidia.com/gpu"
LABEL_TJ = "wattcap.io/trainingjob"
ANN_PLACEMENT = "wattcap.io/placement"
ANN_FORECAST = "wattcap.io/forecast"

QUEUED, ADMITTED, RUNNING = "Queued", "Admitted", "Running"
SUCCEEDED, FAILED, PREEMPTED = "Succeeded", "Failed", "Preempted"
TERMINAL = (SUCCEEDED, FAILED)


@dataclass(slots=True)
class SiteState:
    """What one cycle reads from the cluster (API JSON as dicts)."""

    policy: PowerPolicy
    nodes: list[dict[str, Any]]
    pods: list[dict[str, Any]]  # non-terminal pods bound to nodes
    trainingjobs: list[dict[str, Any]]
    jobs: dict[tuple[str, str], dict[str, Any]]  # (namespace, TrainingJob name) -> owned Job
    reading: Reading | None = None  # None: no Prometheus configured


WARMUP_S = 30.0  # a job's first half minute (ramp-up) says little about its steady draw
MAX_SAMPLES = 720


@dataclass(slots=True)
class Plan:
    """The writes one cycle wants, in the order they are safe to apply."""

    create_jobs: list[dict[str, Any]] = field(default_factory=list)
    resume_jobs: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    suspend_jobs: list[tuple[str, str]] = field(default_factory=list)
    tj_status: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    policy_status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[dict[str, Any], str, str, str]] = field(default_factory=list)
    decision: Decision | None = None


@dataclass(slots=True)
class ControllerMemory:
    """What the operator keeps between cycles; all of it can be lost safely."""

    forecaster: Forecaster
    over_cap_since_s: float | None = None
    observed: set[str] = field(default_factory=set)  # uids of finished jobs already learned
    # per TrainingJob: (time, mean per-GPU watts) from each good reading
    samples: dict[tuple[str, str], list[tuple[float, float]]] = field(default_factory=dict)
    believed: dict[tuple[str, str], float] = field(default_factory=dict)
    finished: list[tuple[str, float, float]] = field(default_factory=list)  # class, measured, fc
    measuring: bool | None = None  # last cycle's reading was good (None: not configured)


def job_name(tj_name: str) -> str:
    """Deterministic, valid batch Job name for a TrainingJob (63-char label limit)."""
    if len(tj_name) <= 52:
        return tj_name
    digest = hashlib.sha256(tj_name.encode()).hexdigest()[:10]
    return f"{tj_name[:41]}-{digest}"


def _ts(obj: Mapping[str, Any], *path: str) -> float | None:
    cur: Any = obj
    for p in path:
        if not isinstance(cur, Mapping) or p not in cur:
            return None
        cur = cur[p]
    if not cur:
        return None
    try:
        return parse_time(cur, ".".join(path))
    except ManifestError:
        return None


def _quantity_int(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _job_condition(job: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def node_states(state: SiteState, held: Mapping[str, int]) -> list[NodeState]:
    """GPU nodes of the site with what is free: allocatable less bound pods less
    GPUs held by admitted wattcap jobs (whose pods may not be bound yet)."""
    used: dict[str, int] = {}
    for pod in state.pods:
        if LABEL_TJ in ((pod.get("metadata") or {}).get("labels") or {}):
            continue  # counted through its TrainingJob's placement
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            continue
        for c in (pod.get("spec") or {}).get("containers") or []:
            req = ((c.get("resources") or {}).get("requests") or {}).get(GPU)
            used[node] = used.get(node, 0) + _quantity_int(req or 0)
    out = []
    for node in state.nodes:
        name = node["metadata"]["name"]
        total = _quantity_int(((node.get("status") or {}).get("allocatable") or {}).get(GPU, 0))
        if total <= 0:
            continue
        schedulable = not (node.get("spec") or {}).get("unschedulable") and _ready(node)
        free = total - used.get(name, 0) - held.get(name, 0)
        out.append(NodeState(name, total, max(0, free) if schedulable else 0))
    return out


def _ready(node: Mapping[str, Any]) -> bool:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def _forecast_status(fc: PowerForecast, gpus: int, duration_s: float) -> dict[str, Any]:
    job_w = fc.gpu_watts * gpus
    return {
        "gpuWatts": round(fc.gpu_watts, 1),
        "jobWatts": round(job_w, 1),
        "kilowatts": f"{job_w / 1000:.1f}",
        "quantile": round(fc.quantile, 4),
        "source": fc.source,
        "durationSeconds": int(duration_s),
    }


def _stored_forecast(job: Mapping[str, Any]) -> dict[str, Any]:
    raw = ((job.get("metadata") or {}).get("annotations") or {}).get(ANN_FORECAST)
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}


def _placement(job: Mapping[str, Any]) -> tuple[str, ...]:
    raw = ((job.get("metadata") or {}).get("annotations") or {}).get(ANN_PLACEMENT)
    try:
        nodes = json.loads(raw) if raw else []
    except ValueError:
        nodes = []
    return tuple(str(n) for n in nodes)


def cycle(state: SiteState, mem: ControllerMemory, now_s: float) -> Plan:
    """Decide one cycle and turn the decision into writes."""
    pol = state.policy
    plan = Plan()
    specs: dict[tuple[str, str], TrainingJobSpec] = {}
    running: list[RunningJob] = []
    queued: list[QueuedJob] = []
    held: dict[str, int] = {}
    forecasts: dict[tuple[str, str], tuple[PowerForecast, float]] = {}
    by_ref: dict[tuple[str, str], dict[str, Any]] = {}
    now_iso = format_time(now_s)

    reading = state.reading
    measuring = reading is not None and reading.ok
    if measuring:
        _sample(state, mem, now_s)

    for tj in state.trainingjobs:
        meta = tj["metadata"]
        ref = (meta.get("namespace", "default"), meta["name"])
        if meta.get("deletionTimestamp") and ref not in state.jobs:
            continue  # leaving: never admit it (its Job, if any, still holds power)
        by_ref[ref] = tj
        status = tj.get("status") or {}
        try:
            spec = parse_training_job(tj)
        except ManifestError as err:
            plan.tj_status[ref] = {
                "phase": FAILED,
                "reason": "InvalidSpec",
                "message": str(err),
                "conditions": [condition("Admitted", "False", "InvalidSpec", str(err), now_iso)],
            }
            continue
        specs[ref] = spec
        job = state.jobs.get(ref)
        if job is None and status.get("phase") in TERMINAL:
            _learn(mem, tj, spec, status.get("measuredWatts"), None)
            continue
        suspended = job is not None and bool((job.get("spec") or {}).get("suspend"))
        if suspended and int(((job or {}).get("status") or {}).get("active") or 0) > 0:
            # Preempted, pods still stopping: their power and GPUs are not free
            # until they are gone, and the job cannot start again before then.
            assert job is not None
            nodes = _placement(job)
            w = mem.believed.get(
                ref, float(_stored_forecast(job).get("gpuWatts", pol.gpu_tdp_watts))
            )
            running.append(
                RunningJob(
                    f"{ref[0]}/{ref[1]}",
                    spec.replicas,
                    spec.gpus_per_replica,
                    w,
                    spec.priority,
                    False,
                    now_s,
                    now_s + pol.control_period_s,
                    nodes,
                    None,
                    w,
                )
            )
            for n in nodes:
                held[n] = held.get(n, 0) + spec.gpus_per_replica
            continue
        if job is not None and not suspended:
            done = _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet")
            failed = _job_condition(job, "Failed")
            if done or failed:
                plan.tj_status[ref] = _finished(tj, spec, job, mem, ref, bool(done), now_iso)
                if status.get("phase") not in TERMINAL:
                    phase = SUCCEEDED if done else FAILED
                    plan.events.append(
                        (
                            tj,
                            "Normal" if done else "Warning",
                            phase,
                            f"batch Job {job_name(spec.name)} {phase.lower()}",
                        )
                    )
                continue
            nodes = _placement(job)
            fc_raw = _stored_forecast(job)
            started = _ts(job, "metadata", "creationTimestamp") or now_s
            dur = float(fc_raw.get("durationSeconds", pol.default_duration_s))
            fc = PowerForecast(
                float(fc_raw.get("gpuWatts", pol.gpu_tdp_watts)),
                float(fc_raw.get("quantile", 1.0)),
                str(fc_raw.get("source", "prior")),
                0,
            )
            samples = mem.samples.get(ref, [])
            measured = sum(v for _, v in samples) / len(samples) if samples else None
            if measuring:
                steady = [v for t, v in samples if t >= samples[0][0] + WARMUP_S]
                planned = mem.forecaster.running(fc, steady)
                mem.believed[ref] = planned.gpu_watts
                believed = planned.gpu_watts
            else:
                # no trustworthy measurement: plan at the admission forecast, but
                # keep believing the last measured figure so nothing is shed for it
                planned = fc
                believed = mem.believed.get(ref, fc.gpu_watts)
            running.append(
                RunningJob(
                    f"{ref[0]}/{ref[1]}",
                    spec.replicas,
                    spec.gpus_per_replica,
                    planned.gpu_watts,
                    spec.priority,
                    spec.preemptible,
                    started,
                    started + dur,
                    nodes,
                    measured,
                    believed,
                )
            )
            for n in nodes:
                held[n] = held.get(n, 0) + spec.gpus_per_replica
            active = int((job.get("status") or {}).get("active") or 0)
            phase = RUNNING if active > 0 else ADMITTED
            st: dict[str, Any] = {
                "phase": phase,
                "placement": list(nodes),
                "jobName": job_name(spec.name),
                "totalGPUs": spec.gpus,
                "estimatedStart": None,
                "forecast": _forecast_status(fc, spec.gpus, dur),  # as admitted
                "plannedGpuWatts": round(planned.gpu_watts, 1),
            }
            if phase == RUNNING and not status.get("startedAt"):
                st["startedAt"] = now_iso
            if measured is not None:
                st["measuredWatts"] = round(measured * spec.gpus, -1)
            plan.tj_status[ref] = st
            continue
        # queued: never admitted, or preempted (its Job is suspended)
        fc = mem.forecaster.forecast(spec.workload_class, spec.gpu_watts_hint)
        own = [v for _, v in mem.samples.get(ref, [])]
        if len(own) >= 3:
            # preempted after running: what it drew beats what its class or hint says
            seen = mem.forecaster.running(PowerForecast(pol.gpu_tdp_watts, 1.0, "prior", 0), own)
            if seen.gpu_watts > fc.gpu_watts:
                fc = seen
        dur = mem.forecaster.duration(
            spec.workload_class, spec.expected_duration_s, pol.default_duration_s
        )
        forecasts[ref] = (fc, dur)
        submitted = _ts(tj, "metadata", "creationTimestamp") or now_s
        queued.append(
            QueuedJob(
                f"{ref[0]}/{ref[1]}",
                spec.replicas,
                spec.gpus_per_replica,
                fc.gpu_watts,
                spec.priority,
                submitted,
                dur,
                spec.preemptible,
                spec.max_delay_s,
            )
        )

    nodes = node_states(state, held)
    cap_now = pol.cap_at(now_s)
    site_w = reading.site_watts if measuring and reading is not None else None
    mem.over_cap_since_s = over_cap_since(mem.over_cap_since_s, site_w, cap_now, now_s)
    snap = Snapshot(now_s, pol, nodes, running, queued, site_w, mem.over_cap_since_s)
    dec = decide(snap)
    plan.decision = dec
    if any(p.reason == PREEMPT_MEASURED for p in dec.preempts):
        # pods take a while to stop and Prometheus to see it: judge the effect of
        # this shedding only after another grace period, never shed twice for one excess
        mem.over_cap_since_s = now_s

    def ref_of(key: str) -> tuple[str, str]:
        ns, _, name = key.partition("/")
        return ns, name

    for a in dec.admits:
        ref = ref_of(a.key)
        spec = specs[ref]
        fc, dur = forecasts[ref]
        fstatus = _forecast_status(fc, spec.gpus, dur)
        existing = state.jobs.get(ref)
        if existing is not None:
            plan.resume_jobs.append(
                (ref[0], existing["metadata"]["name"], _resume_patch(spec, a.nodes, fstatus))
            )
        else:
            plan.create_jobs.append(build_job(by_ref[ref], spec, a.nodes, fstatus))
        msg = (
            f"admitted on {', '.join(a.nodes)}: +{fmt_watts(a.site_watts)} keeps the site "
            f"projection under the usable cap {fmt_watts(dec.effective_cap_watts)}"
        )
        plan.tj_status[ref] = {
            "phase": ADMITTED,
            "reason": "Admitted",
            "message": msg,
            "placement": list(a.nodes),
            "admittedAt": now_iso,
            "estimatedStart": None,
            "jobName": job_name(spec.name),
            "totalGPUs": spec.gpus,
            "forecast": fstatus,
            "conditions": [condition("Admitted", "True", "Admitted", msg, now_iso)],
        }
        plan.events.append((by_ref[ref], "Normal", "Admitted", msg))

    for w in dec.waits:
        ref = ref_of(w.key)
        spec = specs[ref]
        fc, dur = forecasts[ref]
        prev = (by_ref[ref].get("status") or {}).get("phase")
        phase = PREEMPTED if prev == PREEMPTED else QUEUED
        plan.tj_status[ref] = {
            "phase": phase,
            "reason": w.reason,
            "message": w.message,
            "estimatedStart": format_time(w.est_start_s) if w.est_start_s else None,
            "totalGPUs": spec.gpus,
            "forecast": _forecast_status(fc, spec.gpus, dur),
            "placement": [],
            "conditions": [condition("Admitted", "False", w.reason, w.message, now_iso)],
        }
        if w.reason == UNSCHEDULABLE and (by_ref[ref].get("status") or {}).get("reason") != (
            UNSCHEDULABLE
        ):
            plan.events.append((by_ref[ref], "Warning", UNSCHEDULABLE, w.message))

    for p in dec.preempts:
        ref = ref_of(p.key)
        job = state.jobs[ref]
        plan.suspend_jobs.append((ref[0], job["metadata"]["name"]))
        count = int((by_ref[ref].get("status") or {}).get("preemptions") or 0) + 1
        plan.tj_status[ref] = {
            "phase": PREEMPTED,
            "reason": p.reason,
            "message": p.message,
            "placement": [],
            "preemptions": count,
            "estimatedStart": None,
            "conditions": [condition("Admitted", "False", p.reason, p.message, now_iso)],
        }
        plan.events.append((by_ref[ref], "Warning", "Preempted", p.message))

    plan.policy_status = _policy_status(dec, pol, now_s, len(queued), len(running))
    from .outlook import outlook  # the plan ahead, published for users and alerts

    plan.policy_status["outlook"] = outlook(dec, pol, running, queued, now_s)
    plan.policy_status["conditions"] = _measurement_conditions(
        state, mem, site_w, cap_now, now_s, plan
    )
    return plan


def _measurement_conditions(
    state: SiteState,
    mem: ControllerMemory,
    site_w: float | None,
    cap_now: float,
    now_s: float,
    plan: Plan,
) -> list[dict[str, Any]]:
    """Conditions and events that say whether the site is measured and within its cap."""
    now_iso = format_time(now_s)
    pol = state.policy
    policy_ref = {
        "apiVersion": API,
        "kind": "PowerPolicy",
        "metadata": {"name": pol.name, "namespace": "default"},
    }
    reading = state.reading
    if reading is None:
        measured = condition(
            "Measured",
            "False",
            "NotConfigured",
            "spec.prometheus.url is not set: planning on forecasts alone",
            now_iso,
        )
        ok = None
    elif reading.ok:
        measured = condition(
            "Measured",
            "True",
            "Measuring",
            f"measured site power {fmt_watts(reading.site_watts or 0.0)}",
            now_iso,
        )
        ok = True
    else:
        measured = condition(
            "Measured",
            "False",
            "PrometheusUnavailable",
            f"{reading.error}; conservative mode: running jobs are planned at their "
            "admission forecasts and new classes at TDP",
            now_iso,
        )
        ok = False
    if ok is False and mem.measuring is not False:
        plan.events.append((policy_ref, "Warning", "PrometheusUnavailable", measured["message"]))
    if ok is True and mem.measuring is False:
        plan.events.append(
            (
                policy_ref,
                "Normal",
                "PrometheusRecovered",
                "measurements are back; planning on measured power again",
            )
        )
    mem.measuring = ok
    if site_w is None:
        within = condition(
            "WithinCap", "Unknown", "NotMeasured", "no trustworthy measurement", now_iso
        )
    elif mem.over_cap_since_s is not None:
        msg = (
            f"measured {fmt_watts(site_w)} > cap {fmt_watts(cap_now)} since "
            f"{format_time(mem.over_cap_since_s)}: admissions stopped; preemptible jobs are "
            f"shed after the {pol.grace_period_s:.0f}s grace period"
        )
        within = condition("WithinCap", "False", "MeasuredOverCap", msg, now_iso)
        if mem.over_cap_since_s == now_s:
            plan.events.append((policy_ref, "Warning", "MeasuredOverCap", msg))
    else:
        within = condition(
            "WithinCap",
            "True",
            "UnderCap",
            f"measured {fmt_watts(site_w)} <= cap {fmt_watts(cap_now)}",
            now_iso,
        )
    return [measured, within]


def _sample(state: SiteState, mem: ControllerMemory, now_s: float) -> None:
    """Record each running TrainingJob's mean per-GPU power from this reading."""
    assert state.reading is not None
    by_pod = state.reading.gpu_watts_by_pod
    per_job: dict[tuple[str, str], list[float]] = {}
    for pod in state.pods:
        meta = pod.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(LABEL_TJ)
        values = by_pod.get((meta.get("namespace", "default"), meta.get("name", "")))
        if owner and values:
            per_job.setdefault((meta.get("namespace", "default"), owner), []).extend(values)
    for ref, values in per_job.items():
        series = mem.samples.setdefault(ref, [])
        series.append((now_s, sum(values) / len(values)))
        del series[:-MAX_SAMPLES]


def _finished(
    tj: Mapping[str, Any],
    spec: TrainingJobSpec,
    job: Mapping[str, Any],
    mem: ControllerMemory,
    ref: tuple[str, str],
    done: bool,
    now_iso: str,
) -> dict[str, Any]:
    """Status of a finished job; a success also teaches the forecaster its class."""
    status = tj.get("status") or {}
    cond = (
        _job_condition(job, "Complete" if done else "Failed")
        or _job_condition(job, "SuccessCriteriaMet")
        or {}
    )
    phase = SUCCEEDED if done else FAILED
    jstatus = job.get("status") or {}
    finished = jstatus.get("completionTime") or cond.get("lastTransitionTime") or now_iso
    samples = mem.samples.pop(ref, [])
    mem.believed.pop(ref, None)
    measured = (
        round(sum(v for _, v in samples) / len(samples) * spec.gpus, 1)
        if samples
        else status.get("measuredWatts")
    )
    start, end = _ts(job, "status", "startTime"), _ts(job, "status", "completionTime")
    if done:
        _learn(mem, tj, spec, measured, end - start if start and end else None)
    out: dict[str, Any] = {
        "phase": phase,
        "reason": cond.get("reason") or phase,
        "message": cond.get("message") or f"batch Job {job_name(spec.name)} {phase.lower()}",
        "finishedAt": finished,
        "estimatedStart": None,
        "conditions": [condition("Finished", "True", phase, cond.get("message") or phase, now_iso)],
    }
    if measured is not None:
        out["measuredWatts"] = measured
    return out


def _learn(
    mem: ControllerMemory,
    tj: Mapping[str, Any],
    spec: TrainingJobSpec,
    measured_job_watts: float | None,
    duration_s: float | None,
) -> None:
    """Feed a succeeded job's measured power to the forecaster, once per job.

    After a restart, finished TrainingJobs still carry `measuredWatts`, so the
    class history is rebuilt from the cluster itself.
    """
    uid = (tj.get("metadata") or {}).get("uid", spec.key)
    if uid in mem.observed or measured_job_watts is None:
        return
    mem.observed.add(uid)
    status = tj.get("status") or {}
    if duration_s is None:
        started, finished = _ts(tj, "status", "startedAt"), _ts(tj, "status", "finishedAt")
        duration_s = finished - started if started and finished else None
    forecast = (status.get("forecast") or {}).get("gpuWatts")
    fc = float(forecast) if forecast is not None else None
    per_gpu = float(measured_job_watts) / spec.gpus
    mem.forecaster.observe(spec.workload_class, per_gpu, duration_s, fc)
    if fc:
        mem.finished.append((spec.workload_class, per_gpu, fc))


def condition(kind: str, status: str, reason: str, message: str, now_iso: str) -> dict[str, Any]:
    """A status condition in the metav1.Condition shape."""
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": now_iso,
    }


def _policy_status(
    dec: Decision, pol: PowerPolicy, now_s: float, queued: int, running: int
) -> dict[str, Any]:
    measured = dec.measured_site_watts
    window = pol.active_window(now_s)
    reasons: dict[str, int] = {}
    for w in dec.waits:
        reasons[w.reason] = reasons.get(w.reason, 0) + 1
    return {
        "capWatts": dec.cap_watts,
        "capKilowatts": f"{dec.cap_watts / 1000:.1f}",
        "projectedWatts": round(dec.projected_site_watts, 1),
        "projectedKilowatts": f"{dec.projected_site_watts / 1000:.1f}",
        "measuredWatts": None if measured is None else round(measured, 1),
        "measuredKilowatts": None if measured is None else f"{measured / 1000:.1f}",
        "headroomWatts": round(dec.effective_cap_watts - dec.projected_site_watts, 1),
        "headroomKilowatts": f"{(dec.effective_cap_watts - dec.projected_site_watts) / 1000:.1f}",
        "queuedJobs": queued - len(dec.admits) + len(dec.preempts),
        "runningJobs": running + len(dec.admits) - len(dec.preempts),
        "waitingByReason": reasons,
        "activeWindow": window.name if window else None,
        "lastCycle": format_time(now_s),
    }


def _pod_spec(spec: TrainingJobSpec, nodes: Iterable[str]) -> dict[str, Any]:
    """The user's pod template, pinned to the chosen nodes, with the GPUs requested."""
    template = json.loads(json.dumps(spec.template or {}))  # deep copy of plain data
    meta = template.setdefault("metadata", {})
    meta.setdefault("labels", {})[LABEL_TJ] = spec.name
    pod = template.setdefault("spec", {})
    pod.setdefault("restartPolicy", "Never")
    containers = pod.setdefault("containers", [])
    if not containers:
        containers.append({"name": "train", "image": "busybox:1.36", "command": ["true"]})
    res = containers[0].setdefault("resources", {})
    for kind in ("requests", "limits"):
        res.setdefault(kind, {})[GPU] = spec.gpus_per_replica
    for c in containers:  # quantities are strings in the API; the client refuses numbers
        for kind in ("requests", "limits"):
            amounts = (c.get("resources") or {}).get(kind) or {}
            for name, amount in amounts.items():
                amounts[name] = str(amount)
    affinity = pod.setdefault("affinity", {})
    affinity["nodeAffinity"] = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/hostname",
                            "operator": "In",
                            "values": sorted(set(nodes)),
                        }
                    ]
                }
            ]
        }
    }
    if spec.replicas > 1:
        affinity["podAntiAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {LABEL_TJ: spec.name}},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    # kwok fake nodes carry this taint in some setups; harmless elsewhere
    pod.setdefault("tolerations", []).append(
        {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
    )
    return template


def build_job(
    tj: Mapping[str, Any],
    spec: TrainingJobSpec,
    nodes: tuple[str, ...],
    forecast: Mapping[str, Any],
) -> dict[str, Any]:
    """The batch Job that runs an admitted TrainingJob, owned by it."""
    meta = tj["metadata"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(spec.name),
            "namespace": spec.namespace,
            "labels": {LABEL_TJ: spec.name, "app.kubernetes.io/managed-by": "wattcap"},
            "annotations": {
                ANN_PLACEMENT: json.dumps(list(nodes)),
                ANN_FORECAST: json.dumps(dict(forecast)),
            },
            "ownerReferences": [
                {
                    "apiVersion": API,
                    "kind": "TrainingJob",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "parallelism": spec.replicas,
            "completions": spec.replicas,
            "completionMode": "Indexed",
            "backoffLimit": 0,
            "suspend": False,
            "template": _pod_spec(spec, nodes),
        },
    }


def _resume_patch(
    spec: TrainingJobSpec, nodes: tuple[str, ...], forecast: Mapping[str, Any]
) -> dict[str, Any]:
    """Unsuspend a preempted Job on its new placement (allowed while suspended)."""
    return {
        "metadata": {
            "annotations": {
                ANN_PLACEMENT: json.dumps(list(nodes)),
                ANN_FORECAST: json.dumps(dict(forecast)),
            }
        },
        "spec": {
            "suspend": False,
            "template": {"spec": {"affinity": _pod_spec(spec, nodes)["spec"]["affinity"]}},
        },
    }


def status_changed(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether a status write is worth an API call (messages alone change often)."""
    for key, value in desired.items():
        if key in ("conditions", "message"):
            continue
        if current.get(key) != value:
            return True
    cur_reason = current.get("reason")
    return cur_reason != desired.get("reason", cur_reason) or (
        "message" in desired and not current.get("message")
    )
