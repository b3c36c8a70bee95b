"""The node agent's watch of its node's pods, against the real API server.

The pods are real (bound to a kwok node); the kubelet's pod-resources API is the
unit tier's real gRPC server on a unix socket, and NVML is FakeNvml (this machine has
no GPU). What is tested here is what only the API server can show: the agent's
fieldSelector watch sees the operator's annotation arrive, leave, and the pod go,
and the GPU follows each within a pass.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, kubectl

sys.path.insert(0, str(ROOT / "tests" / "unit"))
from fake_nvml import FakeGpu, FakeNvml
from kubelet_podresources import (
    container,
    devices,
    pod,
    response,
    running_kubelet,
)

from wattcap.agent.gpus import LIMIT_ANNOTATION
from wattcap.agent.metrics import AgentMetrics
from wattcap.agent.pods import PodLimits
from wattcap.agent.run import Agent, watch_pods

pytestmark = pytest.mark.integration

NODE = "gpu-node-7"


def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_the_agent_follows_the_annotation_and_the_pod(
    crds: str, namespace: str, tmp_path: Path
) -> None:
    from kubernetes import client, config

    config.load_kube_config(config_file=crds)
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "train-0", "annotations": {LIMIT_ANNOTATION: "300"}},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "main", "image": "trainer:1"}],
            "tolerations": [{"operator": "Exists"}],
        },
    }
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
