"""Class poisoning across namespaces, on the real control plane with measured power.

Tenant `evil` runs a flood of near-idle jobs under the class name `llm` that
tenant `victim` uses for jobs drawing 600 W per GPU. History is kept per
(namespace, class), with a site-wide pool that can only raise a namespace's
forecast: the victim's next job is still forecast at what its own jobs drew,
and a namespace new to the class starts from the pool, not from the poison.
With one global history per class name (before #14) the flood averaged the
class down to about 180 W and the victim's next 8-GPU job was planned 3.3 kW
low.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import create_namespace, kubectl
from test_measured_power import (  # noqa: F401 - pytest fixtures, used by name
    PROM_URL,
    measured_job,
    measured_operator,
    phases,
    power_stack,
    status,
)
from test_operator import apply, set_policy, wait_for

pytestmark = pytest.mark.integration


def _namespace(kc: str, prefix: str) -> str:
    ns = f"{prefix}-{int(time.time() * 1000) % 10**6}"
    create_namespace(kc, ns)
    return ns


@pytest.fixture
def tenants(power_stack: str) -> Any:  # noqa: F811
    names = [_namespace(power_stack, p) for p in ("victim", "evil", "newcomer")]
    yield names
    for ns in names:
        kubectl(power_stack, "delete", "trainingjobs.wattcap.io", "--all", "-n", ns,
                "--timeout=120s", check=False)  # fmt: skip
        kubectl(power_stack, "delete", "namespace", ns, "--wait=false", check=False)


def test_idle_jobs_in_one_namespace_do_not_lower_anothers_forecast(
    power_stack: str,  # noqa: F811
    tenants: list[str],
    measured_operator: Any,  # noqa: F811
) -> None:
    kc = power_stack
    victim, evil, newcomer = tenants
    set_policy(kc, 100_000, prometheus={"url": PROM_URL}, gracePeriod="5s")
    jobs = [measured_job("honest", victim, 600, 40, "llm", gpus=8)]
    jobs += [measured_job(f"flood-{i}", evil, 72, 40, "llm", gpus=1) for i in range(6)]
    apply(kc, jobs)
    for ns, n in ((victim, 1), (evil, 6)):
        wait_for(
            f"{ns}'s jobs to finish",
            lambda ns=ns, n=n: list(phases(kc, ns).values()) == ["Succeeded"] * n,
            180,
        )
    # a job of the class in each namespace: what do they plan it at?
    apply(
        kc,
        [
            measured_job("next", victim, 600, 40, "llm"),
            measured_job("new", newcomer, 600, 40, "llm"),
        ],
    )

    def forecast(ns: str, name: str) -> dict[str, Any]:
        return status(kc, ns, name).get("forecast") or {}

    wait_for("both forecasts", lambda: forecast(victim, "next") and forecast(newcomer, "new"), 60)
    mine, pooled = forecast(victim, "next"), forecast(newcomer, "new")
    assert mine["source"] == "history" and mine["gpuWatts"] >= 580, mine
    assert pooled["gpuWatts"] >= 580, pooled
