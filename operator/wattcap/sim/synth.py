"""Synthetic job traces shaped like the Alibaba GPU trace, with modelled per-class power.

`synthetic_trace(n)` draws `n` jobs at once with numpy (100k jobs in a fraction of a
second):

- arrivals: a Poisson process whose rate offers `load` x the site's GPU capacity, i.e.
  sum(gpus x duration) / (nodes x gpus_per_node x arrival span) ~= `load`. The rate is
  calibrated on the drawn jobs themselves, so the offered load is on target for any `n`
  despite the heavy duration tail (only the span's Poisson noise, ~1/sqrt(n), remains).
- durations: the empirical distribution of the 6,171 usable GPU pods of Alibaba's
  cluster-trace-gpu-v2023 (`scripts/build_traces.py`), as an inverse CDF interpolated
  log-linearly between its percentiles: median ~11 min, p90 ~2 h, p99 ~21 h, truncated at
  its p99.9 (~26 days).
- sizes: 1/2/4/8-GPU pods and multi-replica 2-4 x 8-GPU jobs. The Alibaba pods are 98.8 %
  single-GPU by count; a training site that needs a power cap runs larger jobs, so the
  default `SIZE_MIX` gives multi-GPU jobs far more weight (about 2/3 of the GPU time).
  Pass `size_mix=SIZE_MIX_ALIBABA` for the trace's own mix.
- priority/preemptible: the trace's QoS mix mapped as `build_traces.py` maps it
  (LS/Guaranteed -> 2, Burstable -> 1, BE -> 0 and preemptible).
- power: a class drawn uniformly from `data/power/classes.csv` (or the built-in copy of
  it when the package is installed without `data/`), then
  gpu_watts = class watts x (1 + N(0, class rel_spread)), clipped to [idle, TDP].
  This power is MODELLED from the Zeus NSDI '23 measurements, not measured per job.
- est_duration_s: for `est_share` of the jobs, a noisy user estimate: the true duration
  x lognormal (median x1.5, sigma 0.7), rounded up to whole minutes: ~72 % over-estimate
  (some badly), ~28 % under-estimate.

`python -m wattcap.sim.synth --jobs 10000 --seed 1 --out trace.csv` writes one.
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from wattcap.sim import trace as _trace
from wattcap.sim.trace import TraceJob

GPU_IDLE_W = 70.0
GPU_TDP_W = 700.0

# The shipped class table, found relative to the source tree (absent in a wheel install).
DEFAULT_CLASSES_CSV = Path(__file__).resolve().parents[3] / "data" / "power" / "classes.csv"

# Built-in copy of data/power/classes.csv (workload_class, gpu_watts_h100, rel_spread);
# tests/unit/test_data.py checks that the two agree.
FALLBACK_CLASSES: tuple[tuple[str, float, float], ...] = (
    ("resnet50-imagenet-b256", 582.8, 0.020),
    ("bert-squad-b32", 631.0, 0.020),
    ("bert-sentiment140-b128", 633.2, 0.020),
    ("bert-sentiment140-b16", 578.4, 0.088),
    ("deepspeech2-librispeech-b192", 420.5, 0.025),
    ("shufflenetv2-cifar100-b1024", 523.2, 0.025),
    ("shufflenetv2-cifar100-b128", 341.6, 0.238),
    ("ncf-movielens1m-b1024", 150.8, 0.020),
)

# Percentiles (%) of pod run time (s) in Alibaba v2023, usable GPU pods (deletion -
# scheduled time; censored and never-scheduled pods excluded). The last point is p99.9.
DURATION_PCT = (0, 1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 99.5, 99.9)
DURATION_S = (
    4,
    20,
    29,
    48,
    67,
    143,
    217,
    365,
    636,
    1016,
    1661,
    3197,
    7026,
    15090,
    41373,
    75750,
    166169,
    2223449,
)

# (replicas, gpus_per_replica) -> share of jobs.
SIZE_MIX: Mapping[tuple[int, int], float] = {
    (1, 1): 0.78,
    (1, 2): 0.06,
    (1, 4): 0.05,
    (1, 8): 0.08,
    (2, 8): 0.015,
    (3, 8): 0.0075,
    (4, 8): 0.0075,
}
# The Alibaba v2023 usable pods' own mix (6099 / 14 / 15 / 43 pods; no multi-pod jobs).
SIZE_MIX_ALIBABA: Mapping[tuple[int, int], float] = {
    (1, 1): 6099 / 6171,
    (1, 2): 14 / 6171,
    (1, 4): 15 / 6171,
    (1, 8): 43 / 6171,
}
# priority -> share of jobs (Alibaba QoS of usable pods: LS+Guaranteed 3569,
# Burstable 94, BE 2508). Priority 0 (BE) jobs are preemptible.
PRIORITY_MIX: Mapping[int, float] = {2: 3569 / 6171, 1: 94 / 6171, 0: 2508 / 6171}


def load_classes(classes_csv: str | Path | None = None) -> list[tuple[str, float, float]]:
    """(class, H100 watts, relative spread) rows.

    None: the shipped data/power/classes.csv if present, else the built-in copy.
    A path given explicitly must exist.
    """
    path = Path(classes_csv) if classes_csv is not None else DEFAULT_CLASSES_CSV
    if classes_csv is None and not path.is_file():
        return list(FALLBACK_CLASSES)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [
            (
                r["workload_class"],
                float(r["gpu_watts_h100"]),
                float(r.get("rel_spread") or 0.0),
            )
            for r in csv.DictReader(fh)
        ]
    if not rows:
        raise ValueError(f"{path}: no classes")
    return rows


def _durations(rng: np.random.Generator, n: int) -> np.ndarray:
    u = rng.random(n) * 100.0
    log_d = np.interp(u, DURATION_PCT, np.log(np.asarray(DURATION_S, dtype=float)))
    return np.maximum(1.0, np.round(np.exp(log_d)))


def synthetic_trace(
    n_jobs: int,
    *,
    seed: int = 0,
    nodes: int = 1000,
    gpus_per_node: int = 8,
    load: float = 1.3,
    classes_csv: str | Path | None = None,
    size_mix: Mapping[tuple[int, int], float] | None = None,
    est_share: float = 0.6,
) -> list[TraceJob]:
    """`n_jobs` synthetic jobs offering `load` x the GPU capacity of the site.

    Same arguments, same jobs. Every job fits the site: GPUs per replica are capped at
    `gpus_per_node` and replicas at `nodes`.
    """
    if n_jobs < 0:
        raise ValueError(f"n_jobs must be >= 0, got {n_jobs}")
    if nodes < 1 or gpus_per_node < 1:
        raise ValueError("the site needs at least one node with at least one GPU")
    if load <= 0:
        raise ValueError(f"load must be > 0, got {load}")
    if n_jobs == 0:
        return []
    rng = np.random.default_rng(seed)
    classes = load_classes(classes_csv)
    mix = size_mix or SIZE_MIX

    shapes = np.array(list(mix.keys()), dtype=np.int64)
    weights = np.array(list(mix.values()), dtype=float)
    pick = rng.choice(len(shapes), size=n_jobs, p=weights / weights.sum())
    replicas = np.minimum(shapes[pick, 0], nodes)
    gpr = np.minimum(shapes[pick, 1], gpus_per_node)
    gpus = replicas * gpr

    duration = _durations(rng, n_jobs)

    # Poisson arrivals at the rate that offers `load` x capacity for these jobs.
    capacity = nodes * gpus_per_node
    rate = load * capacity / float(np.mean(gpus * duration))  # jobs per second
    gaps = rng.exponential(1.0 / rate, n_jobs)
    gaps[0] = 0.0
    submit = np.round(np.cumsum(gaps), 3)

    prios = np.array(list(PRIORITY_MIX.keys()), dtype=np.int64)
    pw = np.array(list(PRIORITY_MIX.values()), dtype=float)
    priority = prios[rng.choice(len(prios), size=n_jobs, p=pw / pw.sum())]
    preemptible = priority == 0

    cls = rng.integers(0, len(classes), n_jobs)
    base = np.array([c[1] for c in classes])[cls]
    spread = np.array([c[2] for c in classes])[cls]
    watts = base * (1.0 + spread * rng.standard_normal(n_jobs))
    watts = np.round(np.clip(watts, GPU_IDLE_W, GPU_TDP_W), 1)

    has_est = rng.random(n_jobs) < est_share
    est = np.ceil(duration * np.exp(rng.normal(np.log(1.5), 0.7, n_jobs)) / 60.0) * 60.0

    names = np.array([c[0] for c in classes], dtype=object)
    width = len(str(n_jobs - 1))
    est_list = est.tolist()
    columns = {
        "job_id": [f"synth{seed}-{i:0{width}d}" for i in range(n_jobs)],
        "submit_s": submit.tolist(),
        "duration_s": duration.tolist(),
        "replicas": replicas.tolist(),
        "gpus_per_replica": gpr.tolist(),
        "workload_class": names[cls].tolist(),
        "priority": priority.tolist(),
        "gpu_watts": watts.tolist(),
        "preemptible": preemptible.tolist(),
        "est_duration_s": [
            e if h else None for e, h in zip(est_list, has_est.tolist(), strict=True)
        ],
    }
    return _make_jobs(columns, n_jobs)


def _make_jobs(columns: Mapping[str, list], n: int) -> list[TraceJob]:
    """TraceJobs from columns, fast: the frozen dataclass's __init__ costs ~8 us a job
    (one object.__setattr__ per field), so fill the slots column by column instead. Falls
    back to the constructor if TraceJob ever gains validation or loses its slots."""
    fields = dataclasses.fields(TraceJob)
    descr = [TraceJob.__dict__.get(f.name) for f in fields]
    fast = not hasattr(TraceJob, "__post_init__") and all(
        d is not None and hasattr(d, "__set__") for d in descr
    )
    values = []
    for f in fields:
        if f.name in columns:
            values.append(columns[f.name])
        elif f.default is not dataclasses.MISSING:  # TraceJob's defaults are immutable
            values.append([f.default] * n)
        else:
            raise TypeError(f"synthetic_trace does not fill TraceJob.{f.name}")
    if not fast:
        return [TraceJob(*row) for row in zip(*values, strict=True)]
    jobs = list(map(object.__new__, itertools.repeat(TraceJob, n)))
    for d, col in zip(descr, values, strict=True):
        collections.deque(map(d.__set__, jobs, col), maxlen=0)
    return jobs


def offered_load(jobs: Sequence[TraceJob], nodes: int, gpus_per_node: int) -> float:
    """GPU work of the jobs over the site's GPU capacity during the arrival span."""
    if len(jobs) < 2:
        return 0.0
    span = max(j.submit_s for j in jobs) - min(j.submit_s for j in jobs)
    work = sum(j.gpus * j.duration_s for j in jobs)
    return work / (nodes * gpus_per_node * span) if span > 0 else float("inf")


def write_jobs(jobs: Sequence[TraceJob], path: str | Path) -> None:
    """Write a FORMAT.md trace."""
    _trace.write_trace(jobs, path)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write a synthetic wattcap trace (FORMAT.md).")
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--load", type=float, default=1.3)
    ap.add_argument("--classes", type=Path, default=None, help="classes.csv to use")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    jobs = synthetic_trace(
        args.jobs,
        seed=args.seed,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        load=args.load,
        classes_csv=args.classes,
    )
    write_jobs(jobs, args.out)
    print(f"wrote {len(jobs)} jobs to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
