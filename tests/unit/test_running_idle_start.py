"""A running job's plan tightens from its working draw, not from its idle wait.

Its pod holds its GPUs (and the exporter labels them) from the moment it is
bound, while its work may not start for minutes: an image pull, a model
loaded, a dataset staged. Readings at the idle level in that stretch say
nothing of what it will draw; a plan tightened from them frees watts the
job takes back when its work starts, and other jobs admitted into them put
the site over its cap.
"""

from __future__ import annotations

from typing import Any

from test_controller import NOW, job, node, pod_of, reading, site, site_policy, tj

from wattcap.controller import ControllerMemory, cycle
from wattcap.forecast import Forecaster

IDLE = 100.0  # site_policy's idle GPU power (TDP 700 W)
ADMITTED = 600.0  # per-GPU watts the job was admitted at


def planned(samples: list[tuple[float, float]], now_w: float) -> dict[str, Any]:
    """One cycle over a running 8-GPU job with these past samples and a reading
    of `now_w` per GPU now; the job's status."""
    m = ControllerMemory(Forecaster(700, IDLE))
    m.samples[("ml", "r")] = list(samples)
    running = job("r", ["a"], gpu_watts=ADMITTED)
    state = site(
        site_policy(20_000),
        [node("a")],
        [pod_of("r", "r-0", "a")],
        [tj("r", status={"phase": "Running"})],
        {("ml", "r"): running},
        reading=reading({("ml", "r-0"): [now_w] * 8}, 8 * now_w),
    )
    return cycle(state, m, NOW).tj_status[("ml", "r")]


def test_ten_minutes_idle_before_its_work_starts_do_not_tighten_its_plan() -> None:
    samples = [(NOW - 600 + 15.0 * k, IDLE + 2.0) for k in range(40)]
    st = planned(samples, IDLE + 2.0)
    assert st["plannedGpuWatts"] == ADMITTED, "planned at its idle wait, it frees what it will take"


def test_once_at_work_past_its_warm_up_it_tightens_from_its_working_readings() -> None:
    """The other side: the rule must not stop tightening altogether."""
    samples = [(NOW - 600 + 15.0 * k, IDLE) for k in range(20)]  # 300 s idle
    samples += [(NOW - 300 + 15.0 * k, 400.0) for k in range(20)]  # 300 s at work
    st = planned(samples, 400.0)
    assert 400.0 <= st["plannedGpuWatts"] < 450.0


def test_its_warm_up_counts_from_its_first_working_reading() -> None:
    """Work started 20 s ago after long idle: still in its warm-up, not tightened
    (counted from the first reading, the warm-up would be long past)."""
    samples = [(NOW - 600 + 15.0 * k, IDLE) for k in range(39)]
    samples += [(NOW - 20.0, 300.0), (NOW - 10.0, 400.0)]
    st = planned(samples, 400.0)
    assert st["plannedGpuWatts"] == ADMITTED


def test_an_idle_dip_once_at_work_is_part_of_its_draw() -> None:
    """A checkpoint: idle readings between working ones stay in what tightens it."""
    samples = [(NOW - 600 + 15.0 * k, 400.0) for k in range(20)]
    samples += [(NOW - 300 + 15.0 * k, IDLE) for k in range(20)]
    st = planned(samples, IDLE)
    assert st["plannedGpuWatts"] < 400.0
