"""Integration tier: a real control plane (hack/cluster.sh), started once per session.

If the control plane cannot start, every test here errors: a tier that cannot
run must fail loudly, never pass by skipping.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import ports
import pytest

ports.export_for_scripts()

ROOT = Path(__file__).resolve().parents[2]
KUBECONFIG = ROOT / ".cluster" / "kubeconfig"
NODES = int(os.environ.get("WATTCAP_TEST_NODES", "8"))


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    """Path of a kubeconfig for a running local control plane with NODES GPU nodes."""
    subprocess.run([str(ROOT / "hack" / "cluster.sh"), "up", "--nodes", str(NODES)], check=True)
    os.environ["KUBECONFIG"] = str(KUBECONFIG)
    return str(KUBECONFIG)


def kubectl(
    kubeconfig: str, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the test cluster; output captured as text."""
    kubectl_bin = os.environ.get("WATTCAP_KUBECTL", str(Path.home() / ".cache/wattcap/bin/kubectl"))
    done = subprocess.run(
        [kubectl_bin, "--kubeconfig", kubeconfig, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and done.returncode:
        # the server's reason is in stderr; CalledProcessError's message drops it
        raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done


def create_namespace(kubeconfig: str, ns: str, exist_ok: bool = False) -> None:
    """Create a namespace and wait until pods can be made in it: they are
    refused until the controller-manager has made its default ServiceAccount,
    which on a loaded machine lags the namespace by seconds."""
    kubectl(kubeconfig, "create", "namespace", ns, check=not exist_ok)
    deadline = time.monotonic() + 60
    while kubectl(kubeconfig, "get", "serviceaccount", "default", "-n", ns, check=False).returncode:
        assert time.monotonic() < deadline, f"no default ServiceAccount in {ns} after 60 s"
        time.sleep(0.2)


def kget(kubeconfig: str, *args: str) -> dict:
    """kubectl get ... -o json, parsed."""
    import json

    return json.loads(kubectl(kubeconfig, "get", *args, "-o", "json").stdout)


# PriorityClasses the tests' jobs name: "wattcap-test-pN" of value N, marked for wattcap
TEST_PRIORITIES = (*range(1, 11), 100)


def priority_fields(prio: int) -> dict[str, object]:
    """A TrainingJob's spec fields for priority `prio`: a positive one comes from
    a test PriorityClass, a negative one lowers the ceiling (0) of a job without one."""
    if prio > 0:
        assert prio in TEST_PRIORITIES, prio
        return {"priorityClassName": f"wattcap-test-p{prio}"}
    return {"priority": prio} if prio < 0 else {}


def priority_classes_yaml() -> str:
    import yaml

    docs = [
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {
                "name": f"wattcap-test-p{v}",
                "labels": {"wattcap.io/tenant-usable": "true"},
            },
            "value": v,
            "description": "wattcap integration tests",
        }
        for v in TEST_PRIORITIES
    ]
    return yaml.safe_dump_all(docs)


@pytest.fixture(scope="session")
def crds(kubeconfig: str) -> str:
    """The wattcap CRDs, installed and established, and the PriorityClasses
    the tests' jobs name (`priority_fields`)."""
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    kubectl(kubeconfig, "apply", "-f", "-", stdin=priority_classes_yaml())
    for crd in ("trainingjobs.wattcap.io", "powerpolicies.wattcap.io"):
        kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")
    return kubeconfig


class OperatorProcess:
    """`wattcap operator` as a user runs it: a separate process, killable."""

    def __init__(
        self,
        kubeconfig: str,
        log_path: Path,
        metrics_port: int = 0,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.metrics_port = metrics_port
        self.env = env or {}
        self.args = args or []  # extra flags, e.g. --prometheus-ca-file
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import sys

        env = {**os.environ, "KUBECONFIG": self.kubeconfig, **self.env}
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wattcap.cli",
                "operator",
                "--metrics-port",
                str(self.metrics_port),
                # a killed operator's successor (or the next test's) takes the
                # site's Lease over after 5 s instead of 15
                "--lease-duration",
                "5",
                *self.args,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup, as a crash or an OOM kill would leave things."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def operator_process(crds: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    op = OperatorProcess(crds, tmp_path / "operator.log")
    op.start()
    yield op
    op.stop()
    print((tmp_path / "operator.log").read_text()[-4000:])


@pytest.fixture
def namespace(crds: str, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A fresh namespace per test, deleted afterwards."""
    import random

    ns = f"t-{request.node.name.replace('_', '-')[:40].lower()}-{random.randrange(10**6)}"
    create_namespace(crds, ns)
    yield ns
    # Jobs left running would hold power against the next test's cap: remove them
    # (and their pods) for real before moving on; the namespace itself can go lazily.
    kubectl(
        crds,
        "delete",
        "trainingjobs.wattcap.io",
        "--all",
        "-n",
        ns,
        "--cascade=foreground",
        "--timeout=120s",
        check=False,
    )
    kubectl(
        crds,
        "delete",
        "jobs.batch",
        "--all",
        "-n",
        ns,
        "--cascade=foreground",
        "--timeout=120s",
        check=False,
    )
    kubectl(crds, "delete", "namespace", ns, "--wait=false", check=False)
