"""Two sites in one cluster (issue 15): each PowerPolicy governs the nodes of
its nodeSelector with its own loop and Lease, on the real control plane.

The 8 kwok nodes are split: gpu-node-0..3 are site "east", 4..7 "west"
(label wattcap-test/site). Each site: 4 nodes x 8 GPUs, idle 4 x 500 W +
32 x 70 W = 4.24 kW; an 8-GPU job at TDP adds 8 x 630 W = 5.04 kW. East's cap
(15 kW) fits two such jobs, west's (10 kW) one. Power is judged by the
referee's `site_watts` over each site's own nodes, from the pods that run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import OperatorProcess, kget, kubectl
from referee import site_watts
from test_operator import GPU_IDLE, TDP, apply, power_policy, training_job, wait_for

pytestmark = pytest.mark.integration

LABEL = "wattcap-test/site"
EAST = [f"gpu-node-{i}" for i in range(4)]
WEST = [f"gpu-node-{i}" for i in range(4, 8)]
CAPS = {"east": 15_000.0, "west": 10_000.0}


def policy(name: str, cap: float, selector: dict[str, str]) -> dict[str, Any]:
    return power_policy(name, cap, nodeSelector=selector)


def delete_policies(kc: str) -> None:
    kubectl(kc, "delete", "powerpolicies.wattcap.io", "--all", "--timeout=60s", check=False)


@pytest.fixture
def two_sites(crds: str) -> Iterator[str]:
    """East and west over disjoint nodes, and no other PowerPolicy (an earlier
    test's "site" selects every node and, older, would govern them all)."""
    kc = crds
    delete_policies(kc)
    for nodes, site in ((EAST, "east"), (WEST, "west")):
        kubectl(kc, "label", "node", *nodes, f"{LABEL}={site}", "--overwrite")
    apply(kc, policy("east", CAPS["east"], {LABEL: "east"}))
    time.sleep(1.1)  # creationTimestamp has 1 s resolution: east is the older
    apply(kc, policy("west", CAPS["west"], {LABEL: "west"}))
    yield kc
    delete_policies(kc)
    kubectl(kc, "label", "node", *EAST, *WEST, f"{LABEL}-", check=False)


def job_on(site: str | None, name: str, ns: str) -> dict[str, Any]:
    tj = training_job(name, ns, 1, 8, 900, true_watts=TDP)
    if site is not None:
        tj["spec"]["site"] = site
    return tj


def statuses(kc: str, ns: str) -> dict[str, dict[str, Any]]:
    items = kget(kc, "trainingjobs.wattcap.io", "-n", ns)["items"]
    return {t["metadata"]["name"]: t.get("status") or {} for t in items}


def condition(kc: str, policy_name: str, kind: str) -> dict[str, Any]:
    st = kget(kc, "powerpolicy.wattcap.io", policy_name).get("status") or {}
    return next((c for c in st.get("conditions") or [] if c.get("type") == kind), {})


def running(st: dict[str, dict[str, Any]], prefix: str) -> list[str]:
    return [n for n, s in st.items() if n.startswith(prefix) and s.get("phase") == "Running"]


def site_power(kc: str, site: str) -> float:
    """Ground truth over one site's nodes, from the pods bound there."""
    nodes = kget(kc, "nodes")["items"]
    pods = kget(kc, "pods", "-A")["items"]
    sample = site_watts(
        nodes,
        pods,
        time.time(),
        pue=1.0,
        node_base_w=500.0,
        gpu_idle_w=GPU_IDLE,
        gpu_tdp_w=TDP,
        node_label=(LABEL, site),
    )
    return sample.site_w


def test_two_sites_each_admit_onto_their_own_nodes_under_their_own_cap(
    two_sites: str, namespace: str, operator_process: OperatorProcess
) -> None:
    kc = two_sites
    jobs = [job_on("east", f"east-{i}", namespace) for i in range(4)]
    jobs += [job_on("west", f"west-{i}", namespace) for i in range(3)]
    jobs.append(job_on(None, "default-0", namespace))  # no site: the oldest, east
    apply(kc, jobs)

    def settled() -> bool:
        st = statuses(kc, namespace)
        return len(running(st, "east-")) + len(running(st, "default-")) == 2 and (
            len(running(st, "west-")) == 1
        )

    wait_for("two east jobs and one west job to run", settled, 120)
    time.sleep(6)  # a few more cycles: nothing else may start
    st = statuses(kc, namespace)
    assert len(running(st, "east-")) + len(running(st, "default-")) == 2, st
    assert len(running(st, "west-")) == 1, st
    for name, s in st.items():
        if s.get("phase") == "Running":
            home = WEST if name.startswith("west-") else EAST
            assert set(s["placement"]) <= set(home), (name, s["placement"])
        else:
            assert s.get("phase") == "Queued", (name, s)
    pods = kget(kc, "pods", "-n", namespace)["items"]
    for p in pods:
        owner = p["metadata"]["labels"].get("wattcap.io/trainingjob", "")
        home = WEST if owner.startswith("west-") else EAST
        if p["spec"].get("nodeName"):
            assert p["spec"]["nodeName"] in home, (owner, p["spec"]["nodeName"])
    for site, cap in CAPS.items():
        truth = site_power(kc, site)
        print(f"site {site}: ground truth {truth:.0f} W, cap {cap:.0f} W")
        assert truth <= cap
        active = condition(kc, site, "Active")
        assert active.get("status") == "True", (site, active)
        assert "governs 4 nodes" in active["message"], active
        assert condition(kc, site, "NodeConflict").get("status") == "False"
        # its own loop took its own Lease
        lease = kget(kc, "lease", f"wattcap-site-{site}", "-n", "default")
        assert lease["spec"].get("holderIdentity"), lease

    # a newer policy selecting every node: the older sites keep them
    apply(kc, policy("everything", 100_000, {"type": "kwok"}))
    wait_for(
        "the newer policy to report its conflict",
        lambda: condition(kc, "everything", "NodeConflict").get("status") == "True",
        60,
    )
    msg = condition(kc, "everything", "NodeConflict")["message"]
    assert "gpu-node-0" in msg and "gpu-node-7" in msg and "east, west" in msg, msg
    assert condition(kc, "east", "NodeConflict").get("status") == "False"
    kubectl(kc, "delete", "powerpolicy.wattcap.io", "everything", "--timeout=60s")

    # west is deleted: its jobs stay, and say why they wait; none moves to east
    kubectl(kc, "delete", "powerpolicy.wattcap.io", "west", "--timeout=60s")

    def west_waits() -> bool:
        st = statuses(kc, namespace)
        waiting = [
            s for n, s in st.items() if n.startswith("west-") and s.get("phase") != "Running"
        ]
        return len(waiting) == 2 and all(s.get("reason") == "SiteNotFound" for s in waiting)

    wait_for("west's queued jobs to wait for their site", west_waits, 60)
    st = statuses(kc, namespace)
    for name, s in st.items():
        if name.startswith("west-") and s.get("phase") != "Running":
            assert "spec.site" in s["message"] and "west" in s["message"], s
    (still,) = running(st, "west-")
    assert st[still]["reason"] == "NodesUngoverned", st[still]
    assert len(st) == 8  # no TrainingJob lost

    # west again: its waiting jobs are its own again
    apply(kc, policy("west", CAPS["west"], {LABEL: "west"}))
    wait_for(
        "west to decide its jobs again",
        lambda: all(
            s.get("reason") != "SiteNotFound"
            for n, s in statuses(kc, namespace).items()
            if n.startswith("west-")
        ),
        60,
    )


def test_a_trainingjobs_site_is_fixed_at_submission(crds: str, namespace: str) -> None:
    apply(crds, job_on("east", "fixed", namespace))
    patch = '{"spec": {"site": "west"}}'
    out = kubectl(
        crds, "patch", "tj", "fixed", "-n", namespace, "--type=merge", "-p", patch, check=False
    )
    assert out.returncode != 0 and "spec.site is immutable" in out.stderr, out.stderr
    bad = kubectl(
        crds,
        "patch",
        "tj",
        "fixed",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec": {"site": "Not_A_Name"}}',
        check=False,
    )
    assert bad.returncode != 0 and "spec.site" in bad.stderr, bad.stderr


def _without_window_rule(crd: dict[str, Any]) -> dict[str, Any]:
    """The PowerPolicy CRD as an older release might have shipped it: no CEL
    rule on the cap-schedule windows."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    items = schema["properties"]["spec"]["properties"]["capSchedule"]["items"]
    items.pop("x-kubernetes-validations", None)
    return crd


def test_jobs_under_a_policy_the_operator_refuses_wait_saying_so_until_it_is_fixed(
    crds: str, namespace: str, operator_process: OperatorProcess
) -> None:
    """A PowerPolicy the operator refuses (stored before the CRD refused it: an
    upgrade, here an older CRD without the window rule) decides nothing; its
    jobs must say so, naming the policy and the field, not sit without a
    status, and be decided once the policy is fixed."""
    kc = crds
    delete_policies(kc)
    name = "powerpolicies.wattcap.io"
    original = kget(kc, "crd", name)
    kubectl(kc, "replace", "-f", "-", stdin=json.dumps(_without_window_rule(original)))
    bad = policy("refused", 100_000, {"type": "kwok"})
    window = {"start": "2026-07-01T18:00:00Z", "end": "2026-07-01T14:00:00Z", "capWatts": 1e5}
    bad["spec"]["capSchedule"] = [window]
    try:
        wait_for(
            "the looser CRD to take effect",
            lambda: (
                kubectl(kc, "create", "-f", "-", stdin=json.dumps(bad), check=False).returncode == 0
            ),
            30,
        )
    finally:
        current = kget(kc, "crd", name)
        current["spec"] = original["spec"]
        kubectl(kc, "replace", "-f", "-", stdin=json.dumps(current))
    try:
        apply(kc, job_on(None, "waits", namespace))

        def says_why() -> bool:
            return statuses(kc, namespace).get("waits", {}).get("reason") == "PolicyInvalid"

        wait_for("the job to say its policy is invalid", says_why, 60)
        st = statuses(kc, namespace)["waits"]
        assert st["phase"] == "Queued", st
        assert "refused" in st["message"] and "spec.capSchedule[0].end" in st["message"], st
        (cond,) = [c for c in st["conditions"] if c["type"] == "Admitted"]
        assert (cond["status"], cond["reason"]) == ("False", "PolicyInvalid"), cond

        kubectl(kc, "patch", "powerpolicy.wattcap.io", "refused", "--type=merge",
                "-p", '{"spec": {"capSchedule": null}}')  # fmt: skip
        wait_for(
            "the job to run once its policy is fixed",
            lambda: statuses(kc, namespace)["waits"].get("phase") == "Running",
            60,
        )
        assert statuses(kc, namespace)["waits"].get("reason") != "PolicyInvalid"
    finally:
        delete_policies(kc)
