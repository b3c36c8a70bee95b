"""Placement keeps replicas whole, packs best-fit, and undoes partial placements."""

from __future__ import annotations

from wattcap.placement import FreeGpus


def test_best_fit_keeps_whole_nodes_free() -> None:
    f = FreeGpus([("a", 8), ("b", 3), ("c", 8)])
    assert f.place(1, 2) == ("b",)  # smallest node that fits
    assert f.place(1, 8) == ("a",)
    assert f.free_on("c") == 8


def test_replicas_of_one_job_go_to_distinct_nodes() -> None:
    f = FreeGpus([("a", 8)])
    assert f.place(2, 4) is None
    f = FreeGpus([("a", 8), ("b", 4), ("c", 4)])
    assert f.place(2, 4) == ("b", "c")
    assert f.free_on("a") == 8


def test_failed_placement_takes_nothing() -> None:
    f = FreeGpus([("a", 8), ("b", 4)])
    assert f.place(2, 8) is None  # 12 free but only one 8-GPU node
    assert (f.free_on("a"), f.free_on("b"), f.total_free) == (8, 4, 12)
