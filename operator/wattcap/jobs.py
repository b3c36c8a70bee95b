"""The batch Job wattcap writes for an admitted TrainingJob, and how it recognises its own.

Names are deterministic (`job_name`), so every write is idempotent, and the
label value is the same short name, valid for TrainingJob names of any
length. A Job found under that name is adopted only if this TrainingJob's uid
controls it (`adoptable`), never because the name matches.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from .model import API, TrainingJobSpec

GPU = "nvidia.com/gpu"
LABEL_TJ = "wattcap.io/trainingjob"
ANN_PLACEMENT = "wattcap.io/placement"
ANN_FORECAST = "wattcap.io/forecast"
ANN_ADMITTED = "wattcap.io/admitted-at"  # when the Job was last created or resumed
# On a running pod of a throttled job: the power limit (whole watts per GPU, every GPU of
# the pod) a node agent should apply; written and removed by the operator only
ANN_GPU_LIMIT = "wattcap.io/gpu-power-limit-watts"
DEFAULT_GRACE_S = 30  # Kubernetes' own default terminationGracePeriodSeconds


def get_path(obj: Any, *path: str) -> Any:
    """obj[path...], or None where any step is missing or not a mapping:
    API JSON read without trusting its shape."""
    for p in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(p)
    return obj


def job_name(tj_name: str) -> str:
    """Deterministic, valid batch Job name for a TrainingJob (63-char label limit)."""
    if len(tj_name) <= 52:
        return tj_name
    digest = hashlib.sha256(tj_name.encode()).hexdigest()[:10]
    return f"{tj_name[:41]}-{digest}"


def _pod_spec(
    spec: TrainingJobSpec, nodes: Iterable[str], max_grace_s: float | None = None
) -> dict[str, Any]:
    """The user's pod template, pinned to the chosen nodes, with the GPUs requested."""
    template = json.loads(json.dumps(spec.template or {}))  # deep copy of plain data
    meta = template.setdefault("metadata", {})
    meta.setdefault("labels", {})[LABEL_TJ] = job_name(spec.name)  # a label value: <= 63
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
    if max_grace_s is not None:
        # a shed job must stop drawing power within the policy's grace
        asked = pod.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S)
        pod["terminationGracePeriodSeconds"] = int(min(asked, max_grace_s))
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
                    "labelSelector": {"matchLabels": {LABEL_TJ: job_name(spec.name)}},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    return template


def build_job(
    tj: Mapping[str, Any],
    spec: TrainingJobSpec,
    nodes: tuple[str, ...],
    forecast: Mapping[str, Any],
    admitted_at: str = "",
    max_grace_s: float | None = None,
    active_deadline_s: float | None = None,
) -> dict[str, Any]:
    """The batch Job that runs an admitted TrainingJob, owned by it; its pods get
    at most `max_grace_s` to terminate (the policy's maxTerminationGracePeriod),
    and it is stopped after `active_deadline_s` running (overrunAction Stop:
    the declared expectedDuration plus overrunGrace; the Job controller
    restarts the count when a suspended Job resumes)."""
    meta = tj["metadata"]
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(spec.name),
            "namespace": spec.namespace,
            "labels": {LABEL_TJ: job_name(spec.name), "app.kubernetes.io/managed-by": "wattcap"},
            "annotations": {
                ANN_PLACEMENT: json.dumps(list(nodes)),
                ANN_FORECAST: json.dumps(dict(forecast)),
                ANN_ADMITTED: admitted_at,
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
            "template": _pod_spec(spec, nodes, max_grace_s),
        },
    }
    if active_deadline_s is not None:
        body["spec"]["activeDeadlineSeconds"] = max(1, math.ceil(active_deadline_s))
    return body


def resume_patch(
    spec: TrainingJobSpec, nodes: tuple[str, ...], forecast: Mapping[str, Any], admitted_at: str
) -> dict[str, Any]:
    """Unsuspend a preempted Job on the nodes it already had (its template is
    left alone: once a Job has run, the API server refuses any change to it)."""
    return {
        "metadata": {
            "annotations": {
                ANN_PLACEMENT: json.dumps(list(nodes)),
                ANN_FORECAST: json.dumps(dict(forecast)),
                ANN_ADMITTED: admitted_at,
            }
        },
        "spec": {"suspend": False},
    }


def controller_uid(job: Mapping[str, Any]) -> str | None:
    """The uid of a Job's controlling owner, if it has one."""
    for ref in get_path(job, "metadata", "ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller"):
            return ref.get("uid")
    return None


def adoptable(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether a Job found under the name wattcap wanted is the one it would create:
    controlled by the same TrainingJob uid, and not on its way out. A Job of a
    deleted TrainingJob of the same name, or anyone else's, is never adopted."""
    uid = controller_uid(desired)
    return (
        uid is not None
        and controller_uid(existing) == uid
        and not get_path(existing, "metadata", "deletionTimestamp")
    )
