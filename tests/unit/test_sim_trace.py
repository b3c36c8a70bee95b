"""Trace reading: every bad row is named by file, row and column; good traces round-trip."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cli_runs import DATA, SITE, wattcap_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from wattcap.sim.trace import REQUIRED_COLUMNS, TraceError, TraceJob, load_trace, write_trace

HEADER = ",".join(REQUIRED_COLUMNS)
GOOD = "j{i},{s},600,1,2,llm,0,400"


def _trace(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    p = tmp_path / "T.csv"
    p.write_text("\n".join([header, *rows]) + "\n")
    return p


def _good(n: int) -> list[str]:
    return [GOOD.format(i=i, s=10 * i) for i in range(n)]


@pytest.mark.parametrize(
    ("bad_row", "column", "why"),
    [
        ("j9,0,-5,1,1,llm,0,400", "duration_s", "must be >= 0, got -5"),
        ("j9,0,10,0,1,llm,0,400", "replicas", "must be >= 1, got 0"),
        ("j9,0,10,1,0,llm,0,400", "gpus_per_replica", "must be >= 1, got 0"),
        ("j9,soon,10,1,1,llm,0,400", "submit_s", "expected a number, got 'soon'"),
        ("j9,0,10,1.5,1,llm,0,400", "replicas", "expected a whole number"),
        ("j9,0,10,1,1,llm,0,nan", "gpu_watts", "expected a finite number"),
        ("j9,0,10,1,1,llm,high,400", "priority", "expected a whole number"),
        ("j1,0,10,1,1,llm,0,400", "job_id", "duplicate job_id 'j1'"),
        ("j9,0,10,1,1,llm", "priority", "missing value"),
    ],
)
def test_bad_row_names_row_and_column(tmp_path, bad_row, column, why):
    rows = _good(5)
    rows.insert(5, bad_row)  # header is row 1, so this is row 7
    p = _trace(tmp_path, rows)
    with pytest.raises(TraceError) as e:
        load_trace(p)
    assert str(e.value).startswith(f"{p} row 7, column {column}: ")
    assert why in str(e.value)


def test_missing_column_is_named(tmp_path):
    p = _trace(tmp_path, ["j0,0,10,1,1,llm,0"], header=HEADER.replace(",gpu_watts", ""))
    with pytest.raises(TraceError, match=r"row 1, column gpu_watts: required column is missing"):
        load_trace(p)


def test_job_wider_than_the_site(tmp_path):
    p = _trace(tmp_path, ["j0,0,10,1,16,llm,0,400"])
    with pytest.raises(TraceError, match="row 2, column gpus_per_replica: a pod needs 16 GPUs"):
        load_trace(p, nodes=4, gpus_per_node=8)
    p = _trace(tmp_path, ["j0,0,10,5,8,llm,0,400"])
    with pytest.raises(
        TraceError, match=r"row 2, column replicas: .* 40 GPUs, but the site has 32"
    ):
        load_trace(p, nodes=4, gpus_per_node=8)


def test_optional_and_unknown_columns(tmp_path):
    header = HEADER + ",preemptible,est_duration_s,user,colour"
    p = _trace(tmp_path, ["j0,0,10,2,4,llm,3,400.5,1,900,ann,blue"], header=header)
    (j,) = load_trace(p)
    assert j == TraceJob("j0", 0.0, 10.0, 2, 4, "llm", 3, 400.5, True, 900.0, "ann")
    p = _trace(tmp_path, ["j0,0,10,1,1,llm,0,400,350", "j1,1,10,1,1,llm,0,400,"],
               header=HEADER + ",gpu_watts_hint")  # fmt: skip
    assert [j.gpu_watts_hint for j in load_trace(p)] == [350.0, None]


@pytest.mark.parametrize(("hint", "why"), [("0", "must be > 0, got 0"), ("-3", "must be >= 0")])
def test_a_hint_must_be_a_positive_number(tmp_path, hint, why):
    p = _trace(tmp_path, [f"j0,0,10,1,1,llm,0,400,{hint}"], header=HEADER + ",gpu_watts_hint")
    with pytest.raises(TraceError, match=f"row 2, column gpu_watts_hint: {why}"):
        load_trace(p)


job_st = st.builds(
    TraceJob,
    job_id=st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True),
    submit_s=st.floats(0, 1e7),
    duration_s=st.floats(0, 1e7),
    replicas=st.integers(1, 8),
    gpus_per_replica=st.integers(1, 8),
    workload_class=st.sampled_from(["llm", "cnn", "rl"]),
    priority=st.integers(-5, 5),
    gpu_watts=st.floats(0, 1000),
    preemptible=st.booleans(),
    est_duration_s=st.none() | st.floats(0, 1e6),
    gpu_watts_hint=st.none() | st.floats(0.1, 2000),
)


@settings(max_examples=25, deadline=None)
@given(st.lists(job_st, max_size=6, unique_by=lambda j: j.job_id))
def test_write_then_load_round_trips(tmp_path_factory, jobs):
    p = tmp_path_factory.mktemp("rt") / "t.csv"
    write_trace(jobs, p)
    assert load_trace(p) == jobs


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return wattcap_cli("simulate", *args, timeout=60)


def test_cli_bad_trace_exits_2_with_row_and_column(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = _good(5)
    rows.insert(5, "j9,0,-5,1,1,llm,0,400")
    _trace(tmp_path, rows)
    r = _cli("--trace", "T.csv", "--policy", str(DATA / "sim_policy.yaml"), *SITE)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: T.csv row 7, column duration_s: must be >= 0, got -5"
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_cli_job_wider_than_site_exits_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _trace(tmp_path, [*_good(2), "j9,0,10,1,16,llm,0,400"])
    r = _cli("--trace", "T.csv", "--policy", str(DATA / "sim_policy.yaml"), *SITE)
    assert r.returncode == 2
    assert r.stderr.startswith("error: T.csv row 4, column gpus_per_replica: ")


def test_cli_bad_policy_exits_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _trace(tmp_path, _good(2))
    Path("P.yaml").write_text("spec:\n  capWatts: -3\n")
    r = _cli("--trace", "T.csv", "--policy", "P.yaml", *SITE)
    assert r.returncode == 2
    assert r.stderr.startswith("error: P.yaml: spec.capWatts: must be > 0")
    assert "Traceback" not in r.stderr
    # a cap below what the idle site draws: 1.2 x (4 x 800 + 32 x 70) = 6528 W
    Path("P.yaml").write_text("spec:\n  capWatts: 6000\n")
    r = _cli("--trace", "T.csv", "--policy", "P.yaml", *SITE)
    assert r.returncode == 2
    assert r.stderr.startswith("error: P.yaml: spec.capWatts: cap 6000 W is below the site's idle")
