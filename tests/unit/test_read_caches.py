"""What the cycle keeps from one read of a TrainingJob or its Job to the next (the
resolved priority's copy of the spec, parsed times, parsed annotations) is never
used once the object says something else: each of these tests changes the one
field a cache stands for, with everything else the same, and expects the new value
in the very next cycle."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_controller import NOW, POLICY, job, mem, node, site, tj

from wattcap import controller
from wattcap.admission import Snapshot
from wattcap.jobs import ANN_ADMITTED, ANN_FORECAST, ANN_PLACEMENT
from wattcap.model import format_time, parse_time
from wattcap.priorities import TENANT_USABLE_LABEL, parse_priority_classes


@pytest.fixture
def snaps(monkeypatch: pytest.MonkeyPatch) -> list[Snapshot]:
    """The snapshot each cycle hands to `decide`."""
    seen: list[Snapshot] = []
    real = controller.decide

    def spy(snap: Snapshot) -> Any:
        seen.append(snap)
        return real(snap)

    monkeypatch.setattr(controller, "decide", spy)
    return seen


def _classes(value: int) -> Any:
    return parse_priority_classes(
        [{"metadata": {"name": "team", "labels": {TENANT_USABLE_LABEL: "true"}}, "value": value}]
    )


def _served(obj: dict[str, Any], rv: str, gen: int = 1) -> dict[str, Any]:
    obj["metadata"].update(resourceVersion=rv, generation=gen)
    return obj


def test_a_priority_class_changed_under_an_unchanged_job_is_used_at_once(snaps) -> None:
    m = mem()
    ref = ("ml", "a")
    for k, value in enumerate((3, 3, 7, 7, 2)):  # the class's value, edited by an admin
        obj = _served(tj("a", gpus=2, priorityClassName="team"), "5")
        state = site(POLICY, [node("n1")], [], [obj], {}, priority_classes=_classes(value))
        plan = controller.cycle(state, m, NOW + 15 * k)
        assert plan.tj_status[ref]["priority"] == value, (k, value)
        assert snaps[-1].queued[0].priority == value
    # the spec edited (a new generation): a lower `spec.priority` within the class
    obj = _served(tj("a", gpus=2, priorityClassName="team", priority=1), "6", gen=2)
    plan = controller.cycle(
        site(POLICY, [node("n1")], [], [obj], {}, priority_classes=_classes(2)), m, NOW + 90
    )
    assert plan.tj_status[ref]["priority"] == 1


def test_a_recreated_job_is_queued_from_its_own_creation_time(snaps) -> None:
    m = mem()
    for k, (uid, created) in enumerate(
        (
            ("u1", "2026-07-01T00:00:00Z"),
            ("u1", "2026-07-01T00:00:00Z"),
            ("u2", "2026-07-01T00:05:00Z"),
        )
    ):
        obj = _served(tj("a", gpus=2, created=created), "5")
        obj["metadata"]["uid"] = uid
        controller.cycle(site(POLICY, [], [], [obj], {}), m, NOW + 600 + 15 * k)
        assert snaps[-1].queued[0].submitted_s == parse_time(created, "t"), k


def test_a_running_jobs_annotations_are_read_again_when_they_change(snaps) -> None:
    m = mem()
    nodes = [node("n1"), node("n2")]
    running = _served(tj("a", gpus=8), "5")
    owned = job("a", ["n1"], gpu_watts=400)
    owned["metadata"]["annotations"][ANN_ADMITTED] = format_time(NOW - 100)
    for k in range(2):
        controller.cycle(site(POLICY, nodes, [], [running], {("ml", "a"): owned}), m, NOW + k)
        got = snaps[-1].running[0]
        assert (got.nodes, got.forecast_gpu_watts, got.started_s) == (("n1",), 400, NOW - 100)
    # moved and re-admitted: a new placement, forecast and admission time on its Job
    owned = json.loads(json.dumps(owned))
    owned["metadata"]["annotations"].update(
        {
            ANN_PLACEMENT: json.dumps(["n2"]),
            ANN_FORECAST: json.dumps({"gpuWatts": 500, "durationSeconds": 3600}),
            ANN_ADMITTED: format_time(NOW - 10),
        }
    )
    controller.cycle(site(POLICY, nodes, [], [running], {("ml", "a"): owned}), m, NOW + 30)
    got = snaps[-1].running[0]
    assert (got.nodes, got.forecast_gpu_watts, got.started_s) == (("n2",), 500, NOW - 10)


def test_an_unchanged_site_is_not_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the caches save (bench/bench_cycle.py): an unchanged TrainingJob's spec is
    not copied again for its resolved priority, its creation time and its Job's
    times and annotations are not parsed again."""
    copies: list[str] = []
    times: list[str] = []
    parsed: list[str] = []
    real_replace, real_time, real_loads = controller.replace, controller.parse_time, json.loads

    def replace(obj: Any, **kw: Any) -> Any:
        if isinstance(obj, controller.TrainingJobSpec):
            copies.append(obj.name)
        return real_replace(obj, **kw)

    def parse_time(value: Any, path: str) -> float:
        times.append(path)
        return real_time(value, path)

    def loads(raw: str, **kw: Any) -> Any:
        parsed.append(raw)
        return real_loads(raw, **kw)

    monkeypatch.setattr(controller, "replace", replace)
    monkeypatch.setattr(controller, "parse_time", parse_time)
    monkeypatch.setattr(controller.json, "loads", loads)
    controller._forecast_of.cache_clear()  # kept by text, process-wide: other tests
    controller._placement_of.cache_clear()  # may have parsed the same annotations
    m = mem()
    waiting = _served(tj("w", gpus=8, prio=3), "5")
    running = _served(tj("r", gpus=8, prio=2), "5")
    owned = job("r", ["n1"])
    owned["metadata"]["annotations"][ANN_ADMITTED] = format_time(NOW - 100)
    state = site(POLICY, [node("n1")], [], [waiting, running], {("ml", "r"): owned})
    controller.cycle(state, m, NOW)
    assert copies and times and parsed  # the first cycle reads them
    copies.clear(), times.clear(), parsed.clear()
    for k in range(1, 3):
        controller.cycle(state, m, NOW + 15 * k)
    assert (copies, times, parsed) == ([], [], [])
