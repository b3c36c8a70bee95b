"""What `kubectl wattcap` shows, as plain records built from the API's JSON.

Every figure comes from what the operator wrote (PowerPolicy and TrainingJob
status, including the outlook it publishes) or from the core's own functions
(`order_queue`); the plugin recomputes no plan. Pure: no I/O, so the records
are tested without a cluster and rendered as tables, JSON or YAML alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from itertools import pairwise
from typing import Any

from ..admission import QueuedJob, order_queue
from ..model import ManifestError, PowerPolicy, parse_power_policy, parse_time, parse_training_job
from ..priorities import reported_priority

WAITING = ("Queued", "Preempted")
RUNNING = ("Admitted", "Running")


def _status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("status") or {}


def _ref(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", "default"), meta.get("name", "")


def _num(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def governing(policies: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The PowerPolicy that governs: the oldest (as the operator picks it)."""
    items = sorted(
        policies,
        key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]),
    )
    return items[0] if items else None


def _unmanaged(raw: Any) -> dict[str, Any]:
    """PowerPolicy `status.unmanaged`, its watts as a number (empty when none)."""
    if not isinstance(raw, Mapping):
        return {}
    return {**raw, "watts": _num(raw.get("watts"))}


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for c in _status(obj).get("conditions") or []:
        if c.get("type") == kind:
            return c
    return {}


def status_records(
    policies: list[Mapping[str, Any]], tjs: list[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Per PowerPolicy: the cap now and next, draw, headroom, job counts, outlook."""
    counts = {"queued": 0, "running": 0, "preempted": 0, "succeeded": 0, "failed": 0}
    forecast_w = measured_w = 0.0
    # from each job's own status: the policy's waitingByReason is merge-patched,
    # so a reason no job has any more can linger there
    waits: dict[str, int] = {}
    for tj in tjs:
        st = _status(tj)
        phase = st.get("phase") or "Queued"
        if phase in RUNNING:
            counts["running"] += 1
            forecast_w += _num((st.get("forecast") or {}).get("jobWatts")) or 0.0
            measured_w += _num(st.get("measuredWatts")) or 0.0
        elif phase == "Preempted":
            counts["preempted"] += 1
        elif phase == "Queued":
            counts["queued"] += 1
        if phase in WAITING:
            reason = st.get("reason") or "Pending"
            waits[reason] = waits.get(reason, 0) + 1
        elif phase == "Succeeded":
            counts["succeeded"] += 1
        elif phase == "Failed":
            counts["failed"] += 1
    gov = governing(policies)
    throttled = throttled_records(tjs)
    out = []
    for pol in policies:
        st = _status(pol)
        outlook = st.get("outlook") or {}
        steps = outlook.get("steps") or []
        # published by the last cycle (an older operator leaves an old one behind)
        current = bool(steps) and steps[0].get("at") == st.get("lastCycle")
        if not current:
            outlook, steps = {}, []
        changes = [
            {"at": s["at"], "capWatts": s["capWatts"]}
            for prev, s in pairwise(steps)
            if s.get("capWatts") != prev.get("capWatts")
        ]
        out.append(
            {
                "name": pol["metadata"]["name"],
                "governing": pol is gov,
                "active": _condition(pol, "Active").get("status"),
                "measured": _condition(pol, "Measured").get("reason"),
                "capWatts": _num(st.get("capWatts")),
                "activeWindow": st.get("activeWindow"),
                "nextCapChanges": changes,
                "measuredWatts": _num(st.get("measuredWatts")),
                "projectedWatts": _num(st.get("projectedWatts")),
                "runningForecastWatts": round(forecast_w, 1),
                "runningMeasuredWatts": round(measured_w, 1),
                "headroomWatts": _num(st.get("headroomWatts")),
                "unmanaged": _unmanaged(st.get("unmanaged")),
                "jobs": dict(counts) if pol is gov else {},
                "powerLimits": _limits(pol),
                "throttled": throttled if pol is gov else [],
                "waitingByReason": dict(waits) if pol is gov else {},
                "lastCycle": st.get("lastCycle"),
                "nextCapDrop": outlook.get("nextCapDrop"),
                "pastMaxWait": outlook.get("pastMaxWait"),
                "outlookCurrent": current,
                "outlook": steps,
            }
        )
    return out


def _limits(pol: Mapping[str, Any]) -> dict[str, Any] | None:
    """The PowerLimitsApplied condition (whether GPU power limits hold); None without one."""
    c = _condition(pol, "PowerLimitsApplied")
    if not c:
        return None
    return {"status": c.get("status"), "reason": c.get("reason"), "message": c.get("message")}


def throttled_records(tjs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each running job under a GPU power limit: the limit per GPU, whether its node agent
    confirmed it (Pending, Confirmed), and why (its Throttled condition)."""
    out = []
    for tj in tjs:
        st = _status(tj)
        if (st.get("phase") or "") not in RUNNING or st.get("gpuPowerLimitWatts") is None:
            continue
        ns, name = _ref(tj)
        cond = _condition(tj, "Throttled")
        out.append(
            {
                "namespace": ns,
                "name": name,
                "gpuPowerLimitWatts": st.get("gpuPowerLimitWatts"),
                "gpuPowerLimitState": st.get("gpuPowerLimitState"),
                "message": cond.get("message"),
            }
        )
    return sorted(out, key=lambda r: (r["namespace"], r["name"]))


def _queued_job(tj: Mapping[str, Any]) -> QueuedJob | None:
    try:
        spec = parse_training_job(tj)
    except ManifestError:
        return None
    created = (tj.get("metadata") or {}).get("creationTimestamp")
    fc = (_status(tj).get("forecast") or {}).get("gpuWatts") or 0.0
    return QueuedJob(
        spec.key,
        spec.replicas,
        spec.gpus_per_replica,
        float(fc),
        reported_priority(_status(tj), spec.priority),
        parse_time(created, "creationTimestamp") if created else 0.0,
        float((_status(tj).get("forecast") or {}).get("durationSeconds") or 0.0),
        spec.preemptible,
        spec.max_delay_s,
    )


def queue_records(
    policy: Mapping[str, Any] | None, tjs: list[Mapping[str, Any]], now_s: float | None = None
) -> list[dict[str, Any]]:
    """Waiting TrainingJobs in the order the core admits them (`order_queue`)."""
    now = time.time() if now_s is None else now_s
    pol = _policy(policy)
    by_key: dict[str, Mapping[str, Any]] = {}
    waiting: list[QueuedJob] = []
    for tj in tjs:
        if (_status(tj).get("phase") or "Queued") not in WAITING:
            continue
        q = _queued_job(tj)
        if q is not None:
            by_key[q.key] = tj
            waiting.append(q)
    out = []
    for pos, q in enumerate(order_queue(waiting, pol, now), 1):
        tj = by_key[q.key]
        st = _status(tj)
        fc = st.get("forecast") or {}
        ns, name = _ref(tj)
        limit = pol.max_wait_s if q.max_delay_s is None else q.max_delay_s
        out.append(
            {
                "position": pos,
                "namespace": ns,
                "name": name,
                "phase": st.get("phase") or "Queued",
                "priority": q.priority,
                "gpus": q.gpus,
                "preemptible": q.preemptible,
                "workloadClass": (tj.get("spec") or {}).get("workloadClass") or "default",
                "forecastWatts": _num(fc.get("jobWatts")),
                "forecastSource": fc.get("source"),
                "reason": st.get("reason") or "Pending",
                "estimatedStart": st.get("estimatedStart"),
                "waitedSeconds": round(max(0.0, now - q.submitted_s)),
                "pastMaxWait": now - q.submitted_s > limit,
                "message": st.get("message") or "",
            }
        )
    return out


def _policy(policy: Mapping[str, Any] | None) -> PowerPolicy:
    if policy is not None:
        try:
            return parse_power_policy(policy)
        except ManifestError:
            pass
    return PowerPolicy(cap_watts=1.0)  # the CRD's defaults for ordering and maxWait


def explain_record(
    tj: Mapping[str, Any],
    policy: Mapping[str, Any] | None,
    queue: list[dict[str, Any]],
) -> dict[str, Any]:
    """Why one TrainingJob waits, from the status the operator wrote, and what
    the published figures say would let it start sooner."""
    st = _status(tj)
    ns, name = _ref(tj)
    fc = st.get("forecast") or {}
    phase = st.get("phase") or "Queued"
    spec = tj.get("spec") or {}
    rec: dict[str, Any] = {
        "namespace": ns,
        "name": name,
        "phase": phase,
        "reason": st.get("reason"),
        "message": st.get("message"),
        "estimatedStart": st.get("estimatedStart"),
        "forecast": dict(fc),
        "gpus": st.get("totalGPUs"),
        "preemptible": bool(spec.get("preemptible", False)),
        "position": next(
            (q["position"] for q in queue if (q["namespace"], q["name"]) == (ns, name)), None
        ),
        "queueLength": len(queue),
        "sooner": [],
    }
    if phase not in WAITING or policy is None:
        return rec
    pst = _status(policy)
    pol = _policy(policy)
    headroom = _num(pst.get("headroomWatts"))
    per_gpu = _num(fc.get("gpuWatts"))
    gpus = int(st.get("totalGPUs") or 0)
    sooner: list[str] = rec["sooner"]
    if headroom is not None and per_gpu:
        step = pol.pue * (per_gpu - pol.gpu_idle_watts)  # site watts per GPU of this job
        need = step * gpus
        rec["siteWatts"] = round(need, 1)
        rec["headroomWatts"] = headroom
        if need > headroom > 0 and step > 0:
            fit = int(headroom // step)
            sooner.append(
                f"fewer GPUs: the site's headroom now ({headroom / 1000:.1f} kW) fits "
                f"{fit} GPU{'' if fit == 1 else 's'} at this job's forecast {per_gpu:.0f} W/GPU "
                f"({step:.0f} W/GPU at the site with PUE {pol.pue:g}); it asks for {gpus}"
            )
    reason = st.get("reason") or ""
    drop = (pst.get("outlook") or {}).get("nextCapDrop")
    if reason == "WaitingForCapWindow" and drop:
        ends = _window_end(pst.get("outlook") or {}, drop["at"])
        sooner.append(
            "a shorter run: it would overlap the cap drop to "
            f"{drop['capWatts'] / 1000:.1f} kW at {drop['at']}"
            + (f" ({drop['window']})" if drop.get("window") else "")
            + (f", which ends {ends}" if ends else "")
        )
        if not rec["preemptible"]:
            sooner.append(
                "preemptible: true: a preemptible job may run until the drop and is shed "
                "then, instead of waiting for the window to end"
            )
    if reason == "WaitingForHigherPriority":
        sooner.append("a higher priority, or maxDelay: jobs past it go first")
    return rec


def _window_end(outlook: Mapping[str, Any], start_at: str) -> str | None:
    steps = outlook.get("steps") or []
    caps = [(s["at"], s["capWatts"]) for s in steps]
    for i, (at, cap) in enumerate(caps):
        if at == start_at:
            for later_at, later_cap in caps[i + 1 :]:
                if later_cap > cap:
                    return later_at
    return None


def top_records(tjs: list[Mapping[str, Any]], by: str) -> list[dict[str, Any]]:
    """Running draw grouped by namespace or workload class: measured against
    forecast (the operator's figures: `measuredWatts`, `forecast.jobWatts`)."""
    groups: dict[str, dict[str, Any]] = {}
    for tj in tjs:
        st = _status(tj)
        if (st.get("phase") or "") not in RUNNING:
            continue
        if by == "namespace":
            key = _ref(tj)[0]
        else:
            key = (tj.get("spec") or {}).get("workloadClass") or "default"
        g = groups.setdefault(
            key, {by: key, "jobs": 0, "gpus": 0, "measuredWatts": None, "forecastWatts": 0.0}
        )
        g["jobs"] += 1
        g["gpus"] += int(st.get("totalGPUs") or 0)
        g["forecastWatts"] += _num((st.get("forecast") or {}).get("jobWatts")) or 0.0
        m = _num(st.get("measuredWatts"))
        if m is not None:
            g["measuredWatts"] = (g["measuredWatts"] or 0.0) + m
    out = sorted(groups.values(), key=lambda g: -(g["measuredWatts"] or g["forecastWatts"]))
    for g in out:
        g["forecastWatts"] = round(g["forecastWatts"], 1)
        m, f = g["measuredWatts"], g["forecastWatts"]
        g["measuredOverForecast"] = round(m / f, 3) if m is not None and f else None
    return out


def step_time(at: str) -> float:
    """A published step's start, as epoch seconds."""
    return parse_time(at, "at")
