"""read_site's owner matching, on API JSON without a cluster.

A Job is a TrainingJob's only if its controller ownerReference carries that
TrainingJob's uid: names are reused (a TrainingJob re-created under the same
name before its old Job is collected must not inherit it and "succeed" at
once), and a label is something a tenant can set. A pod labelled
wattcap.io/trainingjob whose Job is not matched is counted as foreign GPU use.
"""

from __future__ import annotations

from typing import Any

from test_controller import POLICY, node

from wattcap.cluster import match_owned
from wattcap.controller import LABEL_TJ, SiteState, node_states


def trainingjob(name: str, uid: str, ns: str = "ml") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "uid": uid}}


def batch_job(name: str, owner_uid: str | None, controller: bool = True, ns: str = "ml") -> dict:
    owners = (
        []
        if owner_uid is None
        else [
            {
                "apiVersion": "wattcap.io/v1alpha1",
                "kind": "TrainingJob",
                "name": name,
                "uid": owner_uid,
                "controller": controller,
            }
        ]
    )
    return {
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"job-{name}-{owner_uid}",
            "labels": {LABEL_TJ: name},
            "ownerReferences": owners,
        }
    }


def pod(name: str, owner: str, job_uid: str | None, gpus: int = 8) -> dict[str, Any]:
    refs = [] if job_uid is None else [{"kind": "Job", "uid": job_uid, "controller": True}]
    return {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "labels": {LABEL_TJ: owner},
            "ownerReferences": refs,
        },
        "spec": {
            "nodeName": "a",
            "containers": [{"resources": {"requests": {"nvidia.com/gpu": str(gpus)}}}],
        },
    }


def test_the_owned_job_is_matched_by_owner_uid() -> None:
    jobs, _ = match_owned([trainingjob("bert", "u1")], [batch_job("bert", "u1")], [])
    assert list(jobs) == [("ml", "bert")]


def test_a_recreated_trainingjob_does_not_inherit_the_old_job() -> None:
    old = batch_job("bert", "u-old")
    jobs, _ = match_owned([trainingjob("bert", "u-new")], [old], [])
    assert jobs == {}


def test_only_a_controller_owner_counts() -> None:
    jobs, _ = match_owned([trainingjob("bert", "u1")], [batch_job("bert", "u1", False)], [])
    assert jobs == {}
    jobs, _ = match_owned([trainingjob("bert", "u1")], [batch_job("bert", None)], [])
    assert jobs == {}


def test_same_name_in_another_namespace_is_not_a_match() -> None:
    jobs, _ = match_owned(
        [trainingjob("bert", "u1", ns="a")], [batch_job("bert", "u1", ns="b")], []
    )
    assert jobs == {}


def test_pods_of_unmatched_jobs_and_forged_labels_count_as_foreign_gpus() -> None:
    tjs = [trainingjob("bert", "u1")]
    ours = batch_job("bert", "u1")
    ours_uid = ours["metadata"]["uid"]
    pods = [
        pod("bert-0", "bert", ours_uid),
        pod("forged", "bert", None),  # a tenant's pod wearing the label
        pod("orphan", "bert", "job-of-a-deleted-trainingjob"),
    ]
    jobs, out = match_owned(tjs, [ours], pods)
    labelled = {p["metadata"]["name"] for p in out if LABEL_TJ in p["metadata"]["labels"]}
    assert labelled == {"bert-0"}
    assert LABEL_TJ in pods[1]["metadata"]["labels"], "the listed objects are left as they were"
    # the two foreign pods take 16 GPUs on node a; bert's own is counted through its placement
    (free,) = node_states(SiteState(POLICY, [node("a", 24)], out, tjs, jobs), {})
    assert free.gpus_free == 24 - 16
