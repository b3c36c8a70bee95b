"""GPU work on the site that wattcap does not manage, as admission should plan it.

Sites keep some GPU work outside wattcap: inference, another scheduler, in
namespaces the admission policy exempts. Its GPUs are not free, and its
power is not wattcap's to shed, but it is drawn under the same cap. Planning
it at idle (what wattcap did before) let admission fill the cap as if it
were not there. Here it is planned at what the policy says
(`spec.unmanaged`): the pods' measured power (TDP for GPUs without a fresh
measurement, never below the reserve), or a fixed reserve. The figure is
only ever a planning figure: `decide` keeps it out of shedding, and only a
measured overdraw sheds managed work for it.

Pure: plain API dicts in, a figure out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .jobs import GPU, LABEL_TJ
from .model import PowerPolicy
from .telemetry import Reading

RESERVE, MEASURED, TDP, MIXED, NONE = "Reserve", "Measured", "TDP", "Measured+TDP", "None"


@dataclass(frozen=True, slots=True)
class Unmanaged:
    """Unmanaged GPU work: site watts above idle planned for it, and what was found."""

    watts: float
    gpus: int
    pods: int
    source: str

    def status(self) -> dict[str, Any]:
        """As PowerPolicy `status.unmanaged`."""
        return {
            "watts": round(self.watts, 1),
            "gpus": self.gpus,
            "pods": self.pods,
            "source": self.source,
        }


def pod_gpus(pod: Mapping[str, Any]) -> int:
    """GPUs a pod holds: its containers and sidecars (restartable init
    containers) together, or its largest plain init container if that is more."""

    def req(c: Mapping[str, Any]) -> int:
        raw = ((c.get("resources") or {}).get("requests") or {}).get(GPU)
        if raw is None:
            raw = ((c.get("resources") or {}).get("limits") or {}).get(GPU, 0)
        try:
            return max(0, int(str(raw)))
        except ValueError:
            return 0

    spec = pod.get("spec") or {}
    running = sum(req(c) for c in spec.get("containers") or [])
    inits = spec.get("initContainers") or []
    running += sum(req(c) for c in inits if c.get("restartPolicy") == "Always")
    plain = [req(c) for c in inits if c.get("restartPolicy") != "Always"]
    return max([running, *plain])


def unmanaged_load(
    policy: PowerPolicy,
    site_nodes: set[str],
    pods: list[dict[str, Any]],
    reading: Reading | None,
) -> Unmanaged:
    """What unmanaged GPU work on `site_nodes` is planned at.

    `pods` are the bound, non-terminal pods as the cycle sees them: a pod
    keeps the wattcap.io/trainingjob label only if a Job wattcap owns
    controls it (`cluster.match_owned`), so every other pod that requests
    GPUs on a site node is unmanaged, forged label or not. A GPU is measured
    if `reading` is good and has a sample for that pod; otherwise it is
    planned at TDP. `reading` None or not ok: every GPU is unmeasured.
    """
    gpus = found = measured_gpus = 0
    watts = 0.0
    by_pod = reading.gpu_watts_by_pod if reading is not None and reading.ok else {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        if LABEL_TJ in (meta.get("labels") or {}):
            continue
        if (pod.get("spec") or {}).get("nodeName") not in site_nodes:
            continue
        g = pod_gpus(pod)
        if g <= 0:
            continue
        found += 1
        gpus += g
        values = by_pod.get((meta.get("namespace", "default"), meta.get("name", "")), [])[:g]
        measured_gpus += len(values)
        watts += sum(values) + (g - len(values)) * policy.gpu_tdp_watts
    reserve = policy.unmanaged_reserve_watts
    if policy.unmanaged_plan == RESERVE:
        return Unmanaged(reserve, gpus, found, RESERVE)
    planned = max(policy.pue * (watts - gpus * policy.gpu_idle_watts), 0.0)
    if reserve > planned:
        return Unmanaged(reserve, gpus, found, RESERVE)
    if gpus == 0:
        source = NONE
    elif measured_gpus == gpus:
        source = MEASURED
    else:
        source = TDP if measured_gpus == 0 else MIXED
    return Unmanaged(planned, gpus, found, source)
