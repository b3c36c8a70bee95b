"""Two operator replicas, one decider: the site's Lease on the real control
plane, with the leader SIGKILLed and then a leader frozen (SIGSTOP) for
longer than its lease, as a hung node would leave it.

Each replica runs as `wattcap operator` does in the chart, with its own
HOSTNAME (the pod name in a pod), so the PowerPolicy's Active condition says
which one decided the last cycle.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import OperatorProcess, kget
from test_operator import GPU_IDLE, IDLE_W, TDP, apply, set_policy, tjs, training_job, wait_for

pytestmark = pytest.mark.integration
LEASE_S, PERIOD_S = 5, 2  # conftest's --lease-duration; set_policy's controlPeriod


def decider(kc: str) -> str:
    st = kget(kc, "powerpolicy.wattcap.io", "site").get("status") or {}
    active = next((c for c in st.get("conditions") or [] if c["type"] == "Active"), {})
    msg = active.get("message", "")
    return msg.rsplit("decided by ", 1)[1].rsplit("-", 1)[0] if "decided by " in msg else ""


def admitted(kc: str, ns: str) -> set[str]:
    return {
        t["metadata"]["name"]
        for t in tjs(kc, ns)
        if (t.get("status") or {}).get("phase") in ("Admitted", "Running")
    }


def one_job_per_trainingjob(kc: str, ns: str) -> None:
    """Every Job belongs to exactly one TrainingJob (by uid), and none has two."""
    uids = {t["metadata"]["uid"] for t in tjs(kc, ns)}
    owners: list[str] = []
    for job in kget(kc, "jobs.batch", "-n", ns)["items"]:
        refs = [r["uid"] for r in job["metadata"].get("ownerReferences") or [] if r["controller"]]
        assert len(refs) == 1 and refs[0] in uids, job["metadata"]["name"]
        owners.append(refs[0])
    assert len(owners) == len(set(owners)), "a TrainingJob got two Jobs"


def test_one_replica_decides_and_a_killed_or_frozen_leader_is_replaced(
    crds: str, namespace: str, tmp_path: Path
) -> None:
    kc = crds
    cap = IDLE_W + 3 * 8 * (TDP - GPU_IDLE) + 100  # three 8-GPU jobs at the TDP prior
    set_policy(kc, cap)
    reps: dict[str, OperatorProcess] = {}

    def start(name: str) -> None:
        reps[name] = OperatorProcess(kc, tmp_path / f"{name}.log", env={"HOSTNAME": name})
        reps[name].start()

    try:
        start("replica-a")
        start("replica-b")
        wait_for("one replica to decide", lambda: decider(kc) in reps, 60, every=0.5)
        first = decider(kc)
        apply(kc, [training_job(f"j{i}", namespace, 1, 8, 600) for i in range(6)])
        wait_for("three jobs admitted", lambda: len(admitted(kc, namespace)) == 3, 60)
        for _ in range(3 * PERIOD_S):  # the other replica stays standby while it renews
            assert decider(kc) == first
            time.sleep(1)
        assert len(admitted(kc, namespace)) == 3

        killed_at = time.monotonic()
        reps[first].kill()
        second = next(n for n in reps if n != first)
        wait_for("the standby to take over", lambda: decider(kc) == second, 60, every=0.25)
        took = time.monotonic() - killed_at
        print(f"takeover {took:.1f}s after SIGKILL (lease {LEASE_S}s, period {PERIOD_S}s)")
        assert took <= LEASE_S + 2 * PERIOD_S + 10, took

        # the new leader admits where the old one left off, and nothing twice
        apply(kc, training_job("after", namespace, 1, 8, 600))
        kubectl_delete_one(kc, namespace, "j0")
        wait_for("the freed room used", lambda: len(admitted(kc, namespace)) == 3, 60)
        start("replica-c")
        time.sleep(2)
        frozen = reps[second].proc
        assert frozen is not None
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            wait_for("replica-c to take over", lambda: decider(kc) == "replica-c", 60, every=0.25)
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        seen = set()
        end = time.monotonic() + 3 * PERIOD_S + LEASE_S
        while time.monotonic() < end:  # the thawed replica must not decide again
            seen.add(decider(kc))
            time.sleep(0.2)
        assert seen == {"replica-c"}, seen
        assert len(admitted(kc, namespace)) <= 3
        one_job_per_trainingjob(kc, namespace)
    finally:
        for op in reps.values():
            op.stop()


def kubectl_delete_one(kc: str, ns: str, name: str) -> Any:
    from conftest import kubectl

    return kubectl(kc, "delete", "trainingjob.wattcap.io", name, "-n", ns, "--wait=true")
