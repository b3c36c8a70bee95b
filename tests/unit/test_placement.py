"""Placement keeps replicas whole, packs best-fit, and undoes partial placements."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from wattcap.placement import FreeGpus, NodeOrderIndex


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


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 12),
    st.lists(st.tuples(st.integers(1, 2), st.sampled_from([1, 2, 4, 8])), max_size=40),
    st.lists(st.tuples(st.integers(1, 2), st.sampled_from([1, 2, 4, 8])), max_size=10),
)
def test_a_kept_index_places_as_a_fresh_one(n_nodes: int, life: list, probe: list) -> None:
    """The simulator keeps a node-order index across cycles instead of building
    FreeGpus from the nodes each time: after any sequence of starts and stops,
    its FreeGpus must place exactly as a fresh one does (ties go to node order)."""
    names = [f"n{i}" for i in range(n_nodes)]
    kept = NodeOrderIndex((n, 8) for n in names)
    free = dict.fromkeys(names, 8)
    running: list[tuple[tuple[str, ...], int]] = []
    for k, (replicas, gpr) in enumerate(life):
        if k % 3 == 2 and running:  # every third event stops the oldest job
            nodes, g = running.pop(0)
            kept.release(nodes, g)
            for n in nodes:
                free[n] += g
            continue
        nodes = FreeGpus(free.items()).place(replicas, gpr)
        if nodes is not None:
            kept.take(nodes, gpr)
            for n in nodes:
                free[n] -= gpr
            running.append((nodes, gpr))
    a, b = kept.fits(), FreeGpus(free.items())
    assert a.total_free == b.total_free
    assert [a.place(r, g) for r, g in probe] == [b.place(r, g) for r, g in probe]
