"""Which watch events wake the site loop (handlers.SpecChanges)."""

from __future__ import annotations

from wattcap.handlers import SpecChanges


def obj(uid: str, generation: int, phase: str = "") -> dict:
    return {"metadata": {"uid": uid, "generation": generation}, "status": {"phase": phase}}


def test_a_status_write_does_not_wake_but_a_new_spec_or_object_does() -> None:
    specs = SpecChanges()
    assert specs.changed(None, obj("a", 1))  # first seen (the initial listing)
    assert not specs.changed("MODIFIED", obj("a", 1, "Running"))  # the loop's own status write
    assert specs.changed("MODIFIED", obj("a", 2, "Running"))  # a spec edit
    assert specs.changed("ADDED", obj("b", 1))


def test_a_deleted_object_wakes_and_is_forgotten() -> None:
    specs = SpecChanges()
    specs.changed(None, obj("a", 1))
    assert specs.changed("DELETED", obj("a", 1))
    assert specs._seen == {}
    assert specs.changed("ADDED", obj("a", 1))  # re-created with the same uid is new again
