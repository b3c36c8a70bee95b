"""A burst of admissions is written over several cycles, not one.

Each admission is three writes (the Job, the status, an Event). At 1,000
nodes a burst of 5,000 jobs admitted a thousand at once: one cycle of three
thousand writes, tens of seconds long (bench/load.py, issue 15), during
which the site went undecided. Leaving admissions out is always safe for
the cap (what is not admitted does not draw), so a cycle writes at most
ADMITS_PER_CYCLE of them, the first in the core's order, and the next cycle
follows within a second.
"""

from __future__ import annotations

from test_controller import NOW, mem, node, site, site_policy, tj

from wattcap.controller import ADMITS_PER_CYCLE, PACED, cycle


def burst(n_jobs: int, cap: float = 1e9) -> tuple[list[dict], object]:
    nodes = [node(f"n{i:03d}") for i in range(n_jobs)]
    tjs = [
        tj(f"j{i:03d}", created=f"2026-07-01T00:{i // 60:02d}:{i % 60:02d}Z") for i in range(n_jobs)
    ]
    return tjs, site(site_policy(cap), nodes, [], tjs, {})


def test_a_burst_is_admitted_at_most_the_pace_a_cycle_in_the_cores_order() -> None:
    n = ADMITS_PER_CYCLE + 10
    _, state = burst(n)
    plan = cycle(state, mem(), NOW)
    assert len(plan.create_jobs) == ADMITS_PER_CYCLE
    assert plan.decision is not None and len(plan.decision.admits) == ADMITS_PER_CYCLE
    made = {j["metadata"]["name"] for j in plan.create_jobs}
    assert made == {f"j{i:03d}" for i in range(ADMITS_PER_CYCLE)}, "the oldest first"
    assert plan.paced == 10
    later = [plan.tj_status[("ml", f"j{i:03d}")] for i in range(ADMITS_PER_CYCLE, n)]
    assert all(s["phase"] == "Queued" and s["reason"] == PACED for s in later)
    assert all("next cycle" in s["message"] for s in later)
    ps = plan.policy_status
    assert ps["runningJobs"] == ADMITS_PER_CYCLE and ps["queuedJobs"] == 10
    assert ps["waitingByReason"][PACED] == 10


def test_what_the_pace_left_is_admitted_by_the_next_cycle() -> None:
    """The paced jobs' power was not booked: the next cycle decides them afresh."""
    n = ADMITS_PER_CYCLE + 10
    m = mem()
    tjs, state = burst(n)
    first = cycle(state, m, NOW)
    jobs = {}
    for body in first.create_jobs:
        name = body["metadata"]["name"]
        body.setdefault("status", {"active": 1})
        jobs[("ml", name)] = body
    second = cycle(site(state.policy, state.nodes, [], tjs, jobs), m, NOW + 1)
    assert {j["metadata"]["name"] for j in second.create_jobs} == {
        f"j{i:03d}" for i in range(ADMITS_PER_CYCLE, n)
    }
    assert second.paced == 0


def test_under_the_pace_every_admission_goes_out() -> None:
    _, state = burst(ADMITS_PER_CYCLE)
    plan = cycle(state, mem(), NOW)
    assert plan.paced == 0 and len(plan.create_jobs) == ADMITS_PER_CYCLE
