"""The node agent's watch of its node's pods, against the real API server.

The pods are real (bound to a kwok node); the kubelet's pod-resources API is the
unit tier's real gRPC server on a unix socket, and NVML is FakeNvml (this machine has
no GPU). What is tested here is what only the API server can show: the agent's
fieldSelector watch sees the operator's annotation arrive, leave, and the pod go,
and the GPU follows each within a pass; and the agent as its own process
(`fake_nvml_agent.py`: `wattcap agent` with FakeNvml), served metrics and all.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, kubectl

sys.path.insert(0, str(ROOT / "tests" / "unit"))
from fake_nvml import NVML_ERROR_GPU_IS_LOST, FakeGpu, FakeNvml
from kubelet_podresources import (
    container,
    devices,
    pod,
    response,
    running_kubelet,
)
from prometheus_client.parser import text_string_to_metric_families

from wattcap.agent.gpus import LIMIT_ANNOTATION
from wattcap.agent.metrics import ENFORCED_METRIC, AgentMetrics
from wattcap.agent.pods import PodLimits
from wattcap.agent.run import Agent, watch_pods

pytestmark = pytest.mark.integration

NODE = "gpu-node-7"


def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def train_pod() -> dict[str, object]:
    """A pod on NODE asking for a 300 W limit on its GPUs."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "train-0", "annotations": {LIMIT_ANNOTATION: "300"}},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "main", "image": "trainer:1"}],
            "tolerations": [{"operator": "Exists"}],
        },
    }


def test_the_agent_follows_the_annotation_and_the_pod(
    crds: str, namespace: str, tmp_path: Path
) -> None:
    from kubernetes import client, config

    config.load_kube_config(config_file=crds)
    body = train_pod()
    kubectl(crds, "-n", namespace, "create", "-f", "-", stdin=json.dumps(body))
    nvml = FakeNvml([FakeGpu("GPU-a"), FakeGpu("GPU-b")])
    nvml.nvmlInit()
    limits, wake, stop = PodLimits(), threading.Event(), threading.Event()
    watcher = threading.Thread(
        target=watch_pods,
        args=(client.CoreV1Api(), NODE, limits, wake, stop, 2),
        daemon=True,
    )
    watcher.start()
    try:
        with running_kubelet(tmp_path) as kubelet:
            kubelet.answer = response(
                pod(namespace, "train-0", container("main", devices("nvidia.com/gpu", "GPU-b")))
            )
            agent = Agent(nvml, limits, AgentMetrics(NODE), socket=str(kubelet.socket))

            def gpu_b_at(mw: int) -> Callable[[], bool]:
                return lambda: bool(agent.pass_once()) and nvml.gpus[1].current_mw == mw

            eventually(gpu_b_at(300_000), "the pod's 300 W limit was never applied")
            assert nvml.gpus[0].limit_mw is None  # the other GPU untouched
            kubectl(crds, "-n", namespace, "annotate", "pod", "train-0", f"{LIMIT_ANNOTATION}-")
            eventually(gpu_b_at(700_000), "the default was not restored without the annotation")
            kubectl(crds, "-n", namespace, "annotate", "pod", "train-0", f"{LIMIT_ANNOTATION}=250")
            eventually(gpu_b_at(250_000), "the new 250 W limit was never applied")
            kubectl(crds, "-n", namespace, "delete", "pod", "train-0", "--grace-period=0")
            eventually(gpu_b_at(700_000), "the default was not restored when the pod went")
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert not watcher.is_alive()


# ------------------------------------------------------------- the agent as a process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, dict[str, tuple[float, dict[str, str]]]]:
    """The agent's /metrics: per metric name, per GPU index, (value, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, dict[str, tuple[float, dict[str, str]]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if "gpu" in s.labels:
                out.setdefault(s.name, {})[s.labels["gpu"]] = (s.value, dict(s.labels))
    return out


def test_the_agent_process_applies_reports_clamps_and_restores(
    crds: str, namespace: str, tmp_path: Path
) -> None:
    """`wattcap agent` as the DaemonSet runs it, in its own process: the real API server,
    a kubelet pod-resources gRPC server on a unix socket (the tests' named fake kubelet:
    no real kubelet runs here), FakeNvml for NVML (no GPU here; the one fake), the
    agent's own /metrics. A pod's annotation becomes NVML limits and the enforced gauge,
    clamped to each GPU's NVML [min, max]; removing it restores each GPU's default; a
    GPU NVML fails on is reported as such while the others go on; SIGTERM ends it."""
    ns, port = namespace, free_port()
    sets_out = tmp_path / "nvml-sets.json"
    gpus = [
        {"uuid": "GPU-a"},  # [200, 700] W, default 700
        {"uuid": "GPU-b"},  # every call to its constraints fails: a GPU NVML lost
        {"uuid": "GPU-c", "min_mw": 150_000, "max_mw": 650_000, "default_mw": 600_000},
    ]
    fake = {
        "gpus": gpus,
        "faults": [[1, "nvmlDeviceGetPowerManagementLimitConstraints", NVML_ERROR_GPU_IS_LOST]],
        "sets_out": str(sets_out),
    }
    body = train_pod()
    kubectl(crds, "-n", ns, "create", "-f", "-", stdin=json.dumps(body))
    log = (tmp_path / "agent.log").open("w")
    with running_kubelet(tmp_path) as kubelet:
        held = devices("nvidia.com/gpu", "GPU-a", "GPU-b", "GPU-c")
        kubelet.answer = response(pod(ns, "train-0", container("main", held)))
        proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).parent / "fake_nvml_agent.py"),
                "agent",
                "--node-name",
                NODE,
                "--kubeconfig",
                crds,
                "--address",
                "127.0.0.1",
                "--metrics-port",
                str(port),
                "--pod-resources-socket",
                str(kubelet.socket),
                "--interval",
                "1",
            ],
            env={**os.environ, "WATTCAP_FAKE_NVML": json.dumps(fake)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def enforced(want: dict[str, float]) -> Callable[[], bool]:
                def check() -> bool:
                    assert proc.poll() is None, (tmp_path / "agent.log").read_text()
                    try:
                        m = scrape(port)
                    except OSError:
                        return False
                    got = {g: v for g, (v, _) in m.get(ENFORCED_METRIC, {}).items()}
                    return got == want

                return check

            eventually(enforced({"0": 300.0, "2": 300.0}), "300 W never enforced", 60)
            m = scrape(port)
            _, labels = m[ENFORCED_METRIC]["0"]
            assert labels == {
                "gpu": "0",
                "UUID": "GPU-a",
                "Hostname": NODE,
                "namespace": ns,
                "pod": "train-0",
                "container": "main",
            }
            # GPU-b: NVML failed on it; it is reported, not guessed, and the others go on
            assert "1" not in m[ENFORCED_METRIC]
            assert m["wattcap_agent_gpu_error"]["1"][0] == 1.0
            assert m["wattcap_agent_gpu_error"]["0"][0] == 0.0
            assert m["wattcap_agent_nvml_errors_total"]["1"][0] >= 1.0
            # below a GPU's minimum: each clamped to its own
            kubectl(crds, "-n", ns, "annotate", "pod", "train-0", f"{LIMIT_ANNOTATION}=100",
                    "--overwrite")  # fmt: skip
            eventually(enforced({"0": 200.0, "2": 150.0}), "not clamped to the minimum", 30)
            # above its maximum
            kubectl(crds, "-n", ns, "annotate", "pod", "train-0", f"{LIMIT_ANNOTATION}=900",
                    "--overwrite")  # fmt: skip
            eventually(enforced({"0": 700.0, "2": 650.0}), "not clamped to the maximum", 30)
            # no annotation: each GPU's own default
            kubectl(crds, "-n", ns, "annotate", "pod", "train-0", f"{LIMIT_ANNOTATION}-")
            eventually(enforced({"0": 700.0, "2": 600.0}), "the defaults were not restored", 30)
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=30)
            log.close()
    assert rc == 0, (tmp_path / "agent.log").read_text()
    sets = [tuple(s) for s in json.loads(sets_out.read_text())]
    # the NVML calls the agent made, in milliwatts, never outside a GPU's constraints
    assert [s for s in sets if s[0] == 0] == [(0, 300_000), (0, 200_000), (0, 700_000)]
    assert [s for s in sets if s[0] == 2] == [
        (2, 300_000),
        (2, 150_000),
        (2, 650_000),
        (2, 600_000),
    ]
    assert not [s for s in sets if s[0] == 1]
