"""A waiting job's status is compared with the stored one only when what it is built
from, or the stored one, moved.

At 5,000 TrainingJobs most of them wait, and `StatusWrites.pick` compared each one's
status with the stored one every cycle, though nearly none of them changed. The cycle
gives each waiting job's status a key (`Plan.status_keys`: the TrainingJob's uid and
resourceVersion, and everything the status is built from) under which pick's last
verdict stands. A tenant must see exactly what comparing everything writes: these
tests run the same cycles twice, once with the keys and once comparing everything,
while the inputs move.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from operator_view import node
from test_controller import CLASSES, NOW, mem, site, site_policy, tj

from wattcap import statuswrites
from wattcap.controller import ControllerMemory, cycle
from wattcap.priorities import TENANT_USABLE_LABEL, parse_priority_classes
from wattcap.statuswrites import StatusWrites

Ref = tuple[str, str]


@dataclass
class Run:
    """One operator's view of one cluster: its memory, its writes, its objects."""

    keyed: bool
    tjs: list[dict[str, Any]]
    mem: ControllerMemory = field(default_factory=mem)
    writes: StatusWrites = field(
        default_factory=lambda: StatusWrites(refreshes_per_cycle=2, refresh_after_s=20)
    )
    jobs: dict[Ref, dict[str, Any]] = field(default_factory=dict)

    def by_ref(self) -> dict[Ref, dict[str, Any]]:
        return {(t["metadata"]["namespace"], t["metadata"]["name"]): t for t in self.tjs}

    def step(self, now: float, refuse: bool = False, **site_kw: Any) -> tuple[Any, list[Any]]:
        """One cycle and its status writes, as the API server takes them (a write
        gives its object a new resourceVersion; `refuse`: all of them refused)."""
        pol = site_kw.pop("policy")
        state = site(pol, [node("a"), node("b")], [], self.tjs, self.jobs, **site_kw)
        plan = cycle(state, self.mem, now)
        current = {ref: t.get("status") or {} for ref, t in self.by_ref().items()}
        keys = plan.status_keys if self.keyed else {}
        picked = self.writes.to_write(current, plan.tj_status, now, keys)
        if not refuse:
            objs = self.by_ref()
            for ref, status in picked:
                meta = objs[ref]["metadata"]
                objs[ref]["status"] = status
                meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
            self.writes.written(ref for ref, _ in picked)
        for body in plan.create_jobs:
            meta = body["metadata"]
            self.jobs[plan.job_refs[(meta["namespace"], meta["name"])]] = body
        return plan, picked


def served(obj: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    obj["metadata"].update(resourceVersion="1", generation=generation)
    return obj


def edit(run: Run, name: str, **spec: Any) -> None:
    """A tenant edits a spec: a new generation and resourceVersion."""
    meta = run.by_ref()[("ml", name)]["metadata"]
    run.by_ref()[("ml", name)]["spec"].update(spec)
    meta["generation"] += 1
    meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)


def events(plan: Any) -> list[tuple[str, str, str, str]]:
    return [(o["metadata"]["name"], kind, why, msg) for o, kind, why, msg in plan.events]


def classes(values: dict[int, int]) -> Any:
    """PriorityClasses marked for wattcap: "prio-N" of the value given for N."""
    return parse_priority_classes(
        {"metadata": {"name": f"prio-{n}", "labels": {TENANT_USABLE_LABEL: "true"}}, "value": v}
        for n, v in values.items()
    )


def test_the_keyed_picks_write_what_comparing_everything_writes_while_inputs_move(
    monkeypatch,
) -> None:
    first = [
        served(tj(f"j{i}", gpus=(8, 4, 2, 1)[i % 4], prio=1 + i % 3, pre=i % 2 == 0))
        for i in range(12)
    ]
    keyed, full = Run(True, copy.deepcopy(first)), Run(False, copy.deepcopy(first))
    raised = classes({1: 1, 2: 7, 3: 3})  # an admin raises prio-2: no TrainingJob changes
    lower, nudged, longer = (
        site_policy(11_000),
        site_policy(13_600),
        site_policy(13_600, default_duration_s=7200),
    )
    steps: list[tuple[str, Any, Any]] = [
        ("admits, first statuses", None, site_policy(14_000)),
        ("statuses written: new resourceVersions", None, site_policy(14_000)),
        ("nothing moved", None, site_policy(14_000)),
        ("nothing moved again", None, site_policy(14_000)),
        ("cap nudged: only messages move", None, nudged),
        ("default duration: only forecasts move", None, longer),
        ("cap lowered: shedding", None, lower),
        (
            "a job added: the waits ahead move",
            lambda r: r.tjs.append(served(tj("late", gpus=2))),
            lower,
        ),
        (
            "a spec edited: its forecast and size move",
            lambda r: edit(r, "j5", gpusPerReplica=8),
            lower,
        ),
        (
            "a spec edited past any node: unschedulable",
            lambda r: edit(r, "j9", gpusPerReplica=16),
            lower,
        ),
        ("a priority class raised", None, lower),
        ("stored as Preempted by someone", lambda r: _preempted(r, "j7"), lower),
        ("every write refused", None, lower),
        ("written again", None, lower),
        ("a job deleted", lambda r: r.tjs.pop(3), lower),
        ("quiet", None, lower),
        ("quiet, refreshes due", None, lower),
        ("quiet again", None, lower),
    ]
    compared = {True: 0, False: 0}
    which = [True]
    real = statuswrites.substance_changed

    def counted(*a: Any) -> bool:
        compared[which[0]] += 1
        return real(*a)

    monkeypatch.setattr(statuswrites, "substance_changed", counted)
    for k, (what, change, pol) in enumerate(steps):
        out = []
        for run in (keyed, full):
            which[0] = run.keyed
            if change is not None:
                change(run)
            out.append(
                run.step(
                    NOW + 15 * k,
                    refuse=what == "every write refused",
                    policy=pol,
                    priority_classes=raised if k >= 10 else CLASSES,
                )
            )
        (plan_c, picked_c), (plan_f, picked_f) = out
        assert plan_c.tj_status == plan_f.tj_status, what
        assert picked_c == picked_f, what
        assert events(plan_c) == events(plan_f), what
    assert keyed.by_ref() == full.by_ref()
    # and the keys were used: fewer statuses compared (most steps above move inputs)
    assert compared[True] < compared[False] - 50, compared


def test_a_quiet_cycle_compares_no_waiting_status(monkeypatch) -> None:
    """Nothing moved: none of the waiting jobs' statuses is compared again."""
    run = Run(True, [served(tj(f"j{i}", gpus=8, prio=1)) for i in range(8)])
    pol = site_policy(9_000)
    for k in range(3):
        run.step(NOW + 15 * k, policy=pol)
    compared: list[Any] = []
    real = statuswrites.substance_changed

    def counted(*a: Any) -> Any:
        compared.append(a)
        return real(*a)

    monkeypatch.setattr(statuswrites, "substance_changed", counted)
    quiet, picked = run.step(NOW + 45, policy=pol)
    waiting = [r for r, s in quiet.tj_status.items() if s.get("phase") == "Queued"]
    assert len(waiting) >= 5 and picked == []
    assert sorted(quiet.status_keys) == sorted(waiting)
    assert len(compared) == len(quiet.tj_status) - len(waiting)


def _preempted(run: Run, name: str) -> None:
    obj = run.by_ref()[("ml", name)]
    obj["status"] = {**obj.get("status", {}), "phase": "Preempted"}
    obj["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
