"""Per-job GPU power and duration forecasts, learned from what was measured.

A job's power is forecast per GPU for its `workloadClass`:

* a new class starts from a prior: the user's hint if given, else the GPU's
  TDP, which no job can exceed, so the first jobs of a class never overshoot;
* once jobs of the class have run, the forecast is an upper prediction bound
  from their measured mean power (Student-t style, so three samples give a
  wider bound than thirty);
* the bound's level is calibrated online: every finished job reports whether
  it drew more than it was forecast, and the level moves so the miss rate
  tends to the policy's target (adaptive conformal inference, Gibbs and
  Candès, NeurIPS 2021). A fixed quantile would be wrong whenever the
  class's spread is not Gaussian.

Only measurements enter here. The simulator and the operator both feed it
what a live site could observe; nothing reads a job's ground truth.

On a shared site the class name is a tenant's choice, so history is kept per
(namespace, class): one tenant's idle jobs of class `llm-pretrain` must not
lower another tenant's `llm-pretrain` forecasts. What other namespaces
measured for a class is pooled as a site-wide prior that can only raise a
namespace's forecast (the highest bound among them, weighed against the
namespace's own samples), never lower it. A namespace new to a class starts
from that pool; an unchecked hint is a claim, floored at a fraction of TDP,
and used only where nothing of the class has been measured.

A hint becomes data once it has been checked: every finished job that
carried one adds the ratio of what it drew to what it claimed to its
namespace's record. From `HINT_MIN_SAMPLES` checked hints on, a hinted job's
distribution (siteChance) is its class's, updated by its hint read through
that ratio (`hinted`): a namespace whose hints were close narrows its jobs'
plans; one whose hints were off by a steady factor is read through the
factor; one whose hints scatter more than the class does (or whose record a
lie has spoiled) gets its class's plan, unchanged. A hinted mean stays within
the class's own band, so one lie after an honest record costs no more than
the class already allows for. The record is per namespace, the unit a
tenant controls, and reads only the operator's own measurements.

Since class names are a tenant's choice, the histories kept are bounded
(`MAX_HISTORIES` (namespace, class) pairs): the least recently used goes
first, and `evicted` counts them (exported as a metric). A forgotten class
starts again from the pool or the prior, TDP, which never overshoots.
"""

from __future__ import annotations

import math
import operator
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from statistics import NormalDist

# Relative spread assumed when a class has too few samples to estimate one;
# also a floor, because a handful of identical samples does not prove zero spread.
MIN_REL_SPREAD = 0.02
PRIOR_REL_SPREAD = 0.05
# Floor of a measured running job's spread (siteChance): a job's level drifts
# a little between phases even when its samples agree.
MEASURED_REL_SPREAD = 0.01
HISTORY = 64  # samples kept per class: recent behaviour matters more than old
# (namespace, class) histories kept, least recently used evicted first: about
# 3 KB each, so a few MB however many classes tenants make up.
MAX_HISTORIES = 2048
CALIBRATION_STEP = 0.01
# Pseudo-samples the site-wide pool weighs as, against a namespace's own history.
POOL_WEIGHT = 5.0
# Duration quantiles a class's history is planned at: a job that cannot be shed
# is planned long (its run must clear a cap window it would still be running
# in), a preemptible one shorter (a window sheds it anyway; its planned end
# only places it around reserved jobs, where a long guess idles the cap). 0.7,
# not the median: on the shipped trace the median doubled the p50 wait (a run
# past its planned end is planned open-ended, and half of them would be), 0.7
# lowered p50 and p95 both (bench_family.py and the shipped trace, issue 16).
DURATION_QUANTILE = 0.9
PREEMPTIBLE_DURATION_QUANTILE = 0.7
# A hint below this fraction of TDP is raised to it (PowerPolicy.hintFloorFraction).
HINT_FLOOR_FRACTION = 0.5
# Checked hints (finished jobs that carried one) a namespace needs before its
# hints are read as data: fewer, and one lucky guess would narrow a plan.
HINT_MIN_SAMPLES = 5
WARMUP_S = 30.0  # a job's first half minute of work (ramp-up) says little about its steady draw
# A reading within this fraction of the idle-to-TDP span above idle is no work:
# on a 70 W / 700 W GPU, 133 W. Loaded but not computing (a model in memory,
# waiting on data or I/O) sits there, at a little above idle.
IDLE_BAND = 0.1


def _working_above(idle_watts: float, tdp_watts: float) -> float:
    """The per-GPU draw above which a reading is work, not a GPU held idle."""
    return idle_watts + IDLE_BAND * (tdp_watts - idle_watts)


def steady_samples(
    samples: Sequence[tuple[float, float]],
    idle_watts: float,
    tdp_watts: float,
    warmup_s: float = WARMUP_S,
) -> list[float]:
    """The readings of a finished job that tell its class what it draws at work.

    `samples` are (time, per-GPU watts), oldest first. An exporter labels a
    GPU with its pod from the moment the pod holds it, so a job's readings
    start at the idle level (the pod bound, its work not started: image pull,
    container start, data loading), ramp, and can end at idle again (its work
    done, its pod not yet gone). Their mean is less than what the job draws
    while it works, and a class learned from it admits its next job low, by
    as much as those idle stretches are long against the run. So:

    * a reading is *working* if it is more than `IDLE_BAND` of the idle-to-TDP
      span above idle; readings before the first working one and after the
      last are dropped: they measure the pod's wait, not the workload;
    * of the rest, those within `warmup_s` of the first working reading are
      dropped too, the ramp (a running job's plan is tightened the same way,
      `working_samples`). Counted from the first working reading,
      not the first reading: the ramp starts when the work does;
    * idle readings between working ones stay: a checkpoint or evaluation
      dip is part of how the class draws;
    * a job too short to pass its warm-up keeps all its working readings:
      with the idle ones gone, what is left of the bias is its ramp, and
      learning nothing would leave its class on the prior;
    * a job with no working reading drew idle all along: all its readings
      are kept, since that is its draw.

    The simulator's meter draws a job's samples at its true draw from its
    first tick to its last (sim/meter.py): no wait, ramp or tail to drop,
    so its learner takes the plain mean of all of them (sim/engine.py).
    """
    band = _working_above(idle_watts, tdp_watts)
    working = [i for i, (_, v) in enumerate(samples) if v > band]
    if not working:
        return [v for _, v in samples]
    run = samples[working[0] : working[-1] + 1]
    start = run[0][0] + warmup_s
    steady = [v for t, v in run if t >= start]
    return steady or [v for _, v in run]


def working_samples(
    samples: Sequence[tuple[float, float]],
    idle_watts: float,
    tdp_watts: float,
    warmup_s: float = WARMUP_S,
) -> list[float]:
    """The readings of a running job that may tighten its plan.

    Its pod is labelled with its GPUs from the moment it is bound, and its
    work can start minutes later (an image pull, a model loaded, a dataset
    staged). Tightened from those idle readings, its plan would free watts
    it takes back when its work starts, and jobs admitted into them would
    put the site over its cap. So nothing counts until a *working* reading
    (above `IDLE_BAND`, as in `steady_samples`) and its warm-up have passed;
    from then on every reading counts, idle dips included (a checkpoint is
    how it draws). A job that never leaves idle is never tightened: planned
    at its admission forecast, which costs watts, not safety.
    """
    band = _working_above(idle_watts, tdp_watts)
    for t0, v in samples:
        if v > band:
            start = t0 + warmup_s
            return [v for t, v in samples if t >= start]
    return []


@dataclass(frozen=True, slots=True)
class PowerForecast:
    """Per-GPU watts to plan for, and where the number came from."""

    gpu_watts: float
    quantile: float
    source: str  # "prior" (TDP), "hint", "pool", "history", "hinted", "measured"
    samples: int
    # A distribution instead of a bound (`Forecaster.distribution`, for
    # siteChance admission): `gpu_watts` is then the mean and this the sd;
    # 0 for a bound, which is planned as it is.
    spread_gpu_watts: float = 0.0
    # The per-job upper bound at the calibrated level, where `gpu_watts` is a
    # mean: what a finished job's draw is compared with to calibrate.
    bound_gpu_watts: float | None = None

    @property
    def calibrated_gpu_watts(self) -> float:
        """The per-job bound this forecast stands for (its watts, for a bound)."""
        return self.gpu_watts if self.bound_gpu_watts is None else self.bound_gpu_watts


@dataclass(slots=True)
class _ClassHistory:
    watts: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    durations: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    # (n, mean, sd) of `watts`, kept until the next sample: a deep queue asks
    # for the same class's forecast every cycle, and the level moves more
    # often than the samples do
    stats: tuple[int, float, float] | None = None


def moments(samples: deque[float] | list[float]) -> tuple[int, float, float]:
    """Count, mean and sample variance (n - 1; 0 for one sample)."""
    n = len(samples)
    mean = sum(samples) / n
    if n < 2:
        return n, mean, 0.0
    dev = [x - mean for x in samples]
    return n, mean, sum(map(operator.mul, dev, dev)) / (n - 1)  # a generator costs twice this


def _spread(n: int, mean: float, var: float) -> float:
    """The spread to plan with: floored (see MIN_REL_SPREAD), assumed below two samples."""
    if n < 2:
        return PRIOR_REL_SPREAD * mean
    return max(math.sqrt(var), MIN_REL_SPREAD * mean)


def _stats(samples: deque[float] | list[float]) -> tuple[int, float, float]:
    """Count, mean and spread of the samples."""
    n, mean, var = moments(samples)
    return n, mean, _spread(n, mean, var)


@lru_cache(maxsize=256)
def _z(level: float) -> float:
    return NormalDist().inv_cdf(level)


def _bound(stats: tuple[int, float, float], level: float) -> float:
    """Upper prediction bound for one new draw at `level`."""
    n, mean, sd = stats
    z = _z(level)
    df = max(n - 1, 1)
    # Cornish-Fisher style widening of z toward Student's t for small samples.
    t = z + (z**3 + z) / (4 * df)
    return mean + t * sd * math.sqrt(1 + 1 / n)


def hinted(mean: float, bound: float, hint_mean: float, hint_bound: float) -> tuple[float, float]:
    """(mean, bound) of a job's draw from its class's (mean, bound) and its
    checked hint's, both bounds at one level.

    The class is the prior and the hint one reading of the job's own draw, its
    error independent of where the job sits in its class: the normal update,
    each weighed by the inverse square of its spread (bound - mean). A hint
    whose record scatters more than the class adds almost nothing; one
    twice as tight as the class takes four fifths of the weight.
    """
    a, b = bound - mean, hint_bound - hint_mean
    if a <= 0.0 or b <= 0.0:
        return (mean, bound) if a <= 0.0 else (hint_mean, hint_bound)
    wa, wb = 1.0 / (a * a), 1.0 / (b * b)
    m = (wa * mean + wb * hint_mean) / (wa + wb)
    return m, m + 1.0 / math.sqrt(wa + wb)


def _usable(hint: float | None) -> float | None:
    """The hint if it is a positive finite number (the API server admits
    nothing else, but a caller might), else None."""
    return hint if hint is not None and math.isfinite(hint) and hint > 0.0 else None


def _within(mean: float, bound: float, lo: float, hi: float) -> tuple[float, float]:
    """(mean, bound) moved together so the mean lies in [lo, hi]."""
    shift = min(max(mean, lo), hi) - mean
    return mean + shift, bound + shift


class Forecaster:
    """Learns per-class power and duration; calibrates its own miss rate."""

    def __init__(
        self,
        gpu_tdp_watts: float,
        gpu_idle_watts: float,
        coverage: float = 0.95,
        duration_quantile: float = DURATION_QUANTILE,
        hint_floor_fraction: float = HINT_FLOOR_FRACTION,
        preemptible_duration_quantile: float = PREEMPTIBLE_DURATION_QUANTILE,
    ) -> None:
        self.tdp = gpu_tdp_watts
        self.idle = gpu_idle_watts
        self.coverage = coverage
        self.level = coverage  # the calibrated quantile level actually used
        self.duration_quantile = duration_quantile
        self.preemptible_duration_quantile = preemptible_duration_quantile
        self.hint_floor_fraction = hint_floor_fraction
        # class -> namespace -> history
        self._classes: dict[str, dict[str, _ClassHistory]] = {}
        # (class, namespace) least recently used first, for the bound
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.evicted = 0  # histories dropped for the bound, ever
        self._unreported = 0  # of them, not yet taken by `take_evicted`
        self.misses = 0
        self.outcomes = 0
        # namespace -> what its jobs drew over what they hinted, recent last
        self._hint_ratios: OrderedDict[str, deque[float]] = OrderedDict()
        self.hint_min_samples: float = HINT_MIN_SAMPLES

    # ------------------------------------------------------------------ power

    def forecast(
        self,
        workload_class: str,
        hint_gpu_watts: float | None = None,
        namespace: str = "",
        hint_floor_fraction: float | None = None,
    ) -> PowerForecast:
        """Per-GPU watts to reserve for a job of this class that has not run yet.

        The namespace's own history first, raised toward the site-wide pool of
        the class; else the pool; else the hint (floored); else TDP.
        """
        by_ns = self._classes.get(workload_class)
        own = by_ns.get(namespace) if by_ns else None
        pool = self._pool_bound(by_ns, namespace) if by_ns else None
        if own is not None:
            self._recent.move_to_end((workload_class, namespace))
        if own is not None and own.watts:
            watts = self._own_bound(own)
            if pool is not None and pool > watts:
                n = len(own.watts)
                watts = (n * watts + POOL_WEIGHT * pool) / (n + POOL_WEIGHT)
            return PowerForecast(self._clamp(watts), self.level, "history", len(own.watts))
        if pool is not None:
            return PowerForecast(self._clamp(pool), self.level, "pool", 0)
        if hint_gpu_watts is not None:
            frac = self.hint_floor_fraction if hint_floor_fraction is None else hint_floor_fraction
            floored = max(hint_gpu_watts, frac * self.tdp)
            return PowerForecast(self._clamp(floored), self.level, "hint", 0)
        return PowerForecast(self.tdp, 1.0, "prior", 0)

    def distribution(
        self,
        workload_class: str,
        hint_gpu_watts: float | None = None,
        namespace: str = "",
        hint_floor_fraction: float | None = None,
    ) -> PowerForecast:
        """A job's draw as a mean and a spread, for siteChance admission (chance.py).

        From the namespace's own history of the class, when the site-wide
        pool would not raise it: the mean of the samples, and the spread
        that puts mean + z sd (z of `coverageTarget`) at the calibrated
        per-job bound, so small samples widen it (Student-t) and the online
        calibration moves it as it moves the bound. Anything else (a pool,
        a hint, TDP) is a bound with no spread: planned as `forecast` plans it.
        """
        f = self.forecast(
            workload_class,
            hint_gpu_watts,
            namespace=namespace,
            hint_floor_fraction=hint_floor_fraction,
        )
        hint = self._hint_estimate(namespace, hint_gpu_watts)
        if f.source == "hint" and hint is not None:
            # nothing of the class measured anywhere: the checked hint alone,
            # its mean no lower than an unchecked hint's floor
            frac = self.hint_floor_fraction if hint_floor_fraction is None else hint_floor_fraction
            return self._as_distribution(*_within(*hint, frac * self.tdp, self.tdp), "hinted", 0)
        if f.source != "history":
            return f
        hist = self._classes[workload_class][namespace]
        if hist.stats is None:
            hist.stats = _stats(hist.watts)
        n, mean, _ = hist.stats
        if f.gpu_watts != self._clamp(self._own_bound(hist)):
            return f  # raised toward the pool: keep the bound
        mean = self._clamp(mean)
        if hint is not None and 0.0 < hint[1] - hint[0] < f.gpu_watts - mean:
            # only a record tighter than the class: a scattered one, or one a
            # lie has spoiled, leaves the class's plan as it was; and the mean
            # stays within the class's own band (mean -/+ its bound's margin),
            # so a lie after an honest record moves a plan no further than
            # the class already allows for
            margin = f.gpu_watts - mean
            m, b = hinted(mean, f.gpu_watts, *hint)
            return self._as_distribution(*_within(m, b, mean - margin, mean + margin), "hinted", n)
        return self._as_distribution(mean, f.gpu_watts, "history", n)

    def _as_distribution(self, mean: float, bound: float, source: str, n: int) -> PowerForecast:
        """A mean and its bound at the calibrated level, as siteChance plans them."""
        mean, bound = self._clamp(mean), self._clamp(bound)
        spread = max(0.0, bound - mean) / _z(self.coverage)
        return PowerForecast(mean, self.level, source, n, spread, max(bound, mean))

    def _hint_estimate(self, namespace: str, hint: float | None) -> tuple[float, float] | None:
        """(mean, bound at the calibrated level) of a job's draw read from its
        hint through its namespace's record; None before HINT_MIN_SAMPLES."""
        hint = _usable(hint)
        record = None if hint is None else self.hint_record(namespace)
        if hint is None or record is None or record[0] < self.hint_min_samples:
            return None
        n, r, sd = record
        sd = max(sd, MIN_REL_SPREAD * r)
        return r * hint, _bound((n, r * hint, sd * hint), self.level)

    def hint_record(self, namespace: str) -> tuple[int, float, float] | None:
        """(checked hints, mean and sd of drawn / hinted) of a namespace: what
        its hints have earned so far."""
        ratios = self._hint_ratios.get(namespace)
        if not ratios:
            return None
        n, r, var = moments(ratios)
        return n, r, math.sqrt(var)

    def measured(self, admitted: PowerForecast, n: int, mean: float, var: float) -> PowerForecast:
        """A running job's draw once n of its own samples were seen (their
        mean and variance), as a distribution: its measured level, with the
        spread of that level's estimate (the samples' sd / sqrt(n), at least
        MEASURED_REL_SPREAD of it). Unlike `running`, it may rise above what the
        job was admitted at: the plan follows what is measured, which is what
        makes planning new jobs at a mean safe."""
        if n < 3:
            return admitted
        # the uncertainty of its level, not the samples' scatter: a job's draw
        # is judged against the cap as an average (the grace period)
        spread = max(math.sqrt(max(var, 0.0) / n), MEASURED_REL_SPREAD * mean)
        return PowerForecast(self._clamp(mean), 0.5, "measured", n, spread)

    def measured_from(self, admitted: PowerForecast, samples: list[float]) -> PowerForecast:
        """`measured` from the samples themselves (the operator keeps a list)."""
        if len(samples) < 3:
            return admitted
        return self.measured(admitted, *moments(samples))

    def _own_bound(self, hist: _ClassHistory) -> float:
        if hist.stats is None:
            hist.stats = _stats(hist.watts)
        return _bound(hist.stats, self.level)

    def _pool_bound(self, by_ns: dict[str, _ClassHistory], namespace: str) -> float | None:
        """The highest bound among the other namespaces that measured this class:
        a tenant's low draws never lower another's plan."""
        best = None
        for ns, hist in by_ns.items():
            if ns != namespace and hist.watts:
                b = self._own_bound(hist)
                if best is None or b > best:
                    best = b
        return best

    def running(self, admitted: PowerForecast, measured_samples: list[float]) -> PowerForecast:
        """Tighten a running job's reservation once its own draw has been seen.

        A job admitted at TDP that measures 400 W per GPU holds 300 W per GPU
        the site could give to waiting work. Never raise above the admission
        forecast here: a job drawing more than forecast is the measured-power
        enforcement's business, not a silent re-forecast.
        """
        if len(measured_samples) < 3:
            return admitted
        return self.running_moments(admitted, *moments(measured_samples))

    def running_moments(
        self, admitted: PowerForecast, n: int, mean: float, var: float
    ) -> PowerForecast:
        """`running` from the samples' count, mean and variance (`moments`):
        the simulator sums its samples itself rather than list them."""
        if n < 3:
            return admitted
        bound = _bound((n, mean, _spread(n, mean, var)), self.level)
        if bound >= admitted.gpu_watts:
            return admitted
        return PowerForecast(self._clamp(bound), self.level, "measured", n)

    def observe(
        self,
        workload_class: str,
        measured_gpu_watts: float,
        duration_s: float | None,
        forecast_gpu_watts: float | None,
        namespace: str = "",
        hint_gpu_watts: float | None = None,
    ) -> None:
        """A job of this class finished: learn its measured mean power and duration.

        `forecast_gpu_watts` is what it was admitted with; comparing the two
        is what calibrates the quantile level. Prior (TDP) forecasts cannot be
        missed and would only push the level down, so they are not counted.
        `hint_gpu_watts`, the hint it carried, is checked against what it drew.
        """
        hint = _usable(hint_gpu_watts)
        if hint is not None and math.isfinite(measured_gpu_watts) and measured_gpu_watts > 0:
            self._check_hint(namespace, measured_gpu_watts / hint)
        hist = self._history(workload_class, namespace)
        if forecast_gpu_watts is not None and forecast_gpu_watts < self.tdp:
            miss = 1.0 if measured_gpu_watts > forecast_gpu_watts else 0.0
            self.misses += int(miss)
            self.outcomes += 1
            target_miss = 1.0 - self.coverage
            self.level = min(0.9999, max(0.5, self.level + CALIBRATION_STEP * (miss - target_miss)))
        if math.isfinite(measured_gpu_watts) and measured_gpu_watts > 0:
            hist.watts.append(measured_gpu_watts)
            hist.stats = None
        if duration_s is not None and duration_s > 0:
            hist.durations.append(duration_s)

    def _check_hint(self, namespace: str, ratio: float) -> None:
        """Add one checked hint to the namespace's record (records bounded as histories)."""
        ratios = self._hint_ratios.get(namespace)
        if ratios is None:
            ratios = self._hint_ratios[namespace] = deque(maxlen=HISTORY)
            while len(self._hint_ratios) > MAX_HISTORIES:
                self._hint_ratios.popitem(last=False)
        else:
            self._hint_ratios.move_to_end(namespace)
        ratios.append(ratio)

    def _history(self, workload_class: str, namespace: str) -> _ClassHistory:
        """The (class, namespace) history, made if new, evicting the least
        recently used beyond MAX_HISTORIES."""
        key = (workload_class, namespace)
        by_ns = self._classes.setdefault(workload_class, {})
        hist = by_ns.get(namespace)
        if hist is not None:
            self._recent.move_to_end(key)
            return hist
        hist = by_ns[namespace] = _ClassHistory()
        self._recent[key] = None
        while len(self._recent) > MAX_HISTORIES:
            (old_class, old_ns), _ = self._recent.popitem(last=False)
            gone = self._classes[old_class]
            del gone[old_ns]
            if not gone:
                del self._classes[old_class]
            self.evicted += 1
            self._unreported += 1
        return hist

    def _clamp(self, watts: float) -> float:
        return min(self.tdp, max(self.idle, watts))

    # ------------------------------------------------------------------ duration

    def duration(
        self,
        workload_class: str,
        user_estimate_s: float | None,
        default_s: float,
        namespace: str = "",
        preemptible: bool = False,
    ) -> float:
        """Seconds to plan a job for: the user's estimate, else a class quantile
        from the namespace's history, else the longest other namespaces' say.

        `preemptible`: the job can be shed (preemptible, under a policy that
        preempts). A cap window sheds it rather than plan it through, so its
        planned end only decides where it fits around reserved jobs; it is
        planned at a lower quantile (PREEMPTIBLE_DURATION_QUANTILE), as the
        upper one keeps it out of gaps it mostly fits (Tsafrir, Etsion and
        Feitelson, 2007: backfilling on typical run times beats backfilling
        on long guesses). One that runs past it is planned open-ended, as
        any job."""
        if user_estimate_s is not None and user_estimate_s > 0:
            return user_estimate_s
        q = self.preemptible_duration_quantile if preemptible else self.duration_quantile
        by_ns = self._classes.get(workload_class) or {}
        own = by_ns.get(namespace)
        if own is not None and own.durations:
            return self._duration_of(own, q)
        others = [self._duration_of(h, q) for ns, h in by_ns.items() if h.durations]
        return max(others) if others else default_s

    def _duration_of(self, hist: _ClassHistory, quantile: float) -> float:
        """In whole seconds (rounded up): the operator stores a planned
        duration on the Job as an integer, and plans the running job from it."""
        ordered = sorted(hist.durations)
        if len(ordered) < 5:
            return float(math.ceil(ordered[-1] * 1.2))
        idx = min(len(ordered) - 1, math.ceil(quantile * len(ordered)) - 1)
        return float(math.ceil(ordered[idx]))

    # ------------------------------------------------------------------ introspection

    def classes(self) -> dict[str, int]:
        """Samples per class (all namespaces together), for status and the CLI."""
        return {
            name: sum(len(h.watts) for h in by_ns.values()) for name, by_ns in self._classes.items()
        }

    def histories(self) -> int:
        """(namespace, class) histories kept now (at most MAX_HISTORIES)."""
        return len(self._recent)

    def take_evicted(self) -> int:
        """Histories evicted since the last call (for a counter metric)."""
        n, self._unreported = self._unreported, 0
        return n

    def miss_rate(self) -> float | None:
        return self.misses / self.outcomes if self.outcomes else None
