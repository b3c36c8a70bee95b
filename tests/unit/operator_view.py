"""The operator's view of a simulated site: the cluster objects the operator
would read if the simulator's state were a real cluster.

The differential test (`test_sim_vs_operator.py`) hands this view to
`controller.cycle` and holds its decision to the simulator's. So the view
is what the operator itself would have written, not what the simulator
believes: a TrainingJob created when the job was submitted; a batch Job
created at the job's admission, kept (suspended) when it is preempted and
resumed in place on the same nodes (a move deletes it and creates a fresh
one); on it, the placement, the forecast the operator admitted it with
(for the whole run: the operator cannot know how much of it ran) and the
time of the last admission or resume.

The simulator's fixed-forecast schedulers fit this view (`static-tdp`,
`gpu-only`): the operator's forecaster, given no history, plans every GPU at
TDP and every job for its expected duration (or the policy's default), as
they do. So does a wattcap scheduler with nothing measured: the operator is
handed its forecaster (the same history), and each Job carries the forecast
it was admitted with, written as the operator writes it.
"""

from __future__ import annotations

import json
from typing import Any

from wattcap.controller import ControllerMemory, SiteState
from wattcap.controller import _forecast_status as forecast_status
from wattcap.forecast import Forecaster
from wattcap.jobs import ANN_ADMITTED, ANN_FORECAST, ANN_PLACEMENT, LABEL_TJ, job_name
from wattcap.model import API, format_time
from wattcap.priorities import PriorityClass
from wattcap.sim.schedulers import SIM_NAMESPACE

NAMESPACE = SIM_NAMESPACE
TEMPLATE = {"spec": {"containers": [{"name": "main", "image": "trainer:1"}]}}


def key_of(operator_key: str) -> str:
    """A simulator job id from the operator's `namespace/name` key."""
    return operator_key.partition("/")[2]


def memory(eng: Any) -> ControllerMemory:
    """A fresh operator memory, nothing measured; the simulator's forecaster
    (its history) if its scheduler has one, else none."""
    pol = eng.dpol
    own = getattr(eng.sched, "forecaster", None)
    return ControllerMemory(own or Forecaster(pol.gpu_tdp_watts, pol.gpu_idle_watts))


def site_state(eng: Any) -> SiteState:
    """The cluster the operator would see with the engine `eng` (a
    `wattcap.sim.engine._Engine`) in its current state."""
    runs: dict[str, list[Any]] = {}
    for seg in eng.segments:
        runs.setdefault(seg.job_id, []).append(seg)
    tjs, jobs = [], {}
    for j in eng.jobs:
        if j.state not in (1, 2):  # QUEUED, RUNNING: pending and finished jobs are not read
            continue
        name = j.tj.job_id
        tjs.append(_trainingjob(eng, j))
        if j.state == 2:
            jobs[(NAMESPACE, name)] = _job(eng, j, runs.get(name, []), j.seg_start, j.nodes)
        elif name in runs:  # preempted: its Job is kept, suspended, with no pods left
            last = runs[name][-1]
            jobs[(NAMESPACE, name)] = _job(eng, j, runs[name][:-1], last.start_s, last.nodes, True)
    nodes = [node(n.name, n.gpus_total) for n in eng.nodes]
    # a job's priority comes from its PriorityClass: one per number in the trace
    classes = {
        _class_name(p): PriorityClass(_class_name(p), p, True)
        for p in {j.tj.priority for j in eng.jobs}
    }
    return SiteState(eng.dpol, nodes, [], tjs, jobs, priority_classes=classes)


def _class_name(priority: int) -> str:
    return f"prio{priority}" if priority >= 0 else f"prio-minus{-priority}"


def node(name: str, gpus: int = 8) -> dict[str, Any]:
    """A Ready node object with `gpus` allocatable GPUs."""
    return {
        "metadata": {"name": name},
        "spec": {},
        "status": {
            "allocatable": {"nvidia.com/gpu": str(gpus)},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def _trainingjob(eng: Any, j: Any) -> dict[str, Any]:
    tj = j.tj
    spec: dict[str, Any] = {
        "replicas": tj.replicas,
        "gpusPerReplica": tj.gpus_per_replica,
        "priorityClassName": _class_name(tj.priority),
        "preemptible": tj.preemptible,
        "workloadClass": tj.workload_class,
        "template": TEMPLATE,
    }
    if tj.est_duration_s:
        spec["expectedDuration"] = tj.est_duration_s
    if tj.gpu_watts_hint is not None:
        spec["gpuWattsHint"] = tj.gpu_watts_hint
    return {
        "apiVersion": API,
        "kind": "TrainingJob",
        "metadata": {
            "name": tj.job_id,
            "namespace": NAMESPACE,
            "uid": f"uid-{tj.job_id}",
            "generation": 1,
            "creationTimestamp": format_time(eng.t0 + tj.submit_s),
        },
        "spec": spec,
        "status": {},
    }


def _job(
    eng: Any,
    j: Any,
    earlier: list[Any],
    admitted_s: float,
    nodes: tuple[str, ...],
    suspended: bool = False,
) -> dict[str, Any]:
    """The batch Job of `j`, last admitted (created or resumed) at
    `admitted_s` on `nodes`; `earlier`: its runs before that one. It was
    created at the first run of the latest series on these same nodes."""
    created = admitted_s
    for seg in reversed(earlier):
        if set(seg.nodes) != set(nodes):
            break
        created = seg.start_s
    tj = j.tj
    # as the operator wrote it when it admitted the job at the simulator's plan
    forecast = forecast_status(j.plan, tj.gpus, j.planned_total)
    replicas = 0 if suspended else tj.replicas
    return {
        "metadata": {
            "name": job_name(tj.job_id),
            "namespace": NAMESPACE,
            "uid": f"job-{tj.job_id}-{created}",
            "creationTimestamp": format_time(eng.t0 + created),
            "labels": {LABEL_TJ: tj.job_id},
            "annotations": {
                ANN_PLACEMENT: json.dumps(list(nodes)),
                ANN_FORECAST: json.dumps(forecast),
                ANN_ADMITTED: format_time(eng.t0 + admitted_s),
            },
            "ownerReferences": [{"kind": "TrainingJob", "name": tj.job_id}],
        },
        "spec": {"suspend": suspended},
        "status": {"active": replicas, "ready": replicas},
    }
