"""What the cluster benchmarks share: the local control plane, a site policy,
and `wattcap` processes started as a user would start them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
KUBECONFIG = str(ROOT / ".cluster" / "kubeconfig")
KUBECTL = str(Path.home() / ".cache/wattcap/bin/kubectl")


def kubectl(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        [KUBECTL, "--kubeconfig", KUBECONFIG, *args],
        input=stdin,
        text=True,
        capture_output=True,
        check=True,
    ).stdout


def prepare(ns: str, cap_watts: float, **spec: Any) -> None:
    """CRDs, a fresh namespace, and the governing PowerPolicy for the kwok site
    (8 x 8 GPUs, PUE 1.0, 500 W per node, 70 W idle and 700 W TDP per GPU)."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    kubectl("apply", "-f", "-", stdin=priority_classes())
    kubectl("create", "namespace", ns)
    policy = {
        "capWatts": cap_watts,
        "pue": 1.0,
        "nodeBaseWatts": 500,
        "gpuIdleWatts": 70,
        "gpuTdpWatts": 700,
        "nodeSelector": {"type": "kwok"},
        **spec,
    }
    kubectl(
        "apply",
        "-f",
        "-",
        stdin=yaml.safe_dump(
            {
                "apiVersion": "wattcap.io/v1alpha1",
                "kind": "PowerPolicy",
                "metadata": {"name": "site"},
                "spec": policy,
            }
        ),
    )


BENCH_PRIORITIES = (1, 2, 3)


def priority_classes() -> str:
    """PriorityClasses "wattcap-bench-pN" of value N, marked for wattcap."""
    return yaml.safe_dump_all(
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {
                "name": f"wattcap-bench-p{v}",
                "labels": {"wattcap.io/tenant-usable": "true"},
            },
            "value": v,
        }
        for v in BENCH_PRIORITIES
    )


def priority_fields(prio: int) -> dict[str, str]:
    """A job's priority as a tenant asks for it: a class (none for 0)."""
    return {"priorityClassName": f"wattcap-bench-p{prio}"} if prio else {}


def start(*args: str) -> subprocess.Popen[bytes]:
    """`wattcap ARGS` in its own process, quiet."""
    env = {**os.environ, "KUBECONFIG": KUBECONFIG}
    return subprocess.Popen(
        [sys.executable, "-m", "wattcap.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
