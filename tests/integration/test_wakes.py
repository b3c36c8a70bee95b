"""What wakes the site loop before its period is up, on a real control plane.

A PowerPolicy edit (a demand-response cap lowered by hand) must take effect at
once, not a control period later; the loop's own status writes must not wake
it, or a site with a long period would cycle about once a second anyway.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import OperatorProcess, kget, kubectl
from test_fault_isolation import free_port, probe
from test_operator import GPU_IDLE, IDLE_W, TDP, apply, set_policy, training_job, wait_for

pytestmark = pytest.mark.integration

PERIOD_S = 60


def cycles(port: int) -> float:
    """Decision cycles completed so far, from the operator's own histogram."""
    body = probe(port, "/metrics")[1]
    m = re.search(r'^wattcap_cycle_duration_seconds_count\{site="site"\} (\S+)$', body, re.M)
    return float(m.group(1)) if m else 0.0


@contextmanager
def site_operator(kc: str, log: Path, period_s: int) -> Iterator[int]:
    """An operator whose site "site" decides every `period_s` unless something
    wakes it; yields its metrics port once its first cycle is done."""
    set_policy(kc, 48_800, controlPeriod=f"{period_s}s")
    port = free_port()
    op = OperatorProcess(kc, log, metrics_port=port)
    op.start()
    try:
        wait_for("the first cycle", lambda: cycles(port) >= 1, 60)
        yield port
    finally:
        op.stop()


@pytest.fixture
def slow_site(crds: str, tmp_path: Path) -> Iterator[int]:
    """An operator whose site decides every 60 s unless something wakes it."""
    with site_operator(crds, tmp_path / "operator.log", PERIOD_S) as port:
        yield port


def test_a_policy_edit_takes_effect_at_once_and_own_status_writes_do_not_wake(
    crds: str, namespace: str, slow_site: int
) -> None:
    port = slow_site
    # a new TrainingJob wakes the loop: admitted long before the 60 s period
    apply(crds, training_job("steady", namespace, 1, 8, 600, pre=True))
    wait_for(
        "admission",
        lambda: (
            (kget(crds, "tj", "steady", "-n", namespace).get("status") or {}).get("phase")
            in ("Admitted", "Running")
        ),
        20,
    )
    # settle, then count: the job runs, its status is written, nothing else happens
    wait_for(
        "Running",
        lambda: (
            (kget(crds, "tj", "steady", "-n", namespace).get("status") or {}).get("phase")
            == "Running"
        ),
        20,
    )
    time.sleep(3)
    before = cycles(port)
    time.sleep(12)
    idle_cycles = cycles(port) - before
    assert idle_cycles <= 1, f"{idle_cycles} cycles in 12 s of nothing, at a {PERIOD_S} s period"

    # the cap drops by an edit: the preemption follows within seconds, not a period
    low = IDLE_W + 4 * (TDP - GPU_IDLE)
    patch = json.dumps({"spec": {"capWatts": low}})
    kubectl(crds, "patch", "powerpolicy", "site", "--type=merge", "-p", patch)

    def suspended() -> bool:
        return kget(crds, "job.batch", "steady", "-n", namespace)["spec"].get("suspend") is True

    wait_for("the preemption after the edit", suspended, 10)
