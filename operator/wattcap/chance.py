"""Site-level chance-constrained admission: plan the site's draw as a sum of
distributions, not a stack of per-job upper quantiles. Pure: no I/O.

Why: planning every job at its own upper quantile (mean + z sd each) plans
the site at mean + z * (sum of sds), but N jobs that vary independently
spread like sqrt(N), not N. On a site with a few hundred jobs most of that
reserve is never drawn, and the cap it holds is what waiting jobs need.

The model (`PowerPolicy.admissionModel: siteChance`):

* job i draws X_i = mu_i + sd_i * (sqrt(1 - rho) e_i + sqrt(rho) h_c(i)),
  with e_i and h_c independent standard normals: jobs of one workload class
  share a common part (correlation `rho`, the policy's `classCorrelation`),
  jobs of different classes vary independently. A measured running job's
  mu and sd are its own samples' mean and spread; one not measured yet
  carries its class forecast's (`Forecaster.distribution`); a job with no
  history (a prior at TDP, a hint) has sd 0: it is planned as today.
* the site's draw, a sum of many such terms, is taken as normal (a normal
  approximation of the sum), so it stays within mean + z sd(sum) with
  probability `coverageTarget` (z its normal quantile).
* the class-common part is bounded without knowing the classes:
  sd(sum) <= sqrt(1 - rho) sqrt(sum sd_i^2) + sqrt(rho) sum sd_i. So rho = 1
  gives back the per-job quantile (every job pays z sd_i in full) and rho = 0
  the independent sqrt(N) sum; the default (0.3) was chosen on the stress family (bench_family.py).

The admission profile (`profile.py`) holds one number per job, so the site
term is split into per-job charges: charge_i = mu_i + z sqrt(rho) sd_i +
z sqrt(1 - rho) * (sqrt(B_i + sd_i^2) - sqrt(B_i)), where B_i is the
variance of jobs sure to run beside job i through its whole run (see
`running_charges`). At every step of the plan the charges of the jobs
running then sum to at least mean + z sd of their sum (the increments
telescope along jobs ordered by end, and a smaller base only raises an
increment), so a job is admitted only while P(site draw > usable cap) <=
1 - coverageTarget at every step it runs through, cap windows included.

The charges' arithmetic runs as compiled loops (`profile.chance_running`,
`profile.chance_queued`): decide charges every running job every cycle,
and a replay runs hundreds of thousands of cycles. The loops sum as
numpy's cumsum does, so the figures are those of the numpy model to the
bit (tests/unit/test_profile.py holds them to it). decide calls them
through `profile.chance_charge`, `chance_queued_jobs` and
`chance_grows_in`, which also plan the ends and read the queued jobs'
columns in the same call (the numpy steps around the charges had come to
cost more than the charges); the same tests hold those to the functions
here.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from .model import ADMISSION_MODELS
from .profile import chance_queued, chance_running

SITE_CHANCE, PER_JOB_QUANTILE = ADMISSION_MODELS


def z_of(coverage: float) -> float:
    """The normal quantile of the coverage target (0.95 -> 1.645)."""
    return NormalDist().inv_cdf(coverage)


def running_charges(
    mean: np.ndarray,
    sd: np.ndarray,
    end: np.ndarray,
    preemptible: np.ndarray,
    z: float,
    rho: float,
) -> np.ndarray:
    """Each running job's charge (site watts): its mean plus its share of the
    site's spread reserve.

    Jobs are chained non-preemptible first, each kind latest end first. A
    job's base is what runs beside it at every step of its run: the
    non-preemptible jobs ending no earlier, and for a preemptible job also
    the preemptible ones before it (a cap window that sheds them sheds it
    too). At any step, the jobs running form a prefix of each kind, so their
    increments add up to at least the sd of their sum.
    """
    if mean.size == 0 or z <= 0.0:
        return mean.astype(float, copy=True)
    return chance_running(_f64(mean), _f64(sd), _f64(end), flags(preemptible), *weights(z, rho))


def queued_charges(
    mean: np.ndarray,
    sd: np.ndarray,
    end: np.ndarray,
    preemptible: np.ndarray,
    run_sd: np.ndarray,
    run_end: np.ndarray,
    run_preemptible: np.ndarray,
    z: float,
    rho: float,
) -> np.ndarray:
    """What each queued job would add to the plan if admitted now.

    Its base is the variance of running jobs sure to run beside it through
    its whole run (ending no earlier than it; preemptible ones only for a
    preemptible job, as a cap window sheds those). Jobs admitted in the
    same pass are left out of the base, which only raises the charge; the
    pass after an admission plans them as running (`admission.decide`).
    """
    if mean.size == 0 or z <= 0.0:
        return mean.astype(float, copy=True)
    return chance_queued(
        _f64(mean),
        _f64(sd),
        _f64(end),
        flags(preemptible),
        _f64(run_sd),
        _f64(run_end),
        flags(run_preemptible),
        *weights(z, rho),
    )


def weights(z: float, rho: float) -> tuple[float, float]:
    """(z sqrt(rho), z sqrt(1 - rho)): per watt of a job's sd, and of its increment."""
    return z * math.sqrt(rho), z * math.sqrt(1.0 - rho)


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=float)


def flags(a: np.ndarray) -> np.ndarray:
    """Booleans as the compiled loops take them (one byte each, 0 or 1)."""
    return np.asarray(a, dtype=bool).view(np.uint8)


def base_shrinks_in(
    end: float,
    preemptible: bool,
    run_sd: np.ndarray,
    run_end: np.ndarray,
    run_preemptible: np.ndarray,
) -> float:
    """Seconds until a queued job's base (`queued_charges`) loses a running
    job as time passes: its planned end moves with now, and a running job
    ending before it no longer runs beside it throughout. Until then its
    charge stays as it is (inf: never, before the running jobs change).
    A caller that decides only at events decides again then."""
    sel = (run_end >= end) & (run_sd > 0.0)
    if not preemptible:
        sel &= ~run_preemptible.astype(bool)
    if not sel.any():
        return math.inf
    return float(run_end[sel].min() - end)


def exceedance(
    mean: np.ndarray, sd: np.ndarray, classes: list[str], rho: float, room: float
) -> float:
    """P(sum of the jobs' draws > room) under the model, classes known: the
    exact normal tail that the charges bound from above (for tests and
    explanations; admission never needs the classes)."""
    if mean.size == 0:
        return 0.0 if room >= 0 else 1.0
    per_class: dict[str, float] = {}
    for c, s in zip(classes, sd.tolist(), strict=True):
        per_class[c] = per_class.get(c, 0.0) + s
    var = (1.0 - rho) * float(np.sum(sd * sd)) + rho * sum(s * s for s in per_class.values())
    mu = float(np.sum(mean))
    if var <= 0.0:
        return 0.0 if mu <= room else 1.0
    return 1.0 - NormalDist(mu, math.sqrt(var)).cdf(room)
