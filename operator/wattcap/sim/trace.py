"""Job traces in the FORMAT.md layout: one row per job, plain CSV."""

from __future__ import annotations

from dataclasses import dataclass

REQUIRED_COLUMNS = (
    "job_id",
    "submit_s",
    "duration_s",
    "replicas",
    "gpus_per_replica",
    "workload_class",
    "priority",
    "gpu_watts",
)


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One job of a trace. `gpu_watts` is ground truth: only the site model reads it."""

    job_id: str
    submit_s: float
    duration_s: float
    replicas: int
    gpus_per_replica: int
    workload_class: str
    priority: int
    gpu_watts: float
    preemptible: bool = False
    est_duration_s: float | None = None
    user: str = ""

    @property
    def gpus(self) -> int:
        return self.replicas * self.gpus_per_replica
