"""The simulated instruments: what a live site's Prometheus would show.

Two instruments, as on a real site, each read once per control tick:

* a **site meter** at the feed: true site power x (1 + N(0, meter_noise)),
  plus the spread the GPUs' own noise gives the sum. It is one draw per
  tick, whatever runs: the replay reads it every tick to see an excursion
  over the cap, and a per-job sum there would cost a draw per running job.
* a **per-job exporter** (DCGM-like): truth x (1 + N(0, job_noise)) per
  GPU, clipped to [GPU idle, TDP], one sample per tick the job runs
  through. A job's samples (`JobSamples`) are drawn as one block when its
  run starts, one per tick the run can pass through, and grown when a
  preempted job resumes. The engine
  counts the ticks a job has run through and reads no sample beyond that
  count, so drawing ahead shows the scheduler nothing early; the samples
  are independent given the truth, so the block changes no distribution.

All draws come from one seeded stream, so a replay is reproducible. The
engine draws a run's samples when it starts and the site readings tick by
tick (a block drawn ahead gives back what it did not use), so the stream is
spent in the same order by a replay that decides at other moments but
starts the same jobs at the same times (`SimConfig.every_tick`).
"""

from __future__ import annotations

import math

import numpy as np

from .meter_math import exporter_samples, prefix_mean, window_moments

POOL_SIZE = 1 << 16  # normals drawn from the generator at a time


class Meter:
    """Noise model and random stream of the site meter and job exporters."""

    def __init__(
        self,
        seed: int,
        job_noise: float,
        meter_noise: float,
        pue: float,
        gpu_idle_watts: float,
        gpu_tdp_watts: float,
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.job_noise, self.meter_noise = job_noise, meter_noise
        self.pue, self.idle, self.tdp = pue, gpu_idle_watts, gpu_tdp_watts
        self._pool = np.empty(0)  # normals drawn ahead; the next unused is at _pos
        self._pos = 0

    def normals(self, m: int) -> np.ndarray:
        """The stream's next m standard normals. They are drawn ahead in chunks
        (a stream split into draws of any sizes yields the same numbers), so
        one reading costs no generator call of its own."""
        p = self._pos
        pool = self._pool
        if p + m > pool.size:
            rest = pool[p:]
            pool = np.concatenate((rest, self.rng.standard_normal(max(POOL_SIZE, m - rest.size))))
            self._pool = pool
            p = 0
        self._pos = p + m
        return pool[p : p + m]

    def unread(self, m: int) -> None:
        """Put back the last m normals drawn: they were not used, and the next
        draw returns them. So the stream is spent as if each tick were read on
        its own, however the ticks were drawn in blocks."""
        self._pos -= m

    def site_sd(self, site_w: float, job_sq_w2: float) -> float:
        """Spread of one site reading: the meter's own, and the GPUs' noise
        summed over jobs (`job_sq_w2` = sum over running jobs of
        (GPUs x true watts per GPU)^2)."""
        gpu = self.pue * self.job_noise
        return math.sqrt(max(gpu * gpu * job_sq_w2, 0.0) + (self.meter_noise * site_w) ** 2)

    def site_readings(self, site_w: float, sd: float, k: int) -> np.ndarray:
        """k consecutive site readings while true site power is `site_w`."""
        out = self.normals(k) * sd
        out += site_w
        return out

    def job_samples(self, gpu_watts: float, m: int) -> np.ndarray:
        """m consecutive per-GPU samples of a job whose true draw is `gpu_watts`."""
        return exporter_samples(self.normals(m), self.job_noise, gpu_watts, self.idle, self.tdp)


class JobSamples:
    """One job's exporter samples: sample i is its reading at the i-th tick it
    ran through."""

    __slots__ = ("_meter", "truth", "x")

    def __init__(self, meter: Meter, truth: float, m: int) -> None:
        self._meter, self.truth = meter, truth
        self.x = meter.job_samples(truth, m)

    def ensure(self, m: int) -> None:
        """Have at least m samples (drawing the next ones from the stream)."""
        have = self.x.size
        if m > have:
            more = self._meter.job_samples(self.truth, max(m - have, 16))
            self.x = np.concatenate((self.x, more))

    def at(self, i: int) -> float:
        return float(self.x[i])

    def mean(self, hi: int) -> float:
        """Mean of samples [0, hi): what a finished job reports."""
        return prefix_mean(self.x, hi)

    def moments(self, lo: int, hi: int) -> tuple[int, float, float]:
        """Count, mean and sample variance (n - 1) of samples [lo, hi)."""
        return window_moments(self.x, lo, hi, self.truth)
