"""The shipped data: traces in the FORMAT.md layout, the power classes, example policies."""

from __future__ import annotations

import csv
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import yaml

from wattcap.model import parse_power_policy, parse_time
from wattcap.sim import synth
from wattcap.sim.trace import REQUIRED_COLUMNS, load_trace

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data"
TRACES = sorted((DATA / "traces").glob("*.csv"))
POLICIES = sorted((REPO / "examples" / "policies").glob("*.yaml"))
# The public sources the shipped traces are built from: `shared/` next to the
# checkout, or where WATTCAP_SHARED points (a worktree elsewhere).
SHARED = Path(os.environ.get("WATTCAP_SHARED") or REPO.parent / "shared")
PUBLIC = SHARED / "traces" / "public"
IDLE_W, TDP_W = 70.0, 700.0


def _classes() -> list[dict[str, str]]:
    with open(DATA / "power" / "classes.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_traces_are_shipped() -> None:
    names = {p.name for p in TRACES}
    assert {"alibaba-v2023-h100.csv", "alibaba-v2023-h100-3d.csv"} <= names
    assert (DATA / "traces" / "PROVENANCE.md").is_file()


@pytest.mark.parametrize("path", TRACES, ids=lambda p: p.name)
def test_trace_rows_are_valid_and_fit_a_64x8_site(path: Path) -> None:
    with open(path, newline="") as fh:
        header = next(csv.reader(fh))
    assert set(REQUIRED_COLUMNS) <= set(header)
    jobs = load_trace(path, nodes=64, gpus_per_node=8)  # checks types, ids, site fit
    assert len(jobs) > 1000
    classes = {r["workload_class"] for r in _classes()}
    for j in jobs:
        assert j.duration_s > 0 and j.submit_s >= 0
        assert j.replicas == 1 and j.gpus_per_replica in (1, 2, 4, 8)
        assert IDLE_W <= j.gpu_watts <= TDP_W
        assert j.workload_class in classes
        assert j.preemptible == (j.priority == 0)
    if path.name.endswith("-3d.csv"):
        assert max(j.submit_s for j in jobs) < 3 * 86400


def test_slice_is_the_same_jobs_refolded() -> None:
    full = {j.job_id: j for j in load_trace(DATA / "traces" / "alibaba-v2023-h100.csv")}
    shifts = set()
    for j in load_trace(DATA / "traces" / "alibaba-v2023-h100-3d.csv"):
        f = full[j.job_id]
        assert (f.duration_s, f.gpus, f.gpu_watts, f.workload_class) == (
            j.duration_s,
            j.gpus,
            j.gpu_watts,
            j.workload_class,
        )
        shifts.add((f.submit_s - j.submit_s) % (3 * 86400))
    assert len(shifts) == 1  # every job moved by the fold start plus whole 3-day windows


def test_power_classes_lie_between_idle_and_tdp() -> None:
    rows = _classes()
    assert 6 <= len(rows) <= 10
    assert len({r["workload_class"] for r in rows}) == len(rows)
    for r in rows:
        watts, frac = float(r["gpu_watts_h100"]), float(r["fraction_of_tdp"])
        assert IDLE_W < watts < TDP_W
        assert watts == pytest.approx(frac * TDP_W, abs=0.1)
        assert 0 < float(r["rel_spread"]) < 0.5


def test_synth_fallback_table_matches_classes_csv() -> None:
    shipped = [
        (r["workload_class"], float(r["gpu_watts_h100"]), float(r["rel_spread"]))
        for r in _classes()
    ]
    assert shipped == list(synth.FALLBACK_CLASSES)


def test_shipped_data_stays_small() -> None:
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert total < 3_000_000


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_example_policies_parse_and_cap_covers_idle(path: Path) -> None:
    obj = yaml.safe_load(path.read_text())
    policy = parse_power_policy(obj)  # with spec.site it also refuses a cap below idle
    assert policy.name == obj["metadata"]["name"]
    nodes, gpus = policy.site_nodes, policy.site_nodes * policy.site_gpus_per_node
    idle = policy.idle_site_watts(nodes, gpus)
    at_tdp = idle + policy.job_site_watts(gpus, policy.gpu_tdp_watts)
    for cap in [policy.cap_watts, *(w.cap_watts for w in policy.cap_schedule)]:
        assert idle <= cap < 0.5 * at_tdp  # power-bound: far below every GPU at TDP


def _unknown_fields(value: object, node: dict, path: str) -> list[str]:
    """Keys the CRD does not declare (the API server would prune them)."""
    if not isinstance(value, dict):
        if node.get("type") == "array" and isinstance(value, list):
            return [
                e
                for i, v in enumerate(value)
                for e in _unknown_fields(v, node["items"], f"{path}[{i}]")
            ]
        return []
    props = node.get("properties", {})
    out = []
    for key, sub in value.items():
        if key in props:
            out += _unknown_fields(sub, props[key], f"{path}.{key}")
        elif not isinstance(node.get("additionalProperties"), dict):
            out.append(f"{path}.{key}")
    return out


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_example_policies_use_only_crd_fields(path: Path) -> None:
    crd = yaml.safe_load((REPO / "crds" / "powerpolicy.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec = yaml.safe_load(path.read_text())["spec"]
    assert _unknown_fields(spec, spec_schema, "spec") == []


def test_dr_window_is_on_day_two() -> None:
    policy = parse_power_policy(
        yaml.safe_load((REPO / "examples" / "policies" / "site-dr.yaml").read_text())
    )
    (window,) = policy.cap_schedule
    t0 = parse_time("2026-07-01T00:00:00Z", "t0")
    assert 86400 <= window.start_s - t0 < window.end_s - t0 <= 2 * 86400
    assert window.cap_watts < policy.cap_watts


def test_build_script_reproduces_the_shipped_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped traces are what scripts/build_traces.py makes of the
    public sources. Without the sources this fails rather than skipping:
    a skipped check would let stale data pass as checked."""
    assert PUBLIC.is_dir(), (
        f"{PUBLIC} is missing, so data/ cannot be checked against its sources: "
        "check out shared/ next to the repository, or set WATTCAP_SHARED to it"
    )
    path = REPO / "scripts" / "build_traces.py"
    spec = importlib.util.spec_from_file_location("build_traces", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "build_traces", mod)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    for rel, text in mod.build(PUBLIC).items():
        assert (DATA / rel).read_text() == text, f"data/{rel} is stale: run scripts/build_traces.py"
