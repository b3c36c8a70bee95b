"""Fit the throughput-vs-power-limit model to the Zeus NSDI '23 power-limit sweeps.

Why: wattcap's second lever (the per-GPU power limit) trades throughput for watts. The core
plans that trade and the simulator applies it, so both need one model of how much slower a
job runs at a limit. This script re-derives the model from the measured sweeps, so the
constants in operator/wattcap/powerlimit.py have a traceable origin.

Model: slowdown(x) = 1 + a * max(0, 1/x - 1) ** b, where slowdown is
time_per_epoch(limit) / time_per_epoch(TDP) for one sweep (dataset, network, batch,
optimizer on one GPU). Two choices of x are fitted and printed:

- x = limit / natural draw, the natural draw being the sweep's average_power at the TDP
  limit (what the job draws unthrottled). A limit at or above the natural draw costs
  nothing, which is what the simulator's physics says (a GPU draws min(natural, limit)).
- x = limit / TDP (the earlier model's choice), for comparison.

The first fits the measurements better (lower rmse, printed below) and is consistent with
the physics, so wattcap uses it. The shape is 1 at x >= 1 and grows without bound as
x -> 0 (a GPU without power makes no progress). Fitted by least squares on the slowdown
itself (grid over b, closed-form a for each b).

Run (from the repository root):
    .venv/bin/python data/powerlimits/fit.py /work/shared/traces/public/zeus-nsdi23 \\
        > data/powerlimits/fit.txt
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

FILES = {
    "V100": "summary_power_v100.csv",
    "A40": "summary_power_a40.csv",
    "RTX6000": "summary_power_rtx6000.csv",
    "P100": "summary_power_p100.csv",
}


def load(folder: Path) -> list[tuple[str, float, float, float]]:
    """(gpu, limit/TDP, limit/natural draw, slowdown) for every row below the GPU's TDP.

    TDP is the highest power_limit in each file: Zeus sweeps up to the board's default
    (maximum) limit, see data/power/README.md.
    """
    points: list[tuple[str, float, float, float]] = []
    for gpu, name in FILES.items():
        with open(folder / name, newline="") as fh:
            rows = list(csv.DictReader(fh))
        tdp = max(float(r["power_limit"]) for r in rows)
        groups: dict[tuple[str, ...], dict[float, tuple[float, float]]] = defaultdict(dict)
        for r in rows:
            key = (r["dataset"], r["network"], r["batch_size"], r["optimizer"])
            groups[key][float(r["power_limit"])] = (
                float(r["time_per_epoch"]),
                float(r["average_power"]),
            )
        for sweep in groups.values():
            if tdp not in sweep:
                continue
            base, natural = sweep[tdp]
            for limit, (t, _) in sweep.items():
                if limit < tdp:
                    points.append((gpu, limit / tdp, limit / natural, t / base))
    return points


def fit(x: np.ndarray, s: np.ndarray) -> tuple[float, float, float]:
    """Least-squares (a, b) of s - 1 = a * (1/x - 1)^b; returns (a, b, rmse)."""
    best = (0.0, 0.0, float("inf"))
    u = np.maximum(0.0, 1.0 / x - 1.0)
    y = s - 1.0
    for b in np.arange(0.50, 3.001, 0.01):
        f = u**b
        a = float(np.dot(f, y) / np.dot(f, f))
        rmse = float(np.sqrt(np.mean((y - a * f) ** 2)))
        if rmse < best[2]:
            best = (a, float(b), rmse)
    return best


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/work/shared/traces/public/zeus-nsdi23")
    points = load(folder)
    gpus = np.array([p[0] for p in points])
    s = np.array([p[3] for p in points])
    print(f"points {len(points)} (rows below each GPU's TDP, normalised per sweep)")
    chosen = (0.0, 0.0)
    for col, name in ((2, "limit / natural draw"), (1, "limit / TDP")):
        x = np.array([p[col] for p in points])
        a, b, rmse = fit(x, s)
        print()
        print(f"x = {name}: slowdown = 1 + {a:.2f} * max(0, 1/x - 1)^{b:.2f}  rmse {rmse:.3f}")
        for gpu in FILES:
            m = gpus == gpu
            ga, gb, gr = fit(x[m], s[m])
            print(f"  {gpu:8s} n={int(m.sum()):4d}  a={ga:.2f} b={gb:.2f} rmse {gr:.3f}")
        print("  x bin      n    measured median  p90    model")
        for lo in np.arange(0.3, 1.2, 0.1):
            m = (x >= lo) & (x < lo + 0.1)
            if m.any():
                mid = float(np.mean(x[m]))
                model = 1 + a * max(0.0, 1 / mid - 1) ** b
                print(
                    f"  [{lo:.1f},{lo + 0.1:.1f}) {int(m.sum()):4d}  {float(np.median(s[m])):.3f}"
                    f"            {float(np.quantile(s[m], 0.9)):.3f}  {model:.3f}"
                )
        if col == 2:
            chosen = (a, b)
    print()
    print("chosen (x = limit / natural draw):")
    print(f"A = {chosen[0]:.2f}")
    print(f"B = {chosen[1]:.2f}")


if __name__ == "__main__":
    main()
