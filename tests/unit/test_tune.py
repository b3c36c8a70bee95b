"""`wattcap tune`: the grid, its Pareto front and the patch it suggests.

The replays are real (the simulator on the unit-test trace); what is checked
is that the front is exactly the non-dominated set, that the choice holds
the cap first, and that the suggested settings parse as a policy.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from cli_runs import POLICY, SITE, TRACE, wattcap_cli

from wattcap.model import parse_power_policy
from wattcap.sim.tune import (
    Point,
    choose,
    dominates,
    grid_points,
    pareto_front,
    parse_grid,
    with_settings,
)


def tune(*extra: str) -> subprocess.CompletedProcess[str]:
    return wattcap_cli(
        "tune", "--trace", str(TRACE), "--policy", str(POLICY), *SITE, *extra, timeout=300
    )


@pytest.fixture(scope="module")
def result() -> dict:
    r = tune(
        "--grid",
        "safetyMargin=0,0.05",
        "--grid",
        "reservationDepth=0,8",
        "--grid",
        "coverageTarget=0.9,0.99",
        "--jobs",
        "2",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _points(result: dict) -> list[Point]:
    return [Point(p["settings"], p["summary"]) for p in result["points"]]


def test_every_grid_point_is_replayed_once(result: dict) -> None:
    seen = [tuple(sorted(p["settings"].items())) for p in result["points"]]
    assert len(seen) == 8 == len(set(seen))


def test_the_front_is_exactly_the_non_dominated_points(result: dict) -> None:
    points = _points(result)
    front = set(result["front"])
    assert front, "an empty front"
    for i, p in enumerate(points):
        beaten = any(dominates(q.costs(), p.costs()) for q in points)
        assert (i in front) == (not beaten), (i, p.settings)


def test_the_choice_is_on_the_front_and_holds_the_cap_first(result: dict) -> None:
    points = _points(result)
    chosen = points[result["chosen"]]
    assert result["chosen"] in result["front"]
    least_over = min(p.summary["seconds_over_cap"] for p in points)
    assert chosen.summary["seconds_over_cap"] == least_over


def test_the_patch_is_the_chosen_settings_and_parses_as_a_policy(result: dict) -> None:
    chosen = result["points"][result["chosen"]]["settings"]
    assert result["patch"] == {"spec": chosen}
    assert "kubectl patch powerpolicy site --type merge -p" in result["command"]
    base = yaml.safe_load(POLICY.read_text())
    policy = parse_power_policy(with_settings(base, result["patch"]["spec"]))
    assert policy.safety_margin == chosen["safetyMargin"]
    assert policy.reservation_depth == chosen["reservationDepth"]


def test_pareto_front_on_hand_made_points() -> None:
    def pt(over: float, used: float, p50: float, p95: float, pre: int) -> Point:
        return Point(
            {"x": over},
            {
                "seconds_over_cap": over,
                "cap_used_while_waiting": used,
                "wait_p50_s": p50,
                "wait_p95_s": p95,
                "preemptions": pre,
            },
        )

    a = pt(0, 0.9, 10, 100, 1)
    b = pt(0, 0.8, 20, 200, 2)  # beaten by a everywhere
    c = pt(0, 0.95, 30, 300, 0)  # better cap use and preemptions than a
    d = pt(60, 0.99, 5, 50, 0)  # over the cap, but better elsewhere
    front = pareto_front([a, b, c, d])
    assert front == [a, c, d]
    assert choose(front) is a  # d is over the cap; a waits less than c


def test_grid_parsing_reads_yaml_scalars() -> None:
    grid = parse_grid(["backfill=true,false", "maxWait=30m,2h", "safetyMargin=0.02"])
    assert grid == {"backfill": [True, False], "maxWait": ["30m", "2h"], "safetyMargin": [0.02]}
    assert len(grid_points(grid)) == 4
    with pytest.raises(ValueError, match="FIELD=V1"):
        parse_grid(["backfill"])


def test_a_bad_grid_is_refused_before_any_replay() -> None:
    r = tune("--grid", "safetyMargin=0.02,0.9")
    assert r.returncode == 2
    assert "spec.safetyMargin" in r.stderr and "safetyMargin': 0.9" in r.stderr
