"""The synthetic trace generator: deterministic, valid FORMAT.md rows, load on target."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from wattcap.sim import synth
from wattcap.sim.synth import offered_load, synthetic_trace, write_jobs
from wattcap.sim.trace import load_trace


def test_same_seed_same_jobs_and_other_seed_other_jobs() -> None:
    a = synthetic_trace(2000, seed=7, nodes=64)
    b = synthetic_trace(2000, seed=7, nodes=64)
    c = synthetic_trace(2000, seed=8, nodes=64)
    assert a == b
    assert a != c
    assert len({j.job_id for j in a}) == 2000


def test_jobs_written_are_a_valid_trace(tmp_path: Path) -> None:
    jobs = synthetic_trace(3000, seed=1, nodes=64, gpus_per_node=8)
    path = tmp_path / "synth.csv"
    write_jobs(jobs, path)
    back = load_trace(path, nodes=64, gpus_per_node=8)  # checks every row and the site fit
    assert back == jobs
    classes = {c[0] for c in synth.load_classes()}
    submits = [j.submit_s for j in jobs]
    assert submits == sorted(submits) and submits[0] == 0.0
    for j in jobs:
        assert j.duration_s >= 1
        assert j.gpus_per_replica in (1, 2, 4, 8)
        assert 1 <= j.replicas <= 4
        assert j.replicas == 1 or j.gpus_per_replica == 8
        assert j.workload_class in classes
        assert synth.GPU_IDLE_W <= j.gpu_watts <= synth.GPU_TDP_W
        assert j.priority in (0, 1, 2)
        assert j.preemptible == (j.priority == 0)
        assert j.est_duration_s is None or j.est_duration_s >= 60


def test_mix_has_every_kind_of_job() -> None:
    jobs = synthetic_trace(20000, seed=3)
    n = len(jobs)
    multi = sum(j.replicas > 1 for j in jobs) / n
    assert 0.01 < multi < 0.06
    assert 0.25 < sum(j.preemptible for j in jobs) / n < 0.55
    assert 0.5 < sum(j.est_duration_s is not None for j in jobs) / n < 0.7
    durations = sorted(j.duration_s for j in jobs)
    assert durations[n // 2] < 3600 < durations[int(0.95 * n)]  # heavy tail


@pytest.mark.parametrize(("nodes", "load"), [(1000, 1.3), (64, 0.8), (16, 2.0)])
def test_offered_load_is_near_target(nodes: int, load: float) -> None:
    jobs = synthetic_trace(20000, seed=11, nodes=nodes, gpus_per_node=8, load=load)
    assert offered_load(jobs, nodes, 8) == pytest.approx(load, rel=0.05)


def test_sizes_fit_a_small_site() -> None:
    jobs = synthetic_trace(5000, seed=2, nodes=2, gpus_per_node=4)
    assert max(j.gpus_per_replica for j in jobs) == 4
    assert max(j.replicas for j in jobs) == 2
    assert all(j.gpus <= 8 for j in jobs)


def test_alibaba_size_mix_is_almost_all_single_gpu() -> None:
    jobs = synthetic_trace(5000, seed=4, size_mix=synth.SIZE_MIX_ALIBABA)
    assert sum(j.gpus == 1 for j in jobs) / len(jobs) > 0.97
    assert all(j.replicas == 1 for j in jobs)


def test_builtin_classes_when_data_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(synth, "DEFAULT_CLASSES_CSV", tmp_path / "absent.csv")
    assert synth.load_classes() == list(synth.FALLBACK_CLASSES)
    jobs = synthetic_trace(100, seed=0)
    assert {j.workload_class for j in jobs} <= {c[0] for c in synth.FALLBACK_CLASSES}
    with pytest.raises(FileNotFoundError):
        synth.load_classes(tmp_path / "absent.csv")


def test_custom_classes_file(tmp_path: Path) -> None:
    path = tmp_path / "classes.csv"
    path.write_text("workload_class,gpu_watts_h100,rel_spread\nonly,500,0\n")
    jobs = synthetic_trace(200, seed=0, classes_csv=path)
    assert {(j.workload_class, j.gpu_watts) for j in jobs} == {("only", 500.0)}


def test_fast_path_builds_the_same_jobs_as_the_constructor() -> None:
    """`_make_jobs` fills TraceJob's slots column by column, skipping the
    constructor: each job must equal the one the constructor builds from the
    same row (by keyword, so a column put in the wrong slot shows), the
    defaults included, and the fast path must be the one taken."""
    jobs = synthetic_trace(3, seed=5)
    fields = [f.name for f in dataclasses.fields(synth.TraceJob)]
    given = [f for f in fields if f != "user"]  # `user` is left to its default
    columns = {name: [getattr(j, name) for j in jobs] for name in given}
    columns["job_id"] = ["a", "b", "c"]
    columns["submit_s"] = [1.0, 2.0, 3.0]
    columns["duration_s"] = [10.0, 20.0, 30.0]
    columns["priority"] = [7, 8, 9]
    columns["gpu_watts"] = [301.0, 302.0, 303.0]
    columns["est_duration_s"] = [None, 11.0, None]
    built = synth._make_jobs(columns, 3)
    expected = [synth.TraceJob(**{k: columns[k][i] for k in given}) for i in range(3)]
    assert built == expected
    assert [j.user for j in built] == ["", "", ""]
    assert all(type(j) is synth.TraceJob for j in built)
    # the fast path is the one in use: TraceJob has slots and no __post_init__
    assert not hasattr(synth.TraceJob, "__post_init__") and hasattr(synth.TraceJob, "__slots__")


def test_edge_cases() -> None:
    assert synthetic_trace(0) == []
    assert len(synthetic_trace(1, seed=0)) == 1
    with pytest.raises(ValueError):
        synthetic_trace(10, load=0)
    with pytest.raises(ValueError):
        synthetic_trace(10, nodes=0)
