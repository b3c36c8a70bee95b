"""The site loop reads the cluster from watches, not by listing it each cycle.

Counted by the API server itself (`apiserver_request_total{verb="LIST"}` on
its /metrics), over several cycles in steady state, with 10 and with 200 bound
pods: LIST calls per cycle must not grow with the pods (before the watch-fed
picture, every cycle listed nodes, every pod, TrainingJobs, Jobs and
PriorityClasses: 5 per cycle, each as large as the cluster).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import NODES, kubectl
from test_operator import wait_for
from test_wakes import cycles, site_operator

pytestmark = pytest.mark.integration

# what the site loop reads (PowerPolicies are the sites themselves: not counted here)
READ = {"nodes", "pods", "jobs", "trainingjobs", "priorityclasses"}
LINE = re.compile(r"^apiserver_request_total\{([^}]*)\} (\S+)$", re.M)


def list_calls(kc: str) -> float:
    """LIST requests the API server has served so far for what the loop reads."""
    text = kubectl(kc, "get", "--raw", "/metrics").stdout
    total = 0.0
    for labels, value in LINE.findall(text):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if fields.get("verb") == "LIST" and fields.get("resource") in READ:
            total += float(value)
    return total


def add_pods(kc: str, ns: str, first: int, count: int) -> None:
    """Pods bound to the kwok nodes by name (kwok runs them): no GPUs, just load."""
    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"load-{i}", "namespace": ns, "labels": {"app": "load"}},
            "spec": {
                "nodeName": f"gpu-node-{i % NODES}",
                "containers": [{"name": "c", "image": "busybox"}],
            },
        }
        for i in range(first, first + count)
    ]
    kubectl(
        kc,
        "apply",
        "-f",
        "-",
        stdin=yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": pods}),
    )

    def running() -> bool:
        out = kubectl(
            kc,
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            "app=load",
            "-o",
            "name",
            "--field-selector=status.phase=Running",
        ).stdout
        return len(out.split()) >= first + count

    wait_for(f"{first + count} pods running", running, 120)


@pytest.fixture
def fast_site(crds: str, tmp_path: Path) -> Iterator[int]:
    with site_operator(crds, tmp_path / "operator.log", 1) as port:
        yield port
    print((tmp_path / "operator.log").read_text()[-3000:])


def per_cycle(kc: str, port: int, seconds: float = 12.0) -> tuple[float, float]:
    """(LIST calls, cycles) over `seconds` of steady state."""
    time.sleep(3)  # settle: the pods' own events have woken the loop
    lists, done = list_calls(kc), cycles(port)
    time.sleep(seconds)
    return list_calls(kc) - lists, cycles(port) - done


def test_list_calls_per_cycle_do_not_grow_with_pods(
    crds: str, namespace: str, fast_site: int
) -> None:
    figures = {}
    for first, count in ((0, 10), (10, 190)):
        add_pods(crds, namespace, first, count)
        lists, n = per_cycle(crds, fast_site)
        assert n >= 5, f"only {n} cycles in the window: the loop is not running"
        figures[first + count] = (lists, n)
        print(f"{first + count} pods: {lists:.0f} LIST calls in {n:.0f} cycles")
    for pods, (lists, n) in figures.items():
        # steady state: the picture comes from watches; a relist now and then is allowed
        assert lists / n <= 0.2, f"{pods} pods: {lists / n:.2f} LIST calls per cycle"
