"""The watch-fed picture applies watch events as the API server sends them.

The same events come from a real API server in tests/integration/test_informer.py;
here each kind of event is fed by hand, which no server can be made to send
on demand (an ERROR event in the middle of a watch).
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from wattcap.informer import KINDS, Informer, NotSynced, _Gone


def pod(name: str, rv: str, node: str = "n1", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "resourceVersion": rv,
            "labels": labels,
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "main",
                    "image": "trainer:1",
                    "command": ["python", "train.py"],
                    "env": [{"name": "X", "value": "y" * 1000}],
                    "resources": {"requests": {"nvidia.com/gpu": "8"}},
                }
            ],
            "volumes": [{"name": "data"}],
        },
        "status": {"phase": "Running", "containerStatuses": [{"name": "main"}]},
    }


def synced() -> Informer:
    inf = Informer(client.ApiClient())
    for kind in KINDS:
        inf.replace(kind, [])
    return inf


def test_nothing_is_read_until_every_kind_is_listed() -> None:
    inf = Informer(client.ApiClient())
    for kind in KINDS[:-1]:
        inf.replace(kind, [])
    assert not inf.synced and not inf.ready()
    with pytest.raises(NotSynced, match="priorityclasses"):
        inf.snapshot()
    inf.replace(KINDS[-1], [])
    assert inf.synced and inf.ready()


def test_added_modified_deleted_and_bookmarks() -> None:
    inf = synced()
    assert inf.handle("pods", {"type": "ADDED", "object": pod("a", "10")}) == "10"
    inf.handle("pods", {"type": "ADDED", "object": pod("b", "11")})
    inf.handle("pods", {"type": "MODIFIED", "object": pod("a", "12", team="x")})
    assert sorted(p["metadata"]["name"] for p in inf.snapshot().pods) == ["a", "b"]
    (a,) = [p for p in inf.snapshot().pods if p["metadata"]["name"] == "a"]
    assert a["metadata"]["labels"] == {"team": "x"}  # the newer version replaced the older
    inf.handle("pods", {"type": "DELETED", "object": pod("b", "13")})
    assert [p["metadata"]["name"] for p in inf.snapshot().pods] == ["a"]
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}}
    assert inf.handle("pods", bookmark) == "20"
    assert len(inf.snapshot().pods) == 1


def test_an_error_event_ends_the_watch_for_a_fresh_list() -> None:
    inf = synced()
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    with pytest.raises(_Gone, match="410"):
        inf.handle("jobs", gone)


def test_a_fresh_list_replaces_everything_kept() -> None:
    inf = synced()
    inf.handle("pods", {"type": "ADDED", "object": pod("old", "1")})
    inf.replace("pods", [pod("new", "5")])  # "old" was deleted while the watch was down
    assert [p["metadata"]["name"] for p in inf.snapshot().pods] == ["new"]


def test_only_what_the_core_reads_is_kept() -> None:
    inf = synced()
    inf.handle("pods", {"type": "ADDED", "object": pod("a", "1")})
    (kept,) = inf.snapshot().pods
    assert "managedFields" not in kept["metadata"]
    assert kept["spec"] == {
        "nodeName": "n1",
        "containers": [{"name": "main", "resources": {"requests": {"nvidia.com/gpu": "8"}}}],
    }
    assert kept["status"] == {"phase": "Running"}
    node = {
        "metadata": {"name": "n1", "labels": {"site": "a"}},
        "spec": {"unschedulable": True},
        "status": {
            "allocatable": {"nvidia.com/gpu": "8"},
            "images": [{"names": ["x" * 200], "sizeBytes": 1}] * 50,
        },
    }
    inf.handle("nodes", {"type": "ADDED", "object": node})
    (n,) = inf.snapshot().nodes
    assert n["status"] == {"allocatable": {"nvidia.com/gpu": "8"}}
    assert n["spec"] == {"unschedulable": True}


def test_read_site_takes_the_sites_nodes_from_the_picture() -> None:
    from wattcap.cluster import Cluster
    from wattcap.model import PowerPolicy

    inf = synced()
    for name, site in (("n1", "a"), ("n2", "b")):
        node = {"metadata": {"name": name, "labels": {"site": site}}, "status": {}}
        inf.handle("nodes", {"type": "ADDED", "object": node})
    inf.handle("pods", {"type": "ADDED", "object": pod("p", "1")})
    cluster = Cluster(client.ApiClient(), picture=inf)
    state = cluster.read_site(PowerPolicy(cap_watts=1e5, node_selector={"site": "a"}))
    assert [n["metadata"]["name"] for n in state.nodes] == ["n1"]
    assert [p["metadata"]["name"] for p in state.pods] == ["p"]


def test_read_site_decides_nothing_on_an_incomplete_picture() -> None:
    from wattcap.cluster import Cluster
    from wattcap.model import PowerPolicy

    inf = Informer(client.ApiClient())
    inf.replace("nodes", [])
    cluster = Cluster(client.ApiClient(), timeout=(1.0, 0.1), picture=inf)
    with pytest.raises(NotSynced):
        cluster.read_site(PowerPolicy(cap_watts=1e5))
