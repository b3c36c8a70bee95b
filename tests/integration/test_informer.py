"""The watch-fed picture against a real API server: server-side selectors,
added, modified and deleted objects, a broken watch and a 410 Gone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import NODES, kubectl
from kubernetes import config
from test_operator import apply, wait_for

from wattcap.informer import Informer

pytestmark = pytest.mark.integration


@pytest.fixture
def picture(crds: str) -> Iterator[Informer]:
    inf = Informer(config.new_client_from_config(crds), watch_s=30)
    inf.start()
    assert inf.wait_ready(30), "the first lists did not complete"
    yield inf
    inf.stop()


def names(inf: Informer, kind: str, ns: str) -> set[str]:
    return {
        o["metadata"]["name"]
        for o in getattr(inf.snapshot(), kind)
        if o["metadata"].get("namespace") == ns
    }


def seen(inf: Informer, what: str, check: Callable[[], bool]) -> None:
    wait_for(what, check, 20)


def job(name: str, ns: str, labelled: bool = True, **ann: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"wattcap.io/trainingjob": name} if labelled else {"app": name},
            "annotations": ann,
        },
        "spec": {
            "suspend": True,
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}
            },
        },
    }


def pod(name: str, ns: str, node: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    else:
        spec["schedulerName"] = "nobody"  # stays unbound
    meta = {"name": name, "namespace": ns}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def test_added_modified_deleted_with_server_side_selectors(
    crds: str, namespace: str, picture: Informer
) -> None:
    ns = namespace
    apply(crds, job("owned", ns))
    apply(crds, job("foreign", ns, labelled=False))
    apply(crds, pod("bound", ns, "gpu-node-0"))
    apply(crds, pod("unbound", ns, None))
    seen(picture, "the labelled Job", lambda: names(picture, "jobs", ns) == {"owned"})
    seen(picture, "the bound pod", lambda: names(picture, "pods", ns) == {"bound"})
    assert len(picture.snapshot().nodes) >= NODES

    apply(crds, job("owned", ns, note="changed"))

    def modified() -> bool:
        (j,) = [o for o in picture.snapshot().jobs if o["metadata"]["namespace"] == ns]
        return (j["metadata"].get("annotations") or {}).get("note") == "changed"

    seen(picture, "the modified Job", modified)
    kubectl(crds, "delete", "job", "owned", "-n", ns, "--wait=false")
    seen(picture, "the deleted Job gone", lambda: names(picture, "jobs", ns) == set())
    kubectl(crds, "delete", "pod", "bound", "-n", ns, "--grace-period=0", "--force")
    seen(picture, "the deleted pod gone", lambda: names(picture, "pods", ns) == set())
    assert picture.lists["jobs"] == 1  # all of it from one list and the watch


def test_a_broken_watch_misses_nothing(crds: str, namespace: str, picture: Informer) -> None:
    """The connection breaks; a Job made meanwhile is in the picture once the
    watch is back (resumed from the last version, or listed again)."""
    ns = namespace
    # ready means listed; the watch opens just after the list (and again each time
    # the server ends one), so wait for an open one before breaking it
    opened: list[Any] = []

    def watching() -> bool:
        resp = picture._responses.get("jobs")
        if resp is not None:
            opened.append(resp)
        return resp is not None

    wait_for("an open watch of Jobs", watching, 20, every=0.05)
    opened[-1].close()  # harmless if the server ended it just now
    apply(crds, job("while-down", ns))
    seen(picture, "the Job made meanwhile", lambda: names(picture, "jobs", ns) == {"while-down"})
    assert picture.ready()


def test_a_watch_the_server_ends_with_410_lists_again(crds: str, namespace: str) -> None:
    """FAKE fault, named: the first watch of Jobs ends as the server ends one
    whose version etcd has compacted (an ERROR event, 410 Gone). A real one
    could not be made on demand here: after a physical etcd compaction,
    kube-apiserver 1.34 still served a watch from version 1 (cause not found).
    The lists before and after, and the Job made meanwhile, are the real server's."""
    apply(crds, job("before", namespace))
    inf = Informer(config.new_client_from_config(crds), watch_s=30)
    real = inf._watch
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}

    def gone_once(kind: str, rv: str) -> str:
        if kind == "jobs" and inf.lists["jobs"] == 1:
            apply(crds, job("meanwhile", namespace))
            inf.handle(kind, gone)  # raises, as the real event would
        return real(kind, rv)

    inf._watch = gone_once  # type: ignore[method-assign]
    inf.start()
    try:
        wait_for("a second list of Jobs", lambda: inf.lists["jobs"] >= 2 and inf.ready(), 30)
        seen(inf, "both Jobs", lambda: names(inf, "jobs", namespace) == {"before", "meanwhile"})
    finally:
        inf.stop()
