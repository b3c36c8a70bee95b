"""Which TrainingJob statuses a cycle writes (`statuswrites.StatusWrites`).

A site with thousands of waiting jobs rewrote each one whose message or
estimated start moved, every cycle; at a large site those writes are most of
the cycle's API requests. Changes of substance go out every cycle; a refresh
(a new message or estimated start, nothing else) waits for a bounded share
of a cycle, least recently written first, so none starves and none is lost.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wattcap.statuswrites import StatusWrites

Ref = tuple[str, str]


def waiting(
    message: str, reason: str = "WaitingForPower", at: str = "2026-01-01T00:00:00Z"
) -> dict[str, Any]:
    return {
        "phase": "Queued",
        "reason": reason,
        "message": message,
        "estimatedStart": None,
        "placement": [],
        "conditions": [
            {
                "type": "Admitted",
                "status": "False",
                "reason": reason,
                "message": message,
                "lastTransitionTime": at,
            }
        ],
    }


def refs(n: int) -> list[Ref]:
    return [("ns", f"j-{i:03d}") for i in range(n)]


def test_changes_of_substance_all_go_out_whatever_the_budget() -> None:
    w = StatusWrites(refreshes_per_cycle=4)
    current = {r: waiting("short of 2 kW") for r in refs(100)}
    desired = {
        r: {**waiting("admitted"), "phase": "Admitted", "reason": "Admitted"} for r in refs(100)
    }
    assert sorted(w.pick(current, desired)) == refs(100)
    # a new reason, a first status, a condition's new status: substance too
    desired = {r: waiting("short of 2 kW", reason="WaitingForGPUs") for r in refs(10)}
    assert len(w.pick({r: waiting("short of 2 kW") for r in refs(10)}, desired)) == 10
    assert len(w.pick({}, {r: waiting("x") for r in refs(10)})) == 10
    flipped = waiting("same")
    flipped["conditions"][0]["status"] = "True"
    assert w.pick({("ns", "a"): waiting("same")}, {("ns", "a"): flipped}) == [("ns", "a")]


def test_a_status_with_nothing_new_is_not_written() -> None:
    """A timestamp a cycle stamps on every condition is not news by itself."""
    w = StatusWrites(refreshes_per_cycle=4)
    current = {r: waiting("short of 2 kW") for r in refs(5)}
    desired = {r: waiting("short of 2 kW", at="2026-01-01T00:05:00Z") for r in refs(5)}
    assert w.pick(current, desired) == []
    assert w.deferred == 0


def test_refreshes_are_bounded_per_cycle_and_none_starves() -> None:
    """Every message moves every cycle (a measured site's free power does): each
    job is still refreshed within ceil(n / budget) cycles, at most `budget` a cycle."""
    n, budget = 10, 4
    w = StatusWrites(refreshes_per_cycle=budget, refresh_after_s=0)
    current = {r: waiting("short of 2.0 kW") for r in refs(n)}
    last: dict[Ref, int] = {}
    for c in range(12):
        desired = {r: waiting(f"short of {2 + (c + 1) / 10:.1f} kW") for r in refs(n)}
        picked = w.pick(current, desired, now_s=c)
        assert len(picked) == budget
        assert w.deferred == n - budget
        w.written(picked)
        for r in picked:
            current[r] = desired[r]
            last[r] = c
        if c >= math.ceil(n / budget) - 1:
            stale = [r for r in refs(n) if c - last.get(r, -1) >= math.ceil(n / budget)]
            assert not stale, f"cycle {c}: not refreshed for ceil(n/budget) cycles: {stale}"


def test_a_refresh_that_failed_is_first_in_line_next_cycle() -> None:
    w = StatusWrites(refreshes_per_cycle=2, refresh_after_s=0)
    current = {r: waiting("old") for r in refs(6)}
    desired = {r: waiting("new") for r in refs(6)}
    first = w.pick(current, desired)
    w.written(first[:1])  # the other write was refused
    assert first[1] in w.pick(current, desired, now_s=1)


def test_a_jobs_text_is_refreshed_at_most_once_a_refresh_interval() -> None:
    """A measured site's free power moves every cycle, and so does every waiting
    job's message: refreshed each cycle, a few jobs would cost a write each per
    cycle forever. A job whose text was written under `refresh_after_s` ago
    waits; its substance never does."""
    w = StatusWrites(refreshes_per_cycle=8, refresh_after_s=30)
    current = {r: waiting("short of 2.0 kW") for r in refs(3)}
    for t in range(0, 91, 5):  # a cycle every 5 s, the text new each time
        desired = {r: waiting(f"short of {2 + t / 100:.2f} kW") for r in refs(3)}
        picked = w.pick(current, desired, now_s=t)
        assert len(picked) == (3 if t % 30 == 0 else 0), f"at {t} s: {picked}"
        w.written(picked)
        current.update({r: desired[r] for r in picked})
    moved = {("ns", "j-000"): waiting("short", reason="WaitingForGPUs")}
    assert w.pick(current, moved, now_s=95) == [("ns", "j-000")]


def test_a_message_appearing_for_the_first_time_is_substance() -> None:
    """'Why does this job wait' is answered at once, never left for a later cycle."""
    w = StatusWrites(refreshes_per_cycle=0)
    current = {r: {"phase": "Queued", "reason": "WaitingForPower"} for r in refs(3)}
    assert len(w.pick(current, {r: waiting("short of 2 kW") for r in refs(3)})) == 3


def test_memory_is_bounded_by_the_jobs_that_exist() -> None:
    w = StatusWrites(refreshes_per_cycle=8)
    for batch in range(20):
        rs = [("ns", f"b{batch}-{i}") for i in range(50)]
        picked = w.pick({}, {r: waiting("x") for r in rs})
        w.written(picked)
    assert w.remembered() <= 50


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 40),
    budget=st.integers(1, 12),
    substance=st.sets(st.integers(0, 39)),
)
def test_every_due_status_is_written_within_its_turn(
    n: int, budget: int, substance: set[int]
) -> None:
    """Whatever the mix: every change of substance in the cycle it is seen, every
    refresh within ceil(refreshes / budget) cycles, never more than the budget
    of refreshes in one cycle."""
    w = StatusWrites(refreshes_per_cycle=budget, refresh_after_s=0)
    rs = refs(n)
    current = {r: waiting("old") for r in rs}
    desired = {
        r: waiting("new", reason="WaitingForGPUs" if i in substance else "WaitingForPower")
        for i, r in enumerate(rs)
    }
    must = {r for i, r in enumerate(rs) if i in substance}
    refreshes = n - len(must)
    done: set[Ref] = set()
    for t in range(math.ceil(refreshes / budget) if refreshes else 1):
        picked = w.pick(current, desired, now_s=t)
        assert must <= set(picked)
        assert len(set(picked) - must) <= budget
        w.written(picked)
        for r in picked:
            current[r] = desired[r]
        done |= set(picked)
        must = set()
    assert done == set(rs)


def test_a_new_forecast_is_substance() -> None:
    """The forecast is what the job is planned at, not text: a class's learned
    draw shows on its waiting jobs in the cycle that learned it."""
    w = StatusWrites(refreshes_per_cycle=0)
    prior = {**waiting("x"), "forecast": {"source": "prior", "gpuWatts": 700}}
    learned = {**waiting("x"), "forecast": {"source": "history", "gpuWatts": 410}}
    assert w.pick({("ns", "a"): prior}, {("ns", "a"): learned}) == [("ns", "a")]


class _RecordingStatusApi:
    """Stands in for the CustomObjectsApi: the status bodies written, by ref."""

    def __init__(self) -> None:
        self.bodies: dict[Ref, dict[str, Any]] = {}

    def patch_namespaced_custom_object_status(
        self, group: str, version: str, ns: str, plural: str, name: str, body: Any, **_: Any
    ) -> None:
        self.bodies[(ns, name)] = body["status"]


def test_a_conditions_transition_time_moves_only_when_its_status_does() -> None:
    """Kubernetes convention (metav1.Condition): `lastTransitionTime` is when
    the condition's status last changed. A job waiting for an hour shows when
    it began to wait, not the time of its latest message refresh."""
    from kubernetes import client

    from wattcap.cluster import Cluster
    from wattcap.controller import Plan, SiteState
    from wattcap.model import PowerPolicy

    t0, t1 = "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"
    stored = {
        ("ns", "waits"): waiting("short of 2.0 kW", at=t0),  # same status, new text
        ("ns", "starts"): waiting("short of 2.0 kW", at=t0),  # its status flips
    }
    started = waiting("admitted", reason="Admitted", at=t1)
    started["conditions"][0]["status"] = "True"
    desired = {
        ("ns", "waits"): waiting("short of 3.5 kW", at=t1),
        ("ns", "starts"): started,
        ("ns", "new"): waiting("short of 1.0 kW", at=t1),  # never had a status
    }
    tjs = [
        {"metadata": {"namespace": ns, "name": name}, "status": status}
        for (ns, name), status in stored.items()
    ]
    tjs.append({"metadata": {"namespace": "ns", "name": "new"}})
    state = SiteState(PowerPolicy(cap_watts=1e5), [], [], tjs, {})
    cluster = Cluster(client.ApiClient())
    api = _RecordingStatusApi()
    cluster.custom = api  # type: ignore[assignment]
    assert cluster.apply_status(Plan(tj_status=desired), state, "") == 0
    when = {ref: body["conditions"][0]["lastTransitionTime"] for ref, body in api.bodies.items()}
    assert when == {("ns", "waits"): t0, ("ns", "starts"): t1, ("ns", "new"): t1}
    assert api.bodies[("ns", "waits")]["message"] == "short of 3.5 kW"


def test_a_new_reason_under_the_same_status_keeps_the_transition_time() -> None:
    from wattcap.statuswrites import keep_transition_times

    t0, t1 = "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"
    was = waiting("short", reason="WaitingForPower", at=t0)
    now = waiting("no GPUs", reason="WaitingForGPUs", at=t1)
    kept = keep_transition_times(was, now)
    assert kept["conditions"][0]["lastTransitionTime"] == t0
    assert kept["conditions"][0]["reason"] == "WaitingForGPUs"
    assert now["conditions"][0]["lastTransitionTime"] == t1  # the plan's own is not changed
    # stored without a time (written by an older operator): the cycle's time
    was["conditions"][0].pop("lastTransitionTime")
    assert keep_transition_times(was, now)["conditions"][0]["lastTransitionTime"] == t1


def test_transition_times_are_kept_on_the_written_statuses_only(monkeypatch) -> None:
    """`keep_transition_times` ran on every job's status every cycle, before `pick`
    threw most of them away: at 5,000 jobs a share of the cycle's bookkeeping. `pick`
    never looks at a condition's time, so keeping it on the picked statuses alone
    writes the same bodies."""
    from kubernetes import client

    from wattcap import statuswrites
    from wattcap.cluster import Cluster
    from wattcap.controller import Plan, SiteState
    from wattcap.model import PowerPolicy

    t0, t1 = "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"
    stored = {r: waiting(f"short of {i} kW", at=t0) for i, r in enumerate(refs(40))}
    desired = {r: waiting(f"short of {i} kW", at=t1) for i, r in enumerate(refs(40))}
    desired[("ns", "j-003")] = waiting("short of 9 kW", reason="WaitingForGPUs", at=t1)
    flipped = waiting("admitted", reason="Admitted", at=t1)
    flipped["conditions"][0]["status"] = "True"
    desired[("ns", "j-007")] = flipped
    # the bodies the old path wrote: every status kept, then picked
    full = {r: statuswrites.keep_transition_times(stored[r], s) for r, s in desired.items()}
    expected = {r: full[r] for r in StatusWrites().pick(stored, full)}
    assert sorted(expected) == [("ns", "j-003"), ("ns", "j-007")]

    calls: list[str] = []
    real = statuswrites.keep_transition_times

    def counted(current: Any, status: Any) -> Any:
        calls.append(status["message"])
        return real(current, status)

    monkeypatch.setattr(statuswrites, "keep_transition_times", counted)
    tjs = [{"metadata": {"namespace": ns, "name": n}, "status": s} for (ns, n), s in stored.items()]
    cluster = Cluster(client.ApiClient())
    api = _RecordingStatusApi()
    cluster.custom = api  # type: ignore[assignment]
    state = SiteState(PowerPolicy(cap_watts=1e5), [], [], tjs, {})
    assert cluster.apply_status(Plan(tj_status=desired), state, "") == 0
    assert api.bodies == expected
    assert sorted(calls) == ["admitted", "short of 9 kW"]


def test_first_answers_to_waiting_jobs_share_a_bounded_part_of_each_cycle() -> None:
    """A burst of 300 new jobs, all waiting: their first statuses (why each
    waits) go out at most `firsts` a cycle, in the order the cycle gave them
    (its queue's), each within ceil(n / firsts) cycles; written at once, they
    made a burst's cycle last tens of seconds (bench/load.py, issue 15)."""
    n, firsts = 300, 64
    w = StatusWrites(firsts_per_cycle=firsts)
    current: dict[Ref, dict[str, Any]] = {}
    desired = {r: waiting("short of 2 kW") for r in refs(n)}
    order: list[Ref] = []
    for c in range(math.ceil(n / firsts)):
        picked = w.pick(current, desired, now_s=c)
        assert len(picked) == min(firsts, n - len(order))
        assert w.firsts_deferred == n - len(order) - len(picked)
        w.written(picked)
        current.update({r: desired[r] for r in picked})
        order += picked
    assert order == refs(n), "every job answered once, in the cycle's order"
    assert w.pick(current, desired, now_s=9) == [] and w.firsts_deferred == 0


def test_first_answers_that_are_not_a_wait_go_out_whatever_the_budget() -> None:
    """Admitted, refused as invalid, or any change to a status already shown:
    written in the cycle that decides it, however many waiting jobs are new."""
    w = StatusWrites(firsts_per_cycle=2)
    new = {r: waiting("short") for r in refs(10)}
    admitted = {("ns", "adm"): {**waiting("go"), "phase": "Admitted", "reason": "Admitted"}}
    failed = {("ns", "bad"): {"phase": "Failed", "reason": "InvalidSpec", "message": "x"}}
    moved = {("ns", "old"): waiting("short", reason="WaitingForGPUs")}
    current = {("ns", "old"): waiting("short")}
    picked = w.pick(current, {**new, **admitted, **failed, **moved})
    assert {("ns", "adm"), ("ns", "bad"), ("ns", "old")} <= set(picked)
    assert len(picked) == 3 + 2 and w.firsts_deferred == 8


def test_a_first_answer_that_failed_keeps_its_place() -> None:
    w = StatusWrites(firsts_per_cycle=2)
    desired = {r: waiting("short") for r in refs(6)}
    first = w.pick({}, desired)
    w.written(first[1:])  # the first write was refused
    assert w.pick({first[1]: desired[first[1]]}, desired, now_s=1)[0] == first[0]


def test_a_first_answer_sent_with_an_event_goes_out_with_it() -> None:
    """The controller tells a job it can never fit by an Event once, while its
    stored status does not say so yet: deferred, that Event would repeat."""
    w = StatusWrites(firsts_per_cycle=1)
    desired = {r: waiting("never fits", reason="Unschedulable") for r in refs(4)}
    picked = w.pick({}, desired, evented=set(refs(4)[2:]))
    assert picked == [refs(4)[2], refs(4)[3], refs(4)[0]]
