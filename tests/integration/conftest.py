"""Integration tier: a real control plane (hack/cluster.sh), started once per session.

If the control plane cannot start, every test here errors: a tier that cannot
run must fail loudly, never pass by skipping.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KUBECONFIG = ROOT / ".cluster" / "kubeconfig"
NODES = int(os.environ.get("WATTCAP_TEST_NODES", "8"))


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    """Path of a kubeconfig for a running local control plane with NODES GPU nodes."""
    subprocess.run([str(ROOT / "hack" / "cluster.sh"), "up", "--nodes", str(NODES)], check=True)
    os.environ["KUBECONFIG"] = str(KUBECONFIG)
    return str(KUBECONFIG)


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the test cluster; output captured as text."""
    kubectl_bin = os.environ.get("WATTCAP_KUBECTL", str(Path.home() / ".cache/wattcap/bin/kubectl"))
    return subprocess.run([kubectl_bin, "--kubeconfig", kubeconfig, *args], input=stdin,
                          capture_output=True, text=True, check=check)
