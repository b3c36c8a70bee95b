"""A lying hint on the real control plane: the job that draws far over its
forecast is the one shed, not another tenant's job, and the cap holds by
ground truth (the referee sums the pods' own sim-power profiles).

Two tenants' namespaces. `honest` (tenant B, priority 0, preemptible, hint
300 W, draws 300 W) is the job the usual order would shed first. `liar`
(tenant A, a class of priority 5, NOT preemptible, hint 300 W, draws 690 W)
was admitted on its hint. Measured, the site is over the cap; shedding
`honest` alone would not bring it back under, and before over-drawers were
shed first `liar` could not be shed at all.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import create_namespace, kget, kubectl
from referee import Referee
from test_measured_power import (  # noqa: F401 - pytest fixtures, used by name
    PROM_URL,
    measured_job,
    measured_operator,
    phases,
    policy_condition,
    power_stack,
    status,
)
from test_operator import GPU_IDLE, IDLE_W, TDP, apply, set_policy, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def other_tenant(crds: str) -> Any:
    ns = f"t-overdraw-other-{int(time.time() * 1000) % 10**6}"
    create_namespace(crds, ns)
    yield ns
    kubectl(crds, "delete", "trainingjobs.wattcap.io", "--all", "-n", ns, "--timeout=120s",
            check=False)  # fmt: skip
    kubectl(crds, "delete", "namespace", ns, "--wait=false", check=False)


def test_the_over_drawer_is_shed_and_the_other_tenants_job_keeps_running(
    power_stack: str,  # noqa: F811
    namespace: str,
    other_tenant: str,
    measured_operator: Any,  # noqa: F811
) -> None:
    kc = power_stack
    cap = IDLE_W + 2 * 8 * (300 - GPU_IDLE) + 1000  # both fit on their 300 W hints
    # hints as low as 300 W (0.43 of TDP) are believed here: the policy's floor is lowered
    set_policy(kc, cap, prometheus={"url": PROM_URL}, gracePeriod="5s", hintFloorFraction=0.4)
    honest = measured_job("honest", other_tenant, 300, 900, "honest", prio=0, pre=True, hint=300)
    liar = measured_job("liar", namespace, 690, 900, "liar", prio=5, pre=False, hint=300)
    with Referee(kc, pue=1.0, node_base_w=500.0, gpu_idle_w=GPU_IDLE, gpu_tdp_w=TDP) as ref:
        apply(kc, [honest, liar])
        wait_for(
            "the measured excursion",
            lambda: policy_condition(kc, "WithinCap").get("reason") == "MeasuredOverCap",
            90,
            every=0.5,
        )
        wait_for(
            "the over-drawer shed",
            lambda: phases(kc, namespace).get("liar") == "Preempted",
            120,
            every=0.5,
        )
        # (its status moves on at the next cycle: the Event keeps why it was shed)
        events = kget(kc, "events", "-n", namespace, "--field-selector", "reason=Preempted")
        why = [e["message"] for e in events["items"] if e["involvedObject"]["name"] == "liar"]
        assert any("over-drawers are shed first" in m for m in why), why
        assert kget(kc, "job.batch", "liar", "-n", namespace)["spec"]["suspend"] is True

        def liar_pods_gone() -> bool:
            pods = kget(kc, "pods", "-n", namespace, "-l", "wattcap.io/trainingjob=liar")
            return not pods["items"]

        wait_for("the over-drawer's pods to stop", liar_pods_gone, 120, every=0.5)
        settled = time.time()
        ref.wait_samples(5)
        assert phases(kc, other_tenant)["honest"] == "Running", "the bystander keeps running"
        assert ref.peak_w(since=settled) <= cap, (ref.peak_w(since=settled), cap)
    # the class learned the overdraw: a new job of it is forecast at what it drew
    again = measured_job("liar-again", namespace, 690, 900, "liar", prio=5, hint=300)
    apply(kc, again)
    wait_for("its forecast", lambda: status(kc, namespace, "liar-again").get("forecast"), 60)
    fc = status(kc, namespace, "liar-again")["forecast"]
    assert fc["source"] == "history" and fc["gpuWatts"] >= 600, fc
