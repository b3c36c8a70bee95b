"""The operator's garbage collector settings (`handlers.collect_between_cycles`):
full collections run between cycles, not inside them, and nothing it freezes
is kept past the next collection (memory stays bounded over many cycles)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from wattcap import handlers


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def _restore_collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_garbage_frozen_between_cycles_is_freed_by_the_next_collection() -> None:
    handlers.collect_between_cycles()
    obj = _Node()  # alive at the next collection: frozen with the rest
    gone = weakref.ref(obj)
    handlers.collect_between_cycles()
    assert gc.get_freeze_count() > 0
    del obj  # now garbage, in a cycle, among the frozen objects
    handlers.collect_between_cycles()
    assert gone() is None


def test_the_frozen_objects_do_not_grow_over_many_cycles() -> None:
    handlers.collect_between_cycles()
    start = gc.get_freeze_count()
    for _ in range(50):
        garbage = [_Node() for _ in range(1_000)]  # a cycle's cyclic garbage
        del garbage
        handlers.collect_between_cycles()
    assert gc.get_freeze_count() < start + 1_000


def test_a_cycle_allocates_without_a_full_collection_of_the_frozen_heap() -> None:
    handlers.collect_between_cycles()
    full = [0]

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full[0] += 1

    gc.callbacks.append(count)
    try:
        keep = [{"a": [i]} for i in range(100_000)]  # a cycle's worth of new objects
    finally:
        gc.callbacks.remove(count)
    assert keep and full[0] == 0
