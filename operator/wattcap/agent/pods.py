"""The limit each pod on the agent's node asks for: its wattcap.io/gpu-power-limit-watts.

The operator writes the annotation (an integer, watts per GPU, all GPUs of the pod) on
the running pods of a job it throttles and removes it to lift the throttle; a
ValidatingAdmissionPolicy keeps tenants from writing it. PodLimits is fed by a watch of
the node's pods (run.py); a pod that ended or was deleted asks for nothing, so its GPUs
go back to their default limit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .gpus import LIMIT_ANNOTATION, Want
from .podresources import DeviceAssignment

log = logging.getLogger("wattcap.agent")

_ENDED = ("Succeeded", "Failed")


def parse_limit(pod: Mapping[str, Any]) -> int | None:
    """The pod's limit in watts; None when absent or not a positive integer (logged)."""
    meta = pod.get("metadata") or {}
    value = (meta.get("annotations") or {}).get(LIMIT_ANNOTATION)
    if value is None:
        return None
    try:
        watts = int(str(value).strip())
    except ValueError:
        watts = 0
    if watts <= 0:
        log.warning(
            "pod %s/%s: %s=%r is not a positive integer of watts; ignored",
            meta.get("namespace"),
            meta.get("name"),
            LIMIT_ANNOTATION,
            value,
        )
        return None
    return watts


def _key(pod: Mapping[str, Any]) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


class PodLimits:
    """The limits of the node's live pods, kept from a list and the watch that follows it."""

    def __init__(self) -> None:
        self._limits: dict[tuple[str, str], int] = {}

    def reset(self, pods: Iterable[Mapping[str, Any]]) -> None:
        """Replace everything with a fresh list of the node's pods."""
        self._limits = {}
        for pod in pods:
            self.apply("ADDED", pod)

    def apply(self, event_type: str, pod: Mapping[str, Any]) -> bool:
        """One watch event; True when a pod's limit changed."""
        key = _key(pod)
        ended = event_type == "DELETED" or (pod.get("status") or {}).get("phase") in _ENDED
        watts = None if ended else parse_limit(pod)
        before = self._limits.get(key)
        if watts is None:
            self._limits.pop(key, None)
        else:
            self._limits[key] = watts
        return before != watts

    def get(self, namespace: str, pod: str) -> int | None:
        return self._limits.get((namespace, pod))


def wants_for(assignments: Sequence[DeviceAssignment], limits: PodLimits) -> dict[str, Want]:
    """What each allocated GPU's pod asks for, keyed by GPU UUID or index.

    A time-sliced GPU is allocated as GPU-x::0, GPU-x::1 ...: the limit is the physical
    GPU's, so the replica suffix is dropped (dcgm-exporter maps them the same way).
    """
    wants: dict[str, Want] = {}
    for a in assignments:
        gpu = a.device_id.split("::", 1)[0]
        wants[gpu] = Want(a.namespace, a.pod, a.container, limits.get(a.namespace, a.pod))
    return wants
