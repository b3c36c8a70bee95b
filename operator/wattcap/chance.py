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
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from .model import ADMISSION_MODELS

SITE_CHANCE, PER_JOB_QUANTILE = ADMISSION_MODELS


def z_of(coverage: float) -> float:
    """The normal quantile of the coverage target (0.95 -> 1.645)."""
    return NormalDist().inv_cdf(coverage)


def _increments(base: np.ndarray, var: np.ndarray) -> np.ndarray:
    """sqrt(base + var) - sqrt(base), without cancellation for a large base."""
    top = np.sqrt(base + var)
    den = top + np.sqrt(base)
    return np.divide(var, den, out=np.zeros_like(var), where=den > 0)


def _sums_before(v: np.ndarray) -> np.ndarray:
    """s[k] = v[0] + ... + v[k-1], for k = 0 .. len(v).

    Why a base is always such a sum, never the difference of two: variances
    span many scales, and a small base taken as a large sum less another
    keeps only the large one's rounding (6e5 - 6e5 for 1e-10): the charges
    then fell short of the target. A sum of non-negative terms is close in
    relative terms, whatever their scales."""
    return np.concatenate(([0.0], np.cumsum(v)))


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
    m = mean.size
    if m == 0 or z <= 0.0:
        return mean.astype(float, copy=True)
    var = sd * sd
    base = np.zeros(m)
    pre = preemptible.astype(bool)
    npi = np.flatnonzero(~pre)
    np_ends = np.zeros(0)
    np_cum = np.zeros(1)
    if npi.size:
        order = npi[np.lexsort((npi, -end[npi]))]  # latest end first, ties by position
        np_cum = _sums_before(var[order])  # np_cum[k]: the k latest ends
        base[order] = np_cum[:-1]
        np_ends = end[order][::-1]  # ascending
    pi = np.flatnonzero(pre)
    if pi.size:
        order = pi[np.lexsort((pi, -end[pi]))]
        # non-preemptible variance with end >= this job's end: the latest ones
        later = np_ends.size - np.searchsorted(np_ends, end[order], side="left")
        base[order] = np_cum[later] + _sums_before(var[order])[:-1]
    return mean + z * math.sqrt(rho) * sd + z * math.sqrt(1.0 - rho) * _increments(base, var)


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
    var = sd * sd
    run_var = run_sd * run_sd
    run_pre = run_preemptible.astype(bool)

    def later(sel: np.ndarray) -> np.ndarray:
        """Variance of the running jobs in `sel` ending at or after each queued end."""
        ends = run_end[sel]
        order = np.argsort(ends, kind="stable")
        cum = _sums_before(run_var[sel][order][::-1])  # cum[k]: the k latest ends
        below = np.searchsorted(ends[order], end, side="left")
        return cum[ends.size - below]

    base = later(~run_pre)
    if run_pre.any():
        base = base + np.where(preemptible.astype(bool), later(run_pre), 0.0)
    return mean + z * math.sqrt(rho) * sd + z * math.sqrt(1.0 - rho) * _increments(base, var)


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
