"""README sentences checked on the real control plane (issue 19, docs/claims.md).

Site as in test_operator.py: 8 nodes x 8 GPUs, idle 8.48 kW, all GPUs at
TDP 48.8 kW.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import OperatorProcess, kget, kubectl
from test_operator import GPU_IDLE, IDLE_W, TDP, apply, set_policy, training_job, wait_for

pytestmark = pytest.mark.integration


def tj_status(kc: str, ns: str, name: str) -> dict[str, Any]:
    return kget(kc, "trainingjob.wattcap.io", name, "-n", ns).get("status") or {}


def active(kc: str, policy: str, kind: str = "Active") -> dict[str, Any]:
    st = kget(kc, "powerpolicy.wattcap.io", policy).get("status") or {}
    return next((c for c in st.get("conditions") or [] if c.get("type") == kind), {})


def test_a_second_powerpolicy_reports_it_does_not_govern(
    kubeconfig: str, namespace: str, operator_process: OperatorProcess
) -> None:
    """ "a node two policies select belongs to the older one, and the younger
    reports `NodeConflict` naming the nodes and decides without them"."""
    set_policy(kubeconfig, 48_800)
    wait_for("the site to govern", lambda: active(kubeconfig, "site").get("status") == "True", 60)
    newer = {
        "apiVersion": "wattcap.io/v1alpha1",
        "kind": "PowerPolicy",
        "metadata": {"name": "site-newer"},
        "spec": {"capWatts": 20_000, "controlPeriod": "2s", "nodeSelector": {"type": "kwok"}},
    }
    apply(kubeconfig, newer)
    try:
        wait_for(
            "the newer policy to report the nodes it does not govern",
            lambda: active(kubeconfig, "site-newer", "NodeConflict").get("status") == "True",
            60,
            every=0.5,
        )
        msg = active(kubeconfig, "site-newer", "NodeConflict")["message"]
        assert "gpu-node-0" in msg and "PowerPolicy site " in msg, msg
        assert "governs 0 nodes" in active(kubeconfig, "site-newer")["message"]
        assert active(kubeconfig, "site").get("status") == "True"
        assert "governs 8 nodes" in active(kubeconfig, "site")["message"]
    finally:
        kubectl(kubeconfig, "delete", "powerpolicy.wattcap.io", "site-newer", "--timeout=60s")


def test_a_new_trainingjob_is_decided_well_within_a_long_period(
    kubeconfig: str, namespace: str, operator_process: OperatorProcess
) -> None:
    """ "runs every control period, or sooner when a TrainingJob ... changes":
    with a 120 s period, a job applied just after a cycle is admitted in a
    few seconds, not at the next period."""
    set_policy(kubeconfig, 48_800, controlPeriod="120s")
    # this operator's own cycle (a status from an earlier test's operator proves nothing)
    apply(kubeconfig, training_job("first", namespace, 1, 2, 300))
    wait_for(
        "the first job to run",
        lambda: tj_status(kubeconfig, namespace, "first").get("phase") == "Running",
        150,
    )
    time.sleep(10)  # its Job's own events, which wake the loop too, are over
    applied = time.monotonic()
    apply(kubeconfig, training_job("woken", namespace, 1, 2, 30))
    wait_for(
        "the new job to be admitted",
        lambda: tj_status(kubeconfig, namespace, "woken").get("phase") in ("Admitted", "Running"),
        40,
        every=0.2,
    )
    took = time.monotonic() - applied
    print(f"admitted {took:.1f} s after the apply (period 120 s)")
    assert took < 40


def test_a_preempted_job_is_resumed_in_place_on_the_cluster(
    kubeconfig: str, namespace: str, operator_process: OperatorProcess
) -> None:
    """ "Preemption suspends that Job; re-admission resumes it": the same Job
    (same uid) goes from suspended back to running when the cap rises."""
    set_policy(kubeconfig, 48_800)
    apply(kubeconfig, training_job("shed-me", namespace, 1, 8, 600, pre=True, true_watts=TDP))
    wait_for(
        "the job to run",
        lambda: tj_status(kubeconfig, namespace, "shed-me").get("phase") == "Running",
        90,
    )
    uid = kget(kubeconfig, "job.batch", "shed-me", "-n", namespace)["metadata"]["uid"]
    set_policy(kubeconfig, IDLE_W + 4 * (TDP - GPU_IDLE))  # no room for 8 GPUs at TDP
    wait_for(
        "the job to be preempted",
        lambda: tj_status(kubeconfig, namespace, "shed-me").get("phase") == "Preempted",
        60,
    )
    assert kget(kubeconfig, "job.batch", "shed-me", "-n", namespace)["spec"]["suspend"] is True
    set_policy(kubeconfig, 48_800)
    wait_for(
        "the job to be resumed",
        lambda: tj_status(kubeconfig, namespace, "shed-me").get("phase") in ("Admitted", "Running"),
        60,
    )
    job = kget(kubeconfig, "job.batch", "shed-me", "-n", namespace)
    assert job["spec"].get("suspend") is False
    assert job["metadata"]["uid"] == uid, "resumed in place, not recreated"
    wait_for(
        "its pods to run again",
        lambda: tj_status(kubeconfig, namespace, "shed-me").get("phase") == "Running",
        60,
    )
