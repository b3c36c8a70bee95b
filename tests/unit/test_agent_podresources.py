"""The agent's view of which pod holds which GPU: the kubelet's pod-resources API.

Against a real gRPC server on a unix socket in a temporary directory
(kubelet_podresources.py), whose answers are encoded by hand from api.proto's field
numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from kubelet_podresources import Kubelet, container, devices, pod, response, running_kubelet

from wattcap.agent.podresources import LIST_METHOD, DeviceAssignment, list_devices


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[Kubelet]:
    with running_kubelet(tmp_path) as k:
        yield k


def test_list_is_the_kubelets_method() -> None:
    assert LIST_METHOD == "/v1.PodResourcesLister/List"


def test_gpus_are_mapped_to_their_pod_and_container(kubelet: Kubelet) -> None:
    kubelet.answer = response(
        pod(
            "team-a",
            "train-0",
            container("main", devices("nvidia.com/gpu", "GPU-a", "GPU-b")),
            container("sidecar", devices("example.com/nic", "nic-0")),
        ),
        pod("team-b", "web", container("app")),
        pod("team-b", "infer", container("srv", devices("nvidia.com/gpu", "GPU-c"))),
    )
    assert list_devices(str(kubelet.socket)) == [
        DeviceAssignment("team-a", "train-0", "main", "GPU-a"),
        DeviceAssignment("team-a", "train-0", "main", "GPU-b"),
        DeviceAssignment("team-b", "infer", "srv", "GPU-c"),
    ]
    assert kubelet.requests == [b""]  # ListPodResourcesRequest is empty


def test_other_gpu_resource_names_can_be_chosen(kubelet: Kubelet) -> None:
    kubelet.answer = response(
        pod("t", "p", container("c", devices("nvidia.com/gpu.shared", "GPU-a::1")))
    )
    assert list_devices(str(kubelet.socket)) == []
    assert list_devices(str(kubelet.socket), resources=("nvidia.com/gpu.shared",)) == [
        DeviceAssignment("t", "p", "c", "GPU-a::1")
    ]


def test_a_kubelet_that_does_not_answer_raises(tmp_path: Path) -> None:
    with pytest.raises(grpc.RpcError):
        list_devices(str(tmp_path / "absent.sock"), timeout=1.0)
