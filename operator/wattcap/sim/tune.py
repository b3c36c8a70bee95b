"""`wattcap tune`: choose a PowerPolicy from the site's own history.

The replay is the same simulator `wattcap simulate` runs, with the same
pure decision core as the operator, so each grid point is what the operator
would have done on that history under those settings. The grid is a set of
PowerPolicy spec fields with candidate values; every combination is replayed
in its own process, and the results are reduced to their Pareto front:
no point on it is beaten on every objective by another.

Objectives (all to minimise; cap use is negated): ground-truth seconds over
the cap, cap unused while jobs wait, p50 and p95 wait, preemptions. The
suggested point is the front's best p95 wait among those with the fewest
seconds over the cap: a site's first duty is its cap.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..model import ManifestError, parse_power_policy
from .trace import TraceError, load_trace

# Spec fields the default grid varies, with values a platform team would try.
DEFAULT_GRID: dict[str, list[Any]] = {
    "safetyMargin": [0.0, 0.02, 0.05],
    "coverageTarget": [0.9, 0.95, 0.99],
    "reservationDepth": [0, 8],
    "backfill": [True, False],
}

# (summary key, sign): each objective is sign * value, to be minimised.
OBJECTIVES: tuple[tuple[str, float], ...] = (
    ("seconds_over_cap", 1.0),
    ("cap_used_while_waiting", -1.0),
    ("wait_p50_s", 1.0),
    ("wait_p95_s", 1.0),
    ("preemptions", 1.0),
)


@dataclass(frozen=True, slots=True)
class Point:
    """One grid point: the spec fields it sets and the replay's summary."""

    settings: Mapping[str, Any]
    summary: Mapping[str, Any]

    def costs(self) -> tuple[float, ...]:
        """The objectives as numbers to minimise; a missing figure is worst."""
        out = []
        for key, sign in OBJECTIVES:
            value = self.summary.get(key)
            out.append(float("inf") if value is None else sign * float(value))
        return tuple(out)


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """`field=v1,v2` pairs into a grid; values are read as YAML scalars
    (`true`, `0.95`, `30m`), so a spec field takes them as a manifest would."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"--grid {item!r}: expected FIELD=V1,V2,...")
        grid[key.strip()] = [yaml.safe_load(v) for v in values.split(",")]
    return grid


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in a stable order."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def with_settings(manifest: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The PowerPolicy manifest with the grid point's spec fields set."""
    out = copy.deepcopy(dict(manifest))
    out.setdefault("spec", {}).update(settings)
    return out


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """a is no worse than b on every objective and better on one."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points no other point dominates (ties all stay)."""
    costs = [p.costs() for p in points]
    return [
        p
        for i, p in enumerate(points)
        if not any(dominates(costs[j], costs[i]) for j in range(len(points)) if j != i)
    ]


def choose(front: Sequence[Point]) -> Point:
    """Fewest seconds over the cap first, then the shortest p95 wait, then
    the most cap used while jobs wait."""

    def key(p: Point) -> tuple[float, float, float]:
        c = p.costs()
        return (c[0], c[3], c[1])

    return min(front, key=key)


def patch_command(policy_name: str, settings: Mapping[str, Any]) -> str:
    """The kubectl command that applies a grid point to the live policy."""
    body = json.dumps({"spec": dict(settings)}, separators=(",", ":"))
    return f"kubectl patch powerpolicy {policy_name} --type merge -p '{body}'"


def _replay(args: tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]) -> Point:
    """One grid point in a worker process: parse, replay, summarise."""
    from .engine import SimConfig, simulate
    from .report import summarize
    from .schedulers import make_scheduler

    trace, manifest, settings, site = args
    policy = parse_power_policy(with_settings(manifest, settings))
    jobs = load_trace(trace, nodes=site["nodes"], gpus_per_node=site["gpus_per_node"])
    cfg = SimConfig(
        nodes=site["nodes"],
        gpus_per_node=site["gpus_per_node"],
        start_epoch_s=site["start"],
        seed=site["seed"],
    )
    res = simulate(jobs, policy, make_scheduler("wattcap", policy), cfg)
    summary = summarize(
        res, nodes=site["nodes"], gpus_per_node=site["gpus_per_node"], seed=site["seed"]
    )
    return Point(settings, summary)


def run_grid(
    trace: str,
    manifest: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    site: Mapping[str, Any],
    workers: int,
) -> list[Point]:
    """Replay every grid point, `workers` processes at a time (1: in this one)."""
    tasks = [(trace, dict(manifest), s, dict(site)) for s in grid_points(grid)]
    if workers <= 1:
        return [_replay(t) for t in tasks]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_replay, tasks))


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{100 * value:.1f}%" if pct else f"{value:g}"


def format_table(points: Sequence[Point], front: Sequence[Point], chosen: Point) -> str:
    """Every grid point, one row each, front rows marked `*`, the choice `>`."""
    keys = list(points[0].settings) if points else []
    head = ["", *keys, "over_cap_s", "cap_used_wait", "p50_wait_s", "p95_wait_s", "preempt"]
    rows = [head]
    on_front = {id(p) for p in front}
    for p in points:
        mark = ">" if p is chosen else ("*" if id(p) in on_front else "")
        s = p.summary
        rows.append(
            [
                mark,
                *(_fmt(p.settings[k]) for k in keys),
                _fmt(s.get("seconds_over_cap")),
                _fmt(s.get("cap_used_while_waiting"), pct=True),
                _fmt(s.get("wait_p50_s")),
                _fmt(s.get("wait_p95_s")),
                _fmt(s.get("preemptions")),
            ]
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append("* on the Pareto front   > suggested")
    return "\n".join(lines)


def plot_front(points: Sequence[Point], front: Sequence[Point], path: str) -> None:
    """Cap used while waiting against p95 wait, the front highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for group, style in ((points, {"c": "0.7", "label": "grid"}), (front, {"c": "C3"})):
        xs = [p.summary.get("wait_p95_s") or 0 for p in group]
        ys = [100 * (p.summary.get("cap_used_while_waiting") or 0) for p in group]
        ax.scatter(xs, ys, **style)
    ax.set_xlabel("p95 wait (s)")
    ax.set_ylabel("cap used while jobs wait (%)")
    ax.set_title("wattcap tune: grid and Pareto front (red)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tune_command(args: argparse.Namespace) -> int:
    """Replay the grid, print the table and the patch for the suggested point."""
    from .run import InputError, load_policy, parse_start

    try:
        start = parse_start(args.start)
        load_policy(args.policy)  # the base policy must be valid on its own
        manifest = yaml.safe_load(Path(args.policy).read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or "spec" not in manifest:
            raise InputError(f"{args.policy}: expected a PowerPolicy manifest with a spec")
        grid = parse_grid(args.grid) if args.grid else DEFAULT_GRID
        for settings in grid_points(grid):  # refuse a bad grid before any replay
            try:
                parse_power_policy(with_settings(manifest, settings))
            except ManifestError as e:
                raise InputError(f"grid point {settings}: {e}") from None
        load_trace(args.trace, nodes=args.nodes, gpus_per_node=args.gpus_per_node)
    except (InputError, ValueError, TraceError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    site = {
        "nodes": args.nodes,
        "gpus_per_node": args.gpus_per_node,
        "start": start,
        "seed": args.seed,
    }
    points = run_grid(args.trace, manifest, grid, site, args.jobs)
    front = pareto_front(points)
    chosen = choose(front)
    name = str((manifest.get("metadata") or {}).get("name", "site"))
    if args.plot:
        plot_front(points, front, args.plot)
    if args.json:
        out = {
            "points": [{"settings": p.settings, "summary": p.summary} for p in points],
            "front": [points.index(p) for p in front],
            "chosen": points.index(chosen),
            "patch": {"spec": dict(chosen.settings)},
            "command": patch_command(name, chosen.settings),
        }
        print(json.dumps(out, indent=2, allow_nan=False))
    else:
        print(format_table(points, front, chosen))
        print()
        print(patch_command(name, chosen.settings))
    return 0
