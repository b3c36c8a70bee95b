"""A burst of admissions is written over several cycles, not one.

Each admission is three writes (the Job, the status, an Event). At 1,000
nodes a burst of 5,000 jobs admitted a thousand at once: one cycle of three
thousand writes, tens of seconds long (bench/load.py, issue 15), during
which the site went undecided. Leaving admissions out is always safe for
the cap (what is not admitted does not draw), so a cycle writes at most
the site loop's pace of them (ADMITS_PER_CYCLE to start), the first in the
core's order, and the next cycle follows within a second. The pace follows
how fast the API server wrote the last cycles' writes (`next_admit_pace`).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from test_controller import NOW, mem, node, site, site_policy, tj

from wattcap.controller import (
    ADMIT_PACE_MAX,
    ADMIT_PACE_MIN,
    ADMIT_WRITES_S,
    ADMITS_PER_CYCLE,
    PACE_MIN_WRITES,
    PACED,
    WRITES_PER_ADMISSION,
    cycle,
    next_admit_pace,
)


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


def test_the_pace_the_loop_learned_is_the_pace_the_cycle_keeps() -> None:
    _, state = burst(12)
    m = mem()
    m.admit_pace = 5
    plan = cycle(state, m, NOW)
    assert len(plan.create_jobs) == 5 and plan.paced == 7
    later = [s for s in plan.tj_status.values() if s.get("reason") == PACED]
    assert len(later) == 7 and all("at most 5 admissions" in s["message"] for s in later)


def test_a_fast_api_server_raises_the_pace_and_a_slow_one_lowers_it() -> None:
    def aim(rate: float) -> float:  # admissions whose writes take ADMIT_WRITES_S
        return rate * ADMIT_WRITES_S / WRITES_PER_ADMISSION

    assert aim(400) > 32 > aim(40)
    assert next_admit_pace(32, 200, 0.5) == round((32 + aim(400)) / 2)  # 400 writes a second
    assert next_admit_pace(32, 40, 1.0) == round((32 + aim(40)) / 2)  # 40 writes a second
    pace = 32
    for _ in range(20):  # held at one rate, it settles where the writes take ADMIT_WRITES_S
        pace = next_admit_pace(pace, 100, 1.0)
    assert abs(pace - aim(100)) <= 1  # halfway, rounded: within one of it


def test_a_cycle_with_few_writes_leaves_the_pace() -> None:
    assert next_admit_pace(32, PACE_MIN_WRITES - 1, 10.0) == 32
    assert next_admit_pace(32, 100, 0.0) == 32


@given(
    pace=st.integers(ADMIT_PACE_MIN, ADMIT_PACE_MAX),
    writes=st.integers(0, 100_000),
    seconds=st.floats(0.0, 1e4),
)
def test_the_pace_stays_within_its_bounds(pace: int, writes: int, seconds: float) -> None:
    """However fast or stuck the API server: at least ADMIT_PACE_MIN a cycle, so a
    burst is always admitted, and at most ADMIT_PACE_MAX, so no cycle is huge."""
    assert ADMIT_PACE_MIN <= next_admit_pace(pace, writes, seconds) <= ADMIT_PACE_MAX
