"""The simulator's schedulers: four ways to feed ONE decision core.

All four hand the same `admission.decide` a snapshot; they differ only in
what they tell it about power:

* `wattcap`: per-class forecasts learned from measured power only
  (forecast.Forecaster), running jobs tightened from their own samples, and
  the measured site power in the snapshot (so measured overshoot is shed).
* `static-tdp`: every GPU planned at the policy's TDP; nothing measured.
* `gpu-only`: the cap is lifted out of reach, so only GPUs count.
* `oracle`: a clairvoyant reference for benchmarks, never the operator's:
  each job planned at its true power for its true duration (`oracle.py`).

A scheduler sees a job through `JobView`, which has no `gpu_watts` and no
true `duration_s`: it cannot read the ground truth even by accident. Only
the oracle is handed the trace itself, by name, to know what no live
scheduler can.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from ..chance import SITE_CHANCE
from ..forecast import Forecaster, PowerForecast
from ..model import PowerPolicy
from .trace import TraceJob

SCHEDULERS = ("wattcap", "static-tdp", "gpu-only", "oracle")
# The one namespace a trace's jobs are in: the forecaster keys history by
# (class, namespace), as the operator does, and the operator's view of a
# replay (tests/unit/operator_view.py) puts its TrainingJobs here.
SIM_NAMESPACE = "sim"
UNBOUNDED_CAP_W = 1e15  # "no cap": far above any site, still a finite number


@dataclass(frozen=True, slots=True)
class JobView:
    """What a live operator knows about a job before it has run: no ground truth."""

    key: str
    workload_class: str
    replicas: int
    gpus_per_replica: int
    priority: int
    preemptible: bool
    submit_s: float
    est_duration_s: float | None = None
    gpu_watts_hint: float | None = None

    @property
    def gpus(self) -> int:
        return self.replicas * self.gpus_per_replica


class Scheduler:
    """The interface the engine drives; subclasses choose what power to plan with."""

    name = "base"
    measures = False  # wants measured power (control ticks, measured site in the snapshot)
    durations_known = False  # plans true run times (the oracle): decide adds no margin

    def __init__(self, policy: PowerPolicy) -> None:
        self.site_policy = policy
        self.policy = policy  # the policy handed to admission.decide

    def forecast(self, job: JobView) -> PowerForecast:
        """Per-GPU watts to plan a queued job with."""
        raise NotImplementedError

    def shape(self, job: JobView) -> tuple[str, int]:
        """What `forecast` depends on, with the job's GPUs second: the engine
        asks for one forecast per shape in a cycle and indexes the queue by it.
        A class forecast is shared by every job of the class."""
        return (job.workload_class, job.gpus)

    def duration(self, job: JobView) -> float:
        """Seconds to plan the job's whole run for."""
        return job.est_duration_s if job.est_duration_s else self.policy.default_duration_s

    def tighten(self, admitted: PowerForecast, n: int, mean: float, var: float) -> PowerForecast:
        """A running job's reservation after n of its own samples were seen
        (their mean and variance)."""
        return admitted

    def measured_floor(self, n: int, mean: float, var: float) -> PowerForecast | None:
        """What a preempted job is planned at, at least, once n of its own
        samples were seen: nothing, for a scheduler that measures nothing."""
        return None

    def completed(
        self, job: JobView, mean_measured_w: float | None, run_s: float, admitted: PowerForecast
    ) -> None:
        """A job finished: learn from what was measured of it."""

    def overdrew(
        self, job: JobView, measured_w: float | None, admitted: PowerForecast | None
    ) -> None:
        """A job was shed drawing more than it was admitted at: learn it now."""

    def miss_rate(self) -> float | None:
        return None


class WattcapScheduler(Scheduler):
    """Forecaster per workload class, fed only measured data."""

    name = "wattcap"
    measures = True

    def __init__(self, policy: PowerPolicy) -> None:
        super().__init__(policy)
        self.forecaster = Forecaster(
            policy.gpu_tdp_watts, policy.gpu_idle_watts, coverage=policy.coverage
        )
        # Per-class caches, dropped when the class learns: queued jobs of one
        # class share a forecast, and a deep queue asks for it every cycle.
        self._power: dict[str | tuple[str, float], PowerForecast] = {}
        self._duration: dict[tuple[str, bool], float] = {}
        self._tdp = PowerForecast(policy.gpu_tdp_watts, 1.0, "prior", 0)
        chance = policy.admission_model == SITE_CHANCE
        # siteChance plans a job at its class's mean and spread (chance.py)
        self._forecast = self.forecaster.distribution if chance else self.forecaster.forecast
        self._running = self.forecaster.measured if chance else self.forecaster.running_moments

    def forecast(self, job: JobView) -> PowerForecast:
        # by class alone when unhinted (a deep queue asks every cycle), else by class and hint
        hint = job.gpu_watts_hint
        key = job.workload_class if hint is None else (job.workload_class, hint)
        f = self._power.get(key)
        if f is None:
            f = self._power[key] = self._forecast(
                job.workload_class,
                job.gpu_watts_hint,
                namespace=SIM_NAMESPACE,
                hint_floor_fraction=self.policy.hint_floor_fraction,
            )
        return f

    def shape(self, job: JobView) -> tuple[str, int]:
        # a hinted job's forecast is its class's and its hint's (Forecaster.distribution)
        if job.gpu_watts_hint is None:
            return (job.workload_class, job.gpus)
        return (f"{job.workload_class}\0{job.gpu_watts_hint!r}", job.gpus)

    def duration(self, job: JobView) -> float:
        if job.est_duration_s:
            return job.est_duration_s
        # as the operator: a job a cap window can shed is planned shorter (forecast.py)
        shed = job.preemptible and self.policy.preemption
        key = (job.workload_class, shed)
        d = self._duration.get(key)
        if d is None:
            d = self._duration[key] = self.forecaster.duration(
                job.workload_class,
                None,
                self.policy.default_duration_s,
                namespace=SIM_NAMESPACE,
                preemptible=shed,
            )
        return d

    def tighten(self, admitted: PowerForecast, n: int, mean: float, var: float) -> PowerForecast:
        return self._running(admitted, n, mean, var)

    def measured_floor(self, n: int, mean: float, var: float) -> PowerForecast | None:
        # the operator's rule for a job preempted after running (controller.py)
        return self.forecaster.running_moments(self._tdp, n, mean, var)

    def completed(
        self, job: JobView, mean_measured_w: float | None, run_s: float, admitted: PowerForecast
    ) -> None:
        watts = float("nan") if mean_measured_w is None else mean_measured_w
        # Without a sample there is nothing to calibrate against: learn the duration only.
        forecast = admitted.calibrated_gpu_watts if mean_measured_w is not None else None
        self.forecaster.observe(
            job.workload_class,
            watts,
            run_s,
            forecast,
            namespace=SIM_NAMESPACE,
            hint_gpu_watts=job.gpu_watts_hint,
        )
        self._duration.pop((job.workload_class, False), None)
        self._duration.pop((job.workload_class, True), None)
        if forecast is not None:
            # a sample: the class, the calibrated level and the namespace's
            # hint record moved, and every cached bound with them (without
            # one, only the class's durations did)
            self._power.clear()

    def overdrew(
        self, job: JobView, measured_w: float | None, admitted: PowerForecast | None
    ) -> None:
        # the operator's rule (controller._learn_overdraws): power only, no duration
        if measured_w is None:
            return
        self.forecaster.observe(
            job.workload_class,
            measured_w,
            None,
            None if admitted is None else admitted.calibrated_gpu_watts,
            namespace=SIM_NAMESPACE,
            hint_gpu_watts=job.gpu_watts_hint,
        )
        self._power.clear()

    def miss_rate(self) -> float | None:
        return self.forecaster.miss_rate()


class StaticTdpScheduler(Scheduler):
    """Every GPU planned at TDP, forever; no measurement."""

    name = "static-tdp"

    def __init__(self, policy: PowerPolicy) -> None:
        super().__init__(policy)
        self._tdp = PowerForecast(policy.gpu_tdp_watts, 1.0, "prior", 0)

    def forecast(self, job: JobView) -> PowerForecast:
        return self._tdp


class GpuOnlyScheduler(StaticTdpScheduler):
    """What a plain GPU scheduler does: the cap is out of reach, only GPUs count."""

    name = "gpu-only"

    def __init__(self, policy: PowerPolicy) -> None:
        super().__init__(policy)
        self.policy = dataclasses.replace(policy, cap_watts=UNBOUNDED_CAP_W, cap_schedule=())


def make_scheduler(
    name: str, policy: PowerPolicy, jobs: Sequence[TraceJob] | None = None
) -> Scheduler:
    """The scheduler called `name`; `jobs` (the trace, ground truth) only for the oracle."""
    if name == "oracle":
        if jobs is None:
            raise ValueError("the oracle scheduler needs the trace (jobs=...)")
        from .oracle import OracleScheduler

        return OracleScheduler(policy, jobs)
    if name == "wattcap":
        return WattcapScheduler(policy)
    if name == "static-tdp":
        return StaticTdpScheduler(policy)
    if name == "gpu-only":
        return GpuOnlyScheduler(policy)
    raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
