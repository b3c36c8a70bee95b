"""The agent's NVML side: bring every GPU of the node to the limit its pod asks for.

`nvml` is the pynvml module of nvidia-ml-py (NVIDIA's maintained binding) or anything with
its call signatures (the tests' FakeNvml). NVML keeps limits in milliwatts; a pod asks in
watts. NVML refuses a limit outside the GPU's [min, max] constraints, so the agent clamps
to them itself (a throttle that is refused whole would leave the GPU at its default).
A GPU NVML fails on is reported and skipped; the node's other GPUs go on.

A GPU with MIG enabled is left as it is: its power limit is the physical GPU's, shared
by the pods of all its MIG devices (the kubelet names those MIG-<uuid>, not the GPU), so
no pod's limit can be its own, and restoring "the default" for a GPU no pod holds by its
own UUID would undo whatever the site set there. It is reported as skipped (reason MIG),
with no enforced limit: nothing on it counts as throttled, so the operator preempts there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LIMIT_ANNOTATION = "wattcap.io/gpu-power-limit-watts"

# The NVML calls the agent makes (the tests check the fake against pynvml's signatures).
NVML_CALLS = (
    "nvmlInit",
    "nvmlShutdown",
    "nvmlDeviceGetCount",
    "nvmlDeviceGetHandleByIndex",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetMigMode",
    "nvmlDeviceGetPowerManagementLimitConstraints",
    "nvmlDeviceGetPowerManagementDefaultLimit",
    "nvmlDeviceGetPowerManagementLimit",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceSetPowerManagementLimit",
)
# pynvml's values, fixed by NVML's ABI (nvml.h), so the agent needs no module constant
NVML_DEVICE_MIG_ENABLE = 1  # nvmlDeviceGetMigMode's "on"
NVML_ERROR_NOT_SUPPORTED = 3


@dataclass(frozen=True)
class Want:
    """What the pod holding a GPU asks for; watts None means the GPU's default limit."""

    namespace: str
    pod: str
    container: str
    watts: int | None


@dataclass(frozen=True)
class GpuReport:
    """One GPU after a pass: the limit in force (W), the NVML error that stopped it, or
    why the agent left it alone (`skipped`: "MIG")."""

    index: int
    uuid: str
    want: Want | None
    enforced_w: float | None
    error: str | None
    skipped: str | None = None


def clamp_mw(watts: int, min_mw: int, max_mw: int) -> int:
    """`watts` in milliwatts, inside NVML's constraints for the GPU."""
    return max(min_mw, min(max_mw, int(watts) * 1000))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def reconcile(nvml: Any, wants: Mapping[str, Want]) -> list[GpuReport]:
    """One pass over every GPU of the node (NVML initialised by the caller).

    `wants` is keyed by the device id the kubelet reports: a GPU UUID, or its index
    where the device plugin names GPUs by index. A GPU no pod asks for is brought back
    to its default limit, so a limit left by a pod that ended, or from before the agent
    started, does not outlive the pod. Raises NVMLError only when NVML cannot count
    the GPUs at all.
    """
    reports = []
    for index in range(nvml.nvmlDeviceGetCount()):
        uuid, want = "", wants.get(str(index))
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            want = wants.get(uuid, want)
            if _mig_enabled(nvml, handle):
                reports.append(GpuReport(index, uuid, want, None, None, skipped="MIG"))
                continue
            enforced = _apply(nvml, handle, want)
        except nvml.NVMLError as exc:
            reports.append(GpuReport(index, uuid, want, None, str(exc)))
            continue
        reports.append(GpuReport(index, uuid, want, enforced / 1000.0, None))
    return reports


def _mig_enabled(nvml: Any, handle: Any) -> bool:
    """MIG mode is on now; a GPU without MIG answers NOT_SUPPORTED (any other error is
    the GPU's, reported as such by the caller)."""
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError as exc:
        if getattr(exc, "value", None) == NVML_ERROR_NOT_SUPPORTED:
            return False
        raise
    return bool(current == NVML_DEVICE_MIG_ENABLE)


def _apply(nvml: Any, handle: Any, want: Want | None) -> int:
    """Set the GPU's limit when it differs from the target; the enforced limit, mW."""
    min_mw, max_mw = nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
    if want is None or want.watts is None:
        default = nvml.nvmlDeviceGetPowerManagementDefaultLimit(handle)
        target = max(min_mw, min(max_mw, default))
    else:
        target = clamp_mw(want.watts, min_mw, max_mw)
    if nvml.nvmlDeviceGetPowerManagementLimit(handle) != target:
        nvml.nvmlDeviceSetPowerManagementLimit(handle, target)
    return nvml.nvmlDeviceGetEnforcedPowerLimit(handle)
