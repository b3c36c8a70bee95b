"""Measured power end to end: kwok pod -> simulated DCGM exporter -> real Prometheus -> client.

The exporter runs as a user runs it (`python -m wattcap.cli sim exporter`, a
separate process); Prometheus is the Debian binary started by
hack/prometheus.sh, on free ports and with its state under pytest's tmp dir so
that it never collides with a Prometheus someone else started; it is read
through prometheus_api_client, the client the operator uses.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_api_client import PrometheusConnect

# Own helpers rather than imports from conftest: they work whichever way
# pytest imports this directory (as a package or as rootdir-relative modules).
ROOT = Path(__file__).resolve().parents[2]
KUBECTL = os.environ.get("WATTCAP_KUBECTL", str(Path.home() / ".cache/wattcap/bin/kubectl"))


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None, check: bool = True) -> str:
    out = subprocess.run(
        [KUBECTL, "--kubeconfig", kubeconfig, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def kget(kubeconfig: str, *args: str) -> dict[str, Any]:
    return json.loads(kubectl(kubeconfig, "get", *args, "-o", "json"))


pytestmark = pytest.mark.integration

IDLE_W = 70.0
JOB_WATTS = 500.0
JOB_GPUS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, probe: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    """Polls ``probe`` until it returns something truthy; returns that."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = probe()
        except Exception as e:  # a transient error is just another "not yet"
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def exporter(kubeconfig: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """`wattcap sim exporter` on a free port; yields the port."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("exporter") / "exporter.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the child's stdout for its lifetime
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wattcap.cli",
            "sim",
            "exporter",
            "--kubeconfig",
            kubeconfig,
            "--address",
            "127.0.0.1",
            "--port",
            str(port),
            "--interval",
            "1.0",
            "--seed",
            "0",
            "--node-selector",
            "type=kwok",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def serving() -> bool:
        assert proc.poll() is None, f"exporter exited with {proc.returncode}"
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as r:
            return b'DCGM_FI_DEV_POWER_USAGE{gpu="0"' in r.read()

    try:
        wait_for("the exporter to serve GPU metrics", serving, timeout=60)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        print("--- exporter log (tail) ---\n" + log_path.read_text()[-3000:])


@pytest.fixture(scope="module")
def prometheus(exporter: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """hack/prometheus.sh up, scraping the exporter; yields its URL; `down` afterwards."""
    state = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    env = {
        **os.environ,
        "PROM_PORT": str(port),
        "PROM_EXPORTER_TARGET": f"127.0.0.1:{exporter}",
        "PROM_STATE_DIR": str(state),
        "PROM_LOG": str(state / "prometheus.log"),
    }
    script = str(ROOT / "hack" / "prometheus.sh")
    subprocess.run([script, "up"], env=env, check=True, timeout=120)
    try:
        # `up` twice is a no-op
        again = subprocess.run(
            [script, "up"], env=env, check=True, timeout=60, capture_output=True, text=True
        )
        assert "already up" in again.stderr
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([script, "down"], env=env, check=False, timeout=60)
        status = subprocess.run([script, "status"], env=env, check=False, timeout=30)
        assert status.returncode == 1, "prometheus still up after down"
        log = state / "prometheus.log"
        if log.exists():
            print("--- prometheus log (tail) ---\n" + log.read_text()[-2000:])


@pytest.fixture
def namespace(kubeconfig: str) -> Iterator[str]:
    ns = f"exporter-{random.randrange(10**6)}"
    kubectl(kubeconfig, "create", "namespace", ns)
    # pods are refused until the namespace's default ServiceAccount exists
    deadline = time.monotonic() + 60
    while kubectl(kubeconfig, "get", "serviceaccount", "default", "-n", ns, check=False) == "":
        assert time.monotonic() < deadline, f"no default ServiceAccount in {ns}"
        time.sleep(0.2)
    yield ns
    kubectl(kubeconfig, "delete", "namespace", ns, "--wait=false", check=False)


def emptiest_node(kubeconfig: str) -> str:
    """The kwok node with the fewest GPUs held by live pods (other tests may share the cluster)."""
    nodes = [n["metadata"]["name"] for n in kget(kubeconfig, "nodes", "-l", "type=kwok")["items"]]
    assert nodes, "no kwok nodes"
    held = dict.fromkeys(nodes, 0)
    for p in kget(kubeconfig, "pods", "-A")["items"]:
        node = p["spec"].get("nodeName")
        if node in held and p["status"].get("phase") not in ("Succeeded", "Failed"):
            for c in p["spec"]["containers"]:
                held[node] += int(
                    (c.get("resources") or {}).get("limits", {}).get("nvidia.com/gpu", 0)
                )
    return min(nodes, key=lambda n: (held[n], n))


def power_job(name: str, ns: str, node: str) -> dict[str, Any]:
    profile = {"watts": JOB_WATTS, "noise": 0}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {
                    "annotations": {
                        "wattcap.io/sim-duration": "60s",
                        "wattcap.io/sim-power": json.dumps(profile),
                    }
                },
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}],
                    "containers": [
                        {
                            "name": "train",
                            "image": "trainer:latest",
                            "resources": {"limits": {"nvidia.com/gpu": str(JOB_GPUS)}},
                        }
                    ],
                },
            },
        },
    }


def values(prom: PrometheusConnect, query: str) -> list[tuple[dict[str, str], float]]:
    return [(r["metric"], float(r["value"][1])) for r in prom.custom_query(query)]


def test_job_power_measured_through_prometheus(
    kubeconfig: str, prometheus: str, namespace: str
) -> None:
    prom = PrometheusConnect(url=prometheus, disable_ssl=True)
    node = emptiest_node(kubeconfig)
    name = f"power-{random.randrange(10**6)}"
    kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(power_job(name, namespace, node)))
    sel = f'namespace="{namespace}",pod=~"{name}-.*"'

    # The job's two GPUs draw 500 W each, labelled with its pod.
    def job_at_full_power() -> list[tuple[dict[str, str], float]] | None:
        got = values(prom, f"DCGM_FI_DEV_POWER_USAGE{{{sel}}}")
        total = sum(v for _, v in got)
        return got if len(got) == JOB_GPUS and abs(total - JOB_GPUS * JOB_WATTS) < 1e-6 else None

    series = wait_for("the job's GPUs at 2 x 500 W in Prometheus", job_at_full_power, timeout=90)
    summed = values(prom, f"sum(DCGM_FI_DEV_POWER_USAGE{{{sel}}})")
    assert summed[0][1] == pytest.approx(JOB_GPUS * JOB_WATTS)
    for labels, _ in series:
        assert labels["Hostname"] == node
        assert labels["container"] == "train"
        assert labels["modelName"] == "NVIDIA H100 80GB HBM3"
        assert labels["UUID"].startswith("GPU-")
        assert labels["device"] == f"nvidia{labels['gpu']}"
        assert labels["job"] == "dcgm-exporter"
    job_gpus = {labels["gpu"] for labels, _ in series}

    # The node's GPUs that no pod holds read idle power (Prometheus drops
    # empty labels, so "no pod" is pod="").
    idle = values(prom, f'DCGM_FI_DEV_POWER_USAGE{{Hostname="{node}",pod=""}}')
    assert idle, f"no idle GPUs on {node}"
    assert not job_gpus & {labels["gpu"] for labels, _ in idle}
    assert all(v == IDLE_W for _, v in idle), idle

    # The energy counter grows, at the rate of the power drawn (mJ/s = mW).
    energy_q = f"sum(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{sel}}})"
    e1 = values(prom, energy_q)[0][1]
    wait_for("the energy counter to increase", lambda: values(prom, energy_q)[0][1] > e1, 30)
    rate_q = f"sum(rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{sel}}}[10s])) / 1000"

    def rate_matches_power() -> bool:
        got = values(prom, rate_q)
        return bool(got) and abs(got[0][1] - JOB_GPUS * JOB_WATTS) < 0.05 * JOB_GPUS * JOB_WATTS

    wait_for("rate(energy) ~ power", rate_matches_power, timeout=30)

    # When the job's pod succeeds (sim-duration 60s), its GPUs go back to idle.
    wait_for(
        "the job to succeed",
        lambda: kget(kubeconfig, "job", name, "-n", namespace)["status"].get("succeeded") == 1,
        timeout=120,
        every=2,
    )

    def released() -> bool:
        if values(prom, f"DCGM_FI_DEV_POWER_USAGE{{{sel}}}"):
            return False
        now = values(prom, f'DCGM_FI_DEV_POWER_USAGE{{Hostname="{node}",pod=""}}')
        back = {labels["gpu"]: v for labels, v in now if labels["gpu"] in job_gpus}
        return len(back) == JOB_GPUS and all(v == IDLE_W for v in back.values())

    wait_for("the job's GPUs to read idle again", released, timeout=30)


def test_exporter_survives_api_errors(tmp_path: Path) -> None:
    """No API server at all: the exporter keeps serving (empty) metrics and counts errors."""
    port = free_port()
    kc = tmp_path / "kubeconfig"
    kc.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}
                ],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "wattcap.cli", "sim", "exporter"),
            *("--kubeconfig", str(kc), "--port", str(port), "--interval", "0.2"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def errors_counted() -> bool:
            assert proc.poll() is None, f"exporter exited with {proc.returncode}"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                body = r.read().decode()
            line = next(x for x in body.splitlines() if x.startswith("wattcap_sim_exporter_list"))
            return float(line.split()[-1]) >= 3

        wait_for("the exporter to count failed listings", errors_counted, timeout=30, every=0.5)
    finally:
        proc.terminate()
        proc.wait(15)
