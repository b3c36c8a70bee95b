"""A clairvoyant reference scheduler for benchmarks: never the operator's.

`oracle` is handed the trace itself, so it knows what no live scheduler can:
each job's true power (`gpu_watts`) and true run time (`duration_s`). It
feeds them to the same `admission.decide` that wattcap uses, with the same
ordering (starving jobs, then priority, then FIFO), the same backfill and
reservations, and so measures what wattcap loses by not knowing, and
nothing else:

* every job is planned at its true power for its whole true run, so site
  power (PUE, node base and idle GPUs included, as in FORMAT.md) is exactly
  what decide projects, and a job starts only where it fits every step of
  its run, future cap windows included;
* no safety margin: nothing is uncertain;
* preemption off in what decide plans with: a preemptible job is planned
  through cap windows like any other instead of being admitted in the
  expectation of shedding it, so the oracle never preempts. (No cap drop
  can force one: the cap schedule is known, and a run that would not fit a
  window is not started. The one exception would be a run longer than
  decide's 14-day planning horizon reaching a window beyond it; the stress
  traces have none.)

It is a greedy reference, not an optimum: the first job in order that fits
starts, as in wattcap. Its figures are the bar the benchmarks hold wattcap's
to (`bench/bench_family.py`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..forecast import PowerForecast
from ..model import PowerPolicy
from .schedulers import JobView, Scheduler
from .trace import TraceJob


class OracleScheduler(Scheduler):
    """Plans each job at its true per-GPU power for its true duration."""

    name = "oracle"
    durations_known = True  # no margin for runs that overrun into a window

    def __init__(self, policy: PowerPolicy, jobs: Sequence[TraceJob]) -> None:
        super().__init__(policy)
        self.policy = dataclasses.replace(policy, safety_margin=0.0, preemption=False)
        self._power = {j.job_id: PowerForecast(float(j.gpu_watts), 1.0, "truth", 0) for j in jobs}
        self._duration = {j.job_id: float(j.duration_s) for j in jobs}

    def forecast(self, job: JobView) -> PowerForecast:
        return self._power[job.key]

    def shape(self, job: JobView) -> tuple[str, int]:
        # its own power: one forecast per job, not per class
        return (job.key, job.gpus)

    def duration(self, job: JobView) -> float:
        return self._duration[job.key]
