"""The operator's side of GPU power limits: what it asks of pods and what it reports.

Pure, no I/O: plain API dicts in, annotation patches and status words out; the
controller calls these once per cycle. The core (`admission.decide`) chooses each
throttled job's limit; here it becomes the annotation `wattcap.io/gpu-power-limit-watts`
on each of the job's running pods (whole watts, rounded down, so the GPU never draws
more than the core planned), and the confirmation rule (`enforcement.py`) reads back
what the node agents report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .enforcement import (
    AGENT_INTERVAL_S,
    CONFIRMED,
    PENDING,
    SCRAPE_INTERVAL_S,
    UNCONFIRMED,
    PodLimit,
    Verdict,
    min_limits_grace_s,
)
from .jobs import ANN_GPU_LIMIT, LABEL_TJ

# A looser limit than the one in force is written only if it is this much looser: a
# cut that moves by a few watts from cycle to cycle must not rewrite every pod (and
# re-program every GPU) each time. A tighter one is always written: the plan counts on it.
DEADBAND_W = 10
ENFORCED_GAUGE = "DCGM_FI_DEV_ENFORCED_POWER_LIMIT"


def asked_watts(pod: Mapping[str, Any]) -> int | None:
    """The limit asked of a pod's GPUs (its annotation); None if none or unreadable."""
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(ANN_GPU_LIMIT)
    try:
        value = int(str(raw)) if raw is not None else None
    except ValueError:
        return None
    return value if value is not None and value > 0 else None


def running_pods(pods: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """wattcap's running pods by (namespace, label value): the GPUs a limit is asked of.
    A pod being deleted is left out: it stops drawing whatever its limit."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        label = (meta.get("labels") or {}).get(LABEL_TJ)
        if not label or meta.get("deletionTimestamp"):
            continue
        if (pod.get("status") or {}).get("phase") != "Running":
            continue
        out.setdefault((meta.get("namespace", "default"), label), []).append(dict(pod))
    return out


def pod_limits(
    pods: Sequence[Mapping[str, Any]],
    gpus_per_pod: int,
    enforced: Mapping[tuple[str, str], Sequence[float]],
) -> list[PodLimit]:
    """Each pod's ask and the enforced limits Prometheus shows for its GPUs."""
    out = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        ns, name = meta.get("namespace", "default"), meta.get("name", "")
        out.append(
            PodLimit(
                name,
                str((pod.get("spec") or {}).get("nodeName", "")),
                gpus_per_pod,
                asked_watts(pod),
                tuple(enforced.get((ns, name), ())),
            )
        )
    return out


def annotation_patches(
    pods: Sequence[Mapping[str, Any]], limit_w: float | None
) -> tuple[list[tuple[str, str, dict[str, Any]]], int | None]:
    """(patches, the limit the pods will carry) for a job the core limits to `limit_w`
    (None: released). Rounded down to whole watts; a looser value within DEADBAND_W of
    the one a pod carries leaves it as it is."""
    want = None if limit_w is None else math.floor(limit_w + 1e-9)
    patches: list[tuple[str, str, dict[str, Any]]] = []
    shown: int | None = None
    for pod in pods:
        meta = pod.get("metadata") or {}
        have = asked_watts(pod)
        target = want
        if want is not None and have is not None and have <= want < have + DEADBAND_W:
            target = have
        if target != have:
            value = None if target is None else str(target)
            patches.append((meta.get("namespace", "default"), meta["name"], {ANN_GPU_LIMIT: value}))
        if target is not None:
            shown = target if shown is None else max(shown, target)
    return patches, shown


def cause_reason(cause: str, kind: str) -> str:
    """The Throttled condition's reason for the cut the core names."""
    if kind == "MeasuredOverCap":
        return "MeasuredOverCap"
    return "DemandResponseWindow" if cause.startswith("demand-response window") else "CapDrop"


def job_limit_report(
    verdict: Verdict,
    shown: int | None,
    rewritten: bool,
    cause: str,
    kind: str,
    grace_s: float,
    failed_nodes: Sequence[str] = (),
) -> tuple[dict[str, Any], tuple[str, str, str, str] | None]:
    """(TrainingJob status fields, Throttled condition as (type, status, reason, message)
    or None) for one running job."""
    if shown is not None:
        state = PENDING if rewritten or verdict.state != CONFIRMED else CONFIRMED
        msg = f"throttled to {shown} W by {cause or 'the cap'}"
        if state == CONFIRMED:
            msg += f"; confirmed by the node agent ({ENFORCED_GAUGE})"
            cond = ("Throttled", "True", cause_reason(cause, kind), msg)
        else:
            msg += (
                f"; waiting for the node agent to confirm it ({ENFORCED_GAUGE}), "
                f"preempted instead if it does not within {grace_s:.0f}s"
            )
            cond = ("Throttled", "Unknown", cause_reason(cause, kind), msg)
        return {"gpuPowerLimitWatts": shown, "gpuPowerLimitState": state}, cond
    fields: dict[str, Any] = {"gpuPowerLimitWatts": None, "gpuPowerLimitState": None}
    if verdict.state == UNCONFIRMED:
        where = ", ".join(failed_nodes) or "its nodes"
        msg = (
            f"no node agent confirmed its GPU power limit on {where} within the {grace_s:.0f}s "
            "grace period: planned at its natural draw, preempted rather than throttled"
        )
        fields["gpuPowerLimitState"] = UNCONFIRMED
        return fields, ("Throttled", "False", "LimitNotConfirmed", msg)
    return fields, None


def policy_limits_condition(
    measured: bool | None,
    limited: Mapping[str, str],
    failed: Mapping[Any, Sequence[str]],
    agentless: Sequence[str],
    grace_s: float,
) -> tuple[str, str, str]:
    """The PowerPolicy's PowerLimitsApplied condition: (status, reason, message).

    `measured`: None without Prometheus configured, False while it gives no reading.
    `limited`: each job this cycle's plan limits -> PENDING or CONFIRMED."""
    if measured is None:
        return (
            "False",
            "NotMeasured",
            "spec.prometheus.url is not set: wattcap cannot confirm GPU power limits "
            f"({ENFORCED_GAUGE}), so it preempts instead of throttling",
        )
    if failed:
        keys = sorted(f"{k[0]}/{k[1]}" if isinstance(k, tuple) else str(k) for k in failed)
        nodes = sorted({n for ns in failed.values() for n in ns})
        return (
            "False",
            "LimitNotConfirmed",
            f"{len(keys)} job(s) ({', '.join(keys[:5])}) had a GPU power limit no node agent "
            f"confirmed within the {grace_s:.0f}s grace period (nodes: "
            f"{', '.join(nodes[:5]) or 'unknown'}): planned at their natural draw and "
            "preempted rather than throttled",
        )
    if agentless:
        return (
            "False",
            "NoNodeAgent",
            f"{len(agentless)} GPU node(s) have reported no enforced power limit "
            f"({ENFORCED_GAUGE}) for the {grace_s:.0f}s grace period, so no node agent runs "
            f"there ({', '.join(agentless[:5])}"
            f"{' ...' if len(agentless) > 5 else ''}): their jobs are preempted rather than "
            "throttled",
        )
    if measured is False:
        return (
            "Unknown",
            "NotMeasured",
            f"no reading from Prometheus: limits in force cannot be confirmed ({ENFORCED_GAUGE})",
        )
    pending = sum(state == PENDING for state in limited.values())
    throttled = len(limited)
    if pending:
        return (
            "Unknown",
            "AwaitingConfirmation",
            f"{pending} job(s)' GPU power limits not yet confirmed by their node agents "
            f"({ENFORCED_GAUGE}); preempted instead if not within {grace_s:.0f}s",
        )
    if throttled:
        return (
            "True",
            "Confirmed",
            f"{throttled} job(s) throttled; every limit confirmed by the node agents "
            f"({ENFORCED_GAUGE})",
        )
    return ("True", "NoneNeeded", "no job is throttled now")


def grace_period_condition(
    grace_s: float, control_period_s: float, max_termination_grace_s: float
) -> tuple[str, str, str]:
    """The PowerPolicy's GracePeriodTooShort condition: (status, reason, message).

    A warning, not a refusal: the policy is used as written, but a grace shorter
    than `enforcement.min_limits_grace_s` cannot keep its promise when a limit
    is lost, so the message names the field and the least that would fit."""
    least = min_limits_grace_s(control_period_s, max_termination_grace_s)
    parts = (
        f"the node agent's --interval {AGENT_INTERVAL_S:g}s + Prometheus' scrape interval "
        f"{SCRAPE_INTERVAL_S:g}s (assumed) + spec.controlPeriod {control_period_s:g}s + "
        f"spec.maxTerminationGracePeriod {max_termination_grace_s:g}s"
    )
    if grace_s < least:
        return (
            "True",
            "ShorterThanLimitFallback",
            f"spec.gracePeriod {grace_s:g}s is shorter than the {least:g}s a lost GPU power "
            f"limit may take to be seen and its job's pods stopped ({parts}; "
            "docs/node-agent.md): the site can stay over its cap past the grace; set "
            f"spec.gracePeriod to at least {least:g}s",
        )
    return (
        "False",
        "CoversLimitFallback",
        f"spec.gracePeriod {grace_s:g}s covers the {least:g}s a lost GPU power limit may "
        f"take to be seen and its job's pods stopped ({parts})",
    )
