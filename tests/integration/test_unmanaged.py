"""GPU work wattcap does not manage, on the real control plane (issue #14).

Pods that request GPUs in a namespace the admission policy does not govern
(here: the test's own namespace, unlabelled) are another scheduler's work,
e.g. inference. Same site as test_operator.py (8 x 8 GPUs, idle 8.48 kW, TDP
700 W, PUE 1.0). Their true draw is in `wattcap.io/sim-power`, which only
the simulated exporter and the referee read.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import ports
import pytest
from conftest import OperatorProcess, kget
from test_measured_power import PROM_URL, measured_operator, phases, power_stack, status
from test_operator import GPU_IDLE, IDLE_W, TDP, apply, referee, set_policy, training_job, wait_for

pytestmark = pytest.mark.integration
__all__ = ["measured_operator", "power_stack"]  # fixtures, used by name


def inference_pod(name: str, ns: str, node: str, gpus: int, watts: float) -> dict[str, Any]:
    """A pod another scheduler placed (nodeName set), drawing `watts` per GPU."""
    gpu = {"nvidia.com/gpu": str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "annotations": {"wattcap.io/sim-power": json.dumps({"watts": watts})},
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "serve",
                    "image": "server:1",
                    "resources": {"requests": gpu, "limits": gpu},
                }
            ],
        },
    }


def busy_pods(kc: str, own_ns: str) -> list[str]:
    """Pods of other namespaces that hold GPUs and have not finished."""
    pods = kget(kc, "pods", "-A")["items"]
    return [
        f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        for p in pods
        if p["metadata"]["namespace"] != own_ns
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        and any(
            "nvidia.com/gpu" in json.dumps(c.get("resources") or {})
            for c in p["spec"].get("containers") or []
        )
    ]


def unmanaged_status(kc: str) -> dict[str, Any]:
    return (kget(kc, "powerpolicy.wattcap.io", "site").get("status") or {}).get("unmanaged") or {}


def test_unmeasured_inference_is_planned_at_tdp_and_the_cap_holds(
    crds: str, namespace: str, operator_process: OperatorProcess
) -> None:
    """No Prometheus: an inference pod's 8 GPUs are planned at TDP (they could
    draw it), so of two 8-GPU jobs that each fit the cap beside it at idle,
    only one is admitted; the referee's ground truth stays under the cap."""
    kc = crds
    # the referee sums every pod on the site: wait out an earlier test's pods
    wait_for("an otherwise idle site", lambda: not busy_pods(kc, namespace), 120, every=1.0)
    job_w = 8 * (400 - GPU_IDLE)
    cap = IDLE_W + 8 * (TDP - GPU_IDLE) + job_w + 500
    set_policy(kc, cap, unmanaged={"planGpusAt": "Measured"})
    apply(kc, inference_pod("serve", namespace, "gpu-node-7", 8, TDP))
    wait_for("status.unmanaged", lambda: unmanaged_status(kc).get("gpus") == 8, 30, every=0.5)
    assert unmanaged_status(kc) == {
        "watts": 8 * (TDP - GPU_IDLE), "gpus": 8, "pods": 1, "source": "TDP",
    }  # fmt: skip
    with referee(kc) as ref:
        apply(
            kc,
            [training_job(f"j{i}", namespace, 1, 8, 600, hint=400, true_watts=400) for i in (0, 1)],
        )
        wait_for("a job running", lambda: "Running" in phases(kc, namespace).values(), 60, 0.5)
        ref.wait_samples(5)  # both jobs decided, the second one more than once
    p = phases(kc, namespace)
    assert sorted(p.values()) == ["Queued", "Running"], p
    waiting = next(n for n, v in p.items() if v == "Queued")
    assert status(kc, namespace, waiting)["reason"] == "WaitingForPower"
    assert ref.peak_w() <= cap, (ref.peak_w(), cap)


def test_measured_inference_is_reported_and_sheds_only_what_its_overdraw_requires(
    power_stack: str, namespace: str, measured_operator: OperatorProcess
) -> None:
    """Measured mode: the inference pod is reported at its measured power
    (status.unmanaged, wattcap_unmanaged_watts). When more inference starts
    and the site measures over the cap, one preemptible job, the lowest
    priority, is shed: enough for the measured overdraw, not every job the
    new pod's TDP-sized plan figure would have asked for; ground truth is
    back under the cap."""
    kc = power_stack
    serve_w = 8 * (500 - GPU_IDLE)  # 3.44 kW above idle
    job_w = 8 * (400 - GPU_IDLE)  # 2.64 kW above idle
    cap = IDLE_W + serve_w + 2 * job_w + 600
    set_policy(kc, cap, prometheus={"url": PROM_URL}, gracePeriod="5s")
    apply(kc, inference_pod("serve", namespace, "gpu-node-7", 8, 500))

    def measured() -> bool:
        u = unmanaged_status(kc)
        return u.get("source") == "Measured" and abs(u["watts"] - serve_w) <= 0.05 * serve_w

    wait_for("the inference pod measured", measured, 60, every=0.5)
    with urllib.request.urlopen(f"http://127.0.0.1:{ports.METRICS}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    line = next(
        x for x in text.splitlines() if x.startswith('wattcap_unmanaged_watts{site="site"} ')
    )
    assert abs(float(line.split()[1]) - serve_w) <= 0.05 * serve_w, line

    jobs = [
        training_job(f"p{prio}", namespace, 1, 8, 900, prio=prio, pre=True, hint=400,
                     true_watts=400)
        for prio in (0, 1)
    ]  # fmt: skip
    apply(kc, jobs)
    wait_for(
        "both jobs running",
        lambda: list(phases(kc, namespace).values()) == ["Running", "Running"],
        60,
        every=0.5,
    )
    # 4 more inference GPUs at 500 W: the site is 1.12 kW over the cap. Planned
    # at TDP until measured they would be 2.52 kW: one job frees 2.64 kW.
    apply(kc, inference_pod("serve-2", namespace, "gpu-node-6", 4, 500))
    with referee(kc) as ref:
        wait_for(
            "a job shed",
            lambda: "Preempted" in phases(kc, namespace).values(),
            90,
            every=0.5,
        )
        wait_for(
            "the site measured back under the cap",
            lambda: (
                next(
                    c
                    for c in kget(kc, "powerpolicy.wattcap.io", "site")["status"]["conditions"]
                    if c["type"] == "WithinCap"
                )["status"]
                == "True"
            ),
            90,
            every=0.5,
        )
        settled = time.time()
        ref.wait_samples(5)
    p = phases(kc, namespace)
    assert p == {"p0": "Preempted", "p1": "Running"}, p
    assert status(kc, namespace, "p0")["reason"] in ("MeasuredOverCap", "WaitingForPower")
    u = unmanaged_status(kc)
    assert (u["gpus"], u["pods"], u["source"]) == (12, 2, "Measured"), u
    assert ref.peak_w(since=settled) <= cap, (ref.peak_w(since=settled), cap)
