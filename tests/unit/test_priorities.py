"""Priorities come from admin-defined PriorityClasses; a tenant's own number
can only lower its job (`wattcap.priorities`, and the cycle that resolves them)."""

from __future__ import annotations

from typing import Any

import pytest
from test_controller import CLASSES, NOW, mem, node, site, site_policy, tj

from wattcap.controller import cycle
from wattcap.model import ManifestError, TrainingJobSpec, format_time
from wattcap.priorities import (
    TENANT_USABLE_LABEL,
    job_priority,
    parse_priority_classes,
    reported_priority,
)


def spec(cls: str | None = None, prio: int | None = None) -> TrainingJobSpec:
    return TrainingJobSpec("j", "ml", 1, 8, priority=prio, priority_class_name=cls)


def klass(name: str, value: int, usable: bool = True) -> dict[str, Any]:
    labels = {TENANT_USABLE_LABEL: "true"} if usable else {"team": "infra"}
    return {"metadata": {"name": name, "labels": labels}, "value": value}


def test_the_class_value_is_the_priority_and_spec_priority_only_lowers_it() -> None:
    classes = parse_priority_classes([klass("batch", 100)])
    assert job_priority(spec("batch"), classes) == 100
    assert job_priority(spec("batch", 40), classes) == 40
    assert job_priority(spec("batch", 10**9), classes) == 100, "bounded by the class"
    assert job_priority(spec(), classes) == 0, "no class: the ceiling is 0"
    assert job_priority(spec(None, 10**9), classes) == 0
    assert job_priority(spec(None, -5), classes) == -5


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("system-cluster-critical", "system class"),
        ("nowhere", "does not exist"),
        ("inference-critical", "not marked for wattcap"),
    ],
)
def test_a_class_tenants_may_not_name_is_refused_naming_the_field(name: str, why: str) -> None:
    classes = parse_priority_classes(
        [
            klass("system-cluster-critical", 2_000_000_000),
            klass("inference-critical", 1_000_000, usable=False),
        ]
    )
    with pytest.raises(ManifestError) as err:
        job_priority(spec(name), classes)
    assert err.value.field == "spec.priorityClassName"
    assert why in str(err.value)


def test_clients_read_the_resolved_priority_never_the_raw_number() -> None:
    assert reported_priority({"priority": 7}, 10**6) == 7
    assert reported_priority({}, 10**6) == 0
    assert reported_priority({}, -3) == -3


def with_spec(obj: dict[str, Any], **fields: Any) -> dict[str, Any]:
    obj["spec"].update(fields)
    return obj


def test_a_tenant_cannot_jump_the_queue_by_writing_a_big_number() -> None:
    """`greedy` waits longer and writes priority 1,000,000 under a class of 1;
    `fair` names a class of 5. One 8-GPU node: only one can start, and it is
    `fair`; the status says which priority each got."""
    pol = site_policy(20_000)
    greedy = with_spec(tj("greedy", prio=1, created=format_time(NOW - 600)), priority=1_000_000)
    fair = tj("fair", prio=5, created=format_time(NOW - 30))
    plan = cycle(site(pol, [node("a")], [], [greedy, fair], {}), mem(), NOW)
    assert [j["metadata"]["name"] for j in plan.create_jobs] == ["fair"]
    assert plan.tj_status[("ml", "greedy")]["priority"] == 1
    assert plan.tj_status[("ml", "fair")]["priority"] == 5
    # without a class, a big number is bounded by 0
    nobody = with_spec(tj("nobody", created=format_time(NOW - 600)), priority=1_000_000)
    plan = cycle(site(pol, [node("a")], [], [nobody, fair], {}), mem(), NOW)
    assert [j["metadata"]["name"] for j in plan.create_jobs] == ["fair"]


def test_a_job_naming_an_unmarked_class_waits_outside_the_queue_until_it_is_marked() -> None:
    pol = site_policy(20_000)
    job = with_spec(tj("vip"), priorityClassName="inference-critical")
    classes = {**CLASSES, **parse_priority_classes([klass("inference-critical", 10**6, False)])}
    plan = cycle(site(pol, [node("a")], [], [job], {}, priority_classes=classes), mem(), NOW)
    assert not plan.create_jobs
    st = plan.tj_status[("ml", "vip")]
    assert (st["phase"], st["reason"]) == ("Queued", "InvalidPriorityClass")
    assert st["message"].startswith("spec.priorityClassName: ")
    marked = {**CLASSES, **parse_priority_classes([klass("inference-critical", 10**6)])}
    plan = cycle(site(pol, [node("a")], [], [job], {}, priority_classes=marked), mem(), NOW)
    assert [j["metadata"]["name"] for j in plan.create_jobs] == ["vip"]
