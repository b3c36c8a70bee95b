"""Stress traces: a seeded family of sites and job mixes that no one tuned for.

The shipped trace has nearly every class within 2 % of its class mean, which
flatters a per-class forecaster. `stress_trace(spec)` draws a trace (the
FORMAT.md layout) and its PowerPolicy from knobs a benchmark can turn one at
a time (`StressSpec`); the same spec always gives the same trace.

- power: `classes` classes with means uniform in [150, 650] W per GPU; class
  k's relative spread rises evenly from `spread`/5 to `spread` (0 to 0.3),
  each job's true power = class mean x (1 + spread x N(0, 1)), clipped to
  [idle, TDP] (clipping narrows the widest classes a little);
- hints: exactly `hint_share` of the jobs carry `gpu_watts_hint` (the
  trace's optional column, a TrainingJob's `spec.gpuWattsHint`), their true
  power x (1 + `hint_error` x N(0, 1));
- duration estimates: exactly `est_share` of the jobs carry
  `est_duration_s` = true duration x exp(`est_error` x N(0, 1)), rounded up
  to whole minutes (exact when `est_error` is 0);
- durations: lognormal (sigma 0.8), or with `heavy_tail` Pareto (alpha 1.2),
  scaled so the jobs offer `load` x the site's GPU time over the arrival
  span, within [60 s, `max_duration_s`] (under decide's 14-day horizon, so
  every run is planned whole);
- arrivals: `jobs` arrivals, uniform (a Poisson process given its count)
  over `hours`;
- preemption: exactly `non_preemptible_share` of the jobs are not
  preemptible, at priority 1 or 2; the rest are preemptible at priority 0;
- sizes: GPUs per job drawn from `sizes` (GPUs, weight); up to a node's GPUs
  a job is one pod, above that whole-node pods;
- policy: the cap is the idle site plus `cap_share` of the way to every GPU
  at TDP (power-bound for the default mix); `dr_windows` demand-response
  windows of `dr_hours` spread evenly over the arrival span, each taking
  `dr_depth` of the cap's headroom above idle away.

    python -m wattcap.sim.stress --out DIR [--name base --spread 0.25 ...]

writes DIR/NAME.csv and DIR/NAME-policy.yaml. Job power here is modelled, not
measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..model import PowerPolicy, format_time, parse_power_policy, parse_time
from .synth import _make_jobs
from .trace import TraceJob, write_trace

START = "2026-07-01T00:00:00Z"
PUE, NODE_BASE_W, GPU_IDLE_W, GPU_TDP_W = 1.2, 800.0, 70.0, 700.0
CLASS_WATTS = (150.0, 650.0)
MIN_DURATION_S = 60.0

# GPUs per job -> weight: mostly small jobs, a few that take a fifth of a 32 x 8 site
SIZES_MIXED: tuple[tuple[int, float], ...] = (
    (1, 0.30),
    (2, 0.15),
    (4, 0.15),
    (8, 0.20),
    (16, 0.10),
    (32, 0.07),
    (64, 0.03),
)
SIZES_SMALL: tuple[tuple[int, float], ...] = ((1, 0.4), (2, 0.2), (4, 0.2), (8, 0.2))


@dataclass(frozen=True, slots=True)
class StressSpec:
    """The knobs of one stress trace and its site (see the module docstring)."""

    name: str = "stress"
    seed: int = 0
    jobs: int = 400
    hours: float = 24.0
    nodes: int = 32
    gpus_per_node: int = 8
    load: float = 1.2
    classes: int = 6
    spread: float = 0.25
    hint_share: float = 0.0
    hint_error: float = 0.1
    est_share: float = 0.0
    est_error: float = 0.7
    heavy_tail: bool = False
    max_duration_s: float = 2 * 86400.0
    non_preemptible_share: float = 0.5
    sizes: tuple[tuple[int, float], ...] = SIZES_MIXED
    cap_share: float = 0.4
    dr_windows: int = 1
    dr_hours: float = 3.0
    dr_depth: float = 0.3


@dataclass(frozen=True, slots=True)
class StressTrace:
    """A drawn trace: jobs (ground truth, hints included) and the PowerPolicy manifest."""

    spec: StressSpec
    jobs: list[TraceJob]
    manifest: dict[str, Any]

    @property
    def hints(self) -> list[float | None]:
        """Each job's hint (None where it carries none)."""
        return [j.gpu_watts_hint for j in self.jobs]

    @property
    def policy(self) -> PowerPolicy:
        return parse_power_policy(self.manifest)

    def write(self, directory: str | Path) -> tuple[Path, Path]:
        """Write NAME.csv (FORMAT.md) and NAME-policy.yaml."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        trace_path = d / f"{self.spec.name}.csv"
        policy_path = d / f"{self.spec.name}-policy.yaml"
        write_trace(self.jobs, trace_path)
        policy_path.write_text(yaml.safe_dump(self.manifest, sort_keys=False), encoding="utf-8")
        return trace_path, policy_path


def _exact_share(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """A mask with exactly round(share x n) jobs picked at random: a knob's
    share is what the trace has, not a draw around it."""
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[: round(share * n)]] = True
    return mask


def _shapes(spec: StressSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(replicas, GPUs per replica, weight) per size; sizes must fit a node or be whole nodes."""
    gpn = spec.gpus_per_node
    reps, gprs, weights = [], [], []
    for g, w in spec.sizes:
        if g < 1 or (g > gpn and g % gpn) or g > spec.nodes * gpn:
            raise ValueError(
                f"a job of {g} GPUs does not fit {spec.nodes} nodes x {gpn} GPUs "
                "(up to a node, or whole nodes)"
            )
        reps.append(1 if g <= gpn else g // gpn)
        gprs.append(min(g, gpn))
        weights.append(w)
    wts = np.asarray(weights, dtype=float)
    return np.asarray(reps), np.asarray(gprs), wts / wts.sum()


def _durations(rng: np.random.Generator, spec: StressSpec, gpus: np.ndarray) -> np.ndarray:
    """Durations of the chosen shape, scaled to offer `load` x the site's GPU time."""
    n = gpus.size
    shape = 1.0 + rng.pareto(1.2, n) if spec.heavy_tail else np.exp(0.8 * rng.standard_normal(n))
    target = spec.load * spec.nodes * spec.gpus_per_node * spec.hours * 3600.0
    scale = target / float(np.sum(gpus * shape))
    for _ in range(50):  # the clip moves the sum: rescale until it holds still
        d = np.clip(scale * shape, MIN_DURATION_S, spec.max_duration_s)
        got = float(np.sum(gpus * d))
        if abs(got - target) < 1e-6 * target:
            break
        scale *= target / got
    return np.round(np.clip(scale * shape, MIN_DURATION_S, spec.max_duration_s))


def stress_trace(spec: StressSpec) -> StressTrace:
    """Draw the trace and policy `spec` describes; the same spec, the same result."""
    if spec.jobs < 1 or spec.classes < 1:
        raise ValueError("a stress trace needs at least one job and one class")
    if not 0.0 <= spec.spread <= 1.0:
        raise ValueError(f"spread must be in [0, 1], got {spec.spread}")
    rng = np.random.default_rng(spec.seed)
    n = spec.jobs
    reps, gprs, weights = _shapes(spec)
    pick = rng.choice(reps.size, size=n, p=weights)
    replicas, gpr = reps[pick], gprs[pick]
    gpus = replicas * gpr

    class_mean = rng.uniform(*CLASS_WATTS, spec.classes)
    class_sd = np.linspace(spec.spread / 5.0, spec.spread, spec.classes)
    cls = rng.integers(0, spec.classes, n)
    watts = class_mean[cls] * (1.0 + class_sd[cls] * rng.standard_normal(n))
    watts = np.round(np.clip(watts, GPU_IDLE_W, GPU_TDP_W), 1)
    if spec.spread == 0.0:  # exactly the class mean, rounding included
        watts = np.round(class_mean[cls], 1)

    duration = _durations(rng, spec, gpus)
    submit = np.round(np.sort(rng.uniform(0.0, spec.hours * 3600.0, n)), 3)

    non_pre = _exact_share(rng, n, spec.non_preemptible_share)
    priority = np.where(non_pre, 1 + rng.integers(0, 2, n), 0)

    has_est = _exact_share(rng, n, spec.est_share)
    est_noise = np.exp(spec.est_error * rng.standard_normal(n))
    est = duration * est_noise
    if spec.est_error > 0:
        est = np.ceil(est / 60.0) * 60.0
    has_hint = _exact_share(rng, n, spec.hint_share)
    hint = watts * (1.0 + spec.hint_error * rng.standard_normal(n))
    hint = np.round(np.clip(hint, 1.0, GPU_TDP_W), 1)
    if spec.hint_error == 0.0:
        hint = watts

    width = len(str(n - 1))
    columns = {
        "job_id": [f"{spec.name}-{i:0{width}d}" for i in range(n)],
        "submit_s": submit.tolist(),
        "duration_s": duration.tolist(),
        "replicas": replicas.tolist(),
        "gpus_per_replica": gpr.tolist(),
        "workload_class": [f"class-{k}" for k in cls.tolist()],
        "priority": priority.tolist(),
        "gpu_watts": watts.tolist(),
        "preemptible": (~non_pre).tolist(),
        "est_duration_s": [
            e if h else None for e, h in zip(est.tolist(), has_est.tolist(), strict=True)
        ],
        "gpu_watts_hint": [
            v if h else None for v, h in zip(hint.tolist(), has_hint.tolist(), strict=True)
        ],
    }
    return StressTrace(spec, _make_jobs(columns, n), policy_manifest(spec))


def policy_manifest(spec: StressSpec) -> dict[str, Any]:
    """The PowerPolicy manifest of the stress site: cap and demand-response windows."""
    gpus = spec.nodes * spec.gpus_per_node
    idle = PUE * (spec.nodes * NODE_BASE_W + gpus * GPU_IDLE_W)
    at_tdp = PUE * (spec.nodes * NODE_BASE_W + gpus * GPU_TDP_W)
    cap = round(idle + spec.cap_share * (at_tdp - idle))
    window_cap = round(idle + (1.0 - spec.dr_depth) * (cap - idle))
    t0 = parse_time(START, "start")
    span = spec.hours * 3600.0
    windows = []
    for k in range(spec.dr_windows):
        start = t0 + math.floor(span * (k + 1) / (spec.dr_windows + 1) / 3600.0) * 3600.0
        windows.append(
            {
                "name": f"demand-response-{k + 1}",
                "start": format_time(start),
                "end": format_time(start + spec.dr_hours * 3600.0),
                "capWatts": window_cap,
            }
        )
    return {
        "apiVersion": "wattcap.io/v1alpha1",
        "kind": "PowerPolicy",
        "metadata": {"name": spec.name},
        "spec": {
            "capWatts": cap,
            "capSchedule": windows,
            "pue": PUE,
            "nodeBaseWatts": NODE_BASE_W,
            "gpuIdleWatts": GPU_IDLE_W,
            "gpuTdpWatts": GPU_TDP_W,
            "safetyMargin": 0.02,
            "coverageTarget": 0.95,
            "ordering": "PriorityFIFO",
            "backfill": True,
            "reservationDepth": 8,
            "preemption": True,
            "controlPeriod": "15s",
            "gracePeriod": "1m",
            "defaultJobDuration": "1h",
            "maxWait": "24h",
            "site": {"nodes": spec.nodes, "gpusPerNode": spec.gpus_per_node},
        },
    }


def family() -> list[StressSpec]:
    """The benchmark's grid: one knob turned at a time from `base`, which is
    the held-out trace of issue 16 in kind (400 jobs in 24 h, 32 x 8 GPUs, six
    classes spread 5 to 25 %, 1 to 64 GPUs, a 3 h window, no estimates)."""
    base = StressSpec(name="base", seed=0)
    turns: list[tuple[str, dict[str, Any]]] = [
        ("spread-0", {"spread": 0.0}),
        ("spread-10", {"spread": 0.10}),
        ("spread-30", {"spread": 0.30}),
        ("classes-2", {"classes": 2}),
        ("classes-16", {"classes": 16}),
        ("est-exact", {"est_share": 1.0, "est_error": 0.0}),
        ("est-60-noisy", {"est_share": 0.6, "est_error": 0.7}),
        ("heavy-tail", {"heavy_tail": True}),
        ("nonpre-90", {"non_preemptible_share": 0.9}),
        ("nonpre-10", {"non_preemptible_share": 0.1}),
        ("small-jobs", {"sizes": SIZES_SMALL}),
        ("no-dr", {"dr_windows": 0}),
        ("dr-2-deep", {"dr_windows": 2, "dr_depth": 0.5}),
        ("learnable", {"spread": 0.0, "est_share": 1.0, "est_error": 0.0}),
        ("load-0.8", {"load": 0.8}),
        ("hints-10", {"hint_share": 1.0, "hint_error": 0.1}),
        ("hints-30-half", {"hint_share": 0.5, "hint_error": 0.3}),
    ]
    # One seed for all: a row differs from `base` by its knob and what the knob
    # draws, not by a fresh draw of everything.
    return [base] + [dataclasses.replace(base, name=n, **knobs) for n, knobs in turns]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write a stress trace and its PowerPolicy.")
    ap.add_argument("--out", type=Path, required=True, help="directory to write into")
    for f in dataclasses.fields(StressSpec):
        if f.name == "sizes":
            ap.add_argument("--sizes", help="GPUs:weight,... e.g. 1:0.5,8:0.5")
        elif f.type == "bool":
            ap.add_argument(f"--{f.name.replace('_', '-')}", action="store_true")
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            ap.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default)
    args = vars(ap.parse_args(argv))
    out = args.pop("out")
    sizes = args.pop("sizes")
    if sizes:
        pairs = [p.split(":") for p in sizes.split(",")]
        args["sizes"] = tuple((int(g), float(w)) for g, w in pairs)
    s = stress_trace(StressSpec(**args))
    trace_path, policy_path = s.write(out)
    print(f"wrote {len(s.jobs)} jobs to {trace_path} and the policy to {policy_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
