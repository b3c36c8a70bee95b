"""The node agent's pass: pods on its node and their limit annotation, the kubelet's GPU
allocation and NVML together (`wattcap agent`).

The kubelet is a real gRPC server on a unix socket (kubelet_podresources.py), NVML is
FakeNvml (fake_nvml.py) and the pods are fed as the API server's watch delivers them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_nvml import FakeGpu, FakeNvml
from kubelet_podresources import Kubelet, container, devices, pod, response, running_kubelet

from wattcap.agent.gpus import LIMIT_ANNOTATION, Want
from wattcap.agent.metrics import AgentMetrics
from wattcap.agent.podresources import DeviceAssignment
from wattcap.agent.pods import PodLimits, parse_limit, wants_for
from wattcap.agent.run import Agent


def api_pod(name: str, watts: str | None = None, phase: str = "Running") -> dict[str, Any]:
    ann = {} if watts is None else {LIMIT_ANNOTATION: watts}
    return {
        "metadata": {"namespace": "team-a", "name": name, "annotations": ann},
        "spec": {"nodeName": "gpu-node-0"},
        "status": {"phase": phase},
    }


@pytest.mark.parametrize(
    ("value", "watts"),
    [("300", 300), (" 450 ", 450), ("0", None), ("-5", None), ("3.5e2", None), ("x", None)],
)
def test_the_annotation_is_a_positive_integer_of_watts(value: str, watts: int | None) -> None:
    assert parse_limit(api_pod("p", value)) == watts


def test_limits_follow_the_watch() -> None:
    limits = PodLimits()
    limits.reset([api_pod("a", "300"), api_pod("b")])
    assert (limits.get("team-a", "a"), limits.get("team-a", "b")) == (300, None)
    assert limits.apply("MODIFIED", api_pod("a", "250"))
    assert limits.get("team-a", "a") == 250
    assert not limits.apply("MODIFIED", api_pod("a", "250"))  # nothing changed
    assert limits.apply("MODIFIED", api_pod("a", "250", phase="Succeeded"))
    assert limits.get("team-a", "a") is None
    limits.apply("ADDED", api_pod("c", "200"))
    assert limits.apply("DELETED", api_pod("c", "200"))
    assert limits.get("team-a", "c") is None


def test_shared_gpu_replicas_map_to_their_gpu() -> None:
    """Time-sliced GPUs are allocated as GPU-x::0, GPU-x::1: the limit is the GPU's."""
    limits = PodLimits()
    limits.reset([api_pod("a", "300")])
    got = wants_for([DeviceAssignment("team-a", "a", "main", "GPU-x::1")], limits)
    assert got == {"GPU-x": Want("team-a", "a", "main", 300)}


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[Kubelet]:
    with running_kubelet(tmp_path) as k:
        yield k


def agent_on(kubelet: Kubelet, *gpus: FakeGpu) -> tuple[Agent, FakeNvml, PodLimits]:
    nvml = FakeNvml(list(gpus) or [FakeGpu("GPU-a"), FakeGpu("GPU-b")])
    nvml.nvmlInit()
    limits = PodLimits()
    agent = Agent(nvml, limits, AgentMetrics("gpu-node-0"), socket=str(kubelet.socket))
    return agent, nvml, limits


def holds(name: str, *gpus: str) -> bytes:
    return pod("team-a", name, container("main", devices("nvidia.com/gpu", *gpus)))


def test_a_pods_limit_is_applied_and_restored_when_the_pod_ends(kubelet: Kubelet) -> None:
    agent, nvml, limits = agent_on(kubelet)
    kubelet.answer = response(holds("train-0", "GPU-a", "GPU-b"))
    limits.reset([api_pod("train-0", "300")])
    agent.pass_once()
    assert [g.current_mw for g in nvml.gpus] == [300_000, 300_000]
    limits.apply("MODIFIED", api_pod("train-0", "300", phase="Succeeded"))
    agent.pass_once()
    assert [g.current_mw for g in nvml.gpus] == [700_000, 700_000]


def test_the_default_is_restored_when_the_annotation_is_removed(kubelet: Kubelet) -> None:
    agent, nvml, limits = agent_on(kubelet)
    kubelet.answer = response(holds("train-0", "GPU-a"))
    limits.reset([api_pod("train-0", "300")])
    agent.pass_once()
    limits.apply("MODIFIED", api_pod("train-0"))
    reports = agent.pass_once()
    assert nvml.gpus[0].current_mw == 700_000
    assert reports[0].want == Want("team-a", "train-0", "main", None)


def test_on_start_a_limit_no_pod_asks_for_is_restored(kubelet: Kubelet) -> None:
    agent, nvml, limits = agent_on(kubelet, FakeGpu("GPU-a", limit_mw=300_000), FakeGpu("GPU-b"))
    kubelet.answer = response(holds("gone", "GPU-b"))
    limits.reset([])
    agent.pass_once()
    assert nvml.sets == [(0, 700_000)]


def test_nothing_is_touched_before_the_kubelet_has_answered(tmp_path: Path) -> None:
    """Without the kubelet's allocation the agent cannot tell a pod's limit from a stale
    one; it leaves every GPU as it is and counts the failure."""
    with running_kubelet(tmp_path) as kubelet:
        agent, nvml, limits = agent_on(kubelet, FakeGpu("GPU-a", limit_mw=300_000))
    limits.reset([api_pod("train-0", "300")])
    assert agent.pass_once() == []
    assert nvml.sets == [] and agent.metrics.podresources_errors == 1


def test_the_agent_is_a_wattcap_subcommand(monkeypatch: pytest.MonkeyPatch) -> None:
    from wattcap.cli import build_parser, main

    args = build_parser().parse_args(["agent", "--node-name", "gpu-node-0"])
    assert (args.metrics_port, args.pod_resources_socket) == (
        9401,
        "/var/lib/kubelet/pod-resources/kubelet.sock",
    )
    monkeypatch.delenv("NODE_NAME", raising=False)
    assert main(["agent"]) == 2  # no node: refused before touching NVML


def test_a_mig_gpu_is_skipped_with_one_log_line(
    kubelet: Kubelet, caplog: pytest.LogCaptureFixture
) -> None:
    agent, nvml, limits = agent_on(kubelet, FakeGpu("GPU-a", mig=True), FakeGpu("GPU-b"))
    kubelet.answer = response(holds("train-0", "GPU-b"))
    limits.reset([api_pod("train-0", "300")])
    with caplog.at_level("INFO", logger="wattcap.agent"):
        agent.pass_once()
        agent.pass_once()
    assert nvml.sets == [(1, 300_000)]
    said = [r.getMessage() for r in caplog.records if "MIG" in r.getMessage()]
    assert len(said) == 1 and "GPU 0 (GPU-a)" in said[0], said


def test_without_resource_flags_the_agent_reads_nvidia_gpus() -> None:
    """The help says "default nvidia.com/gpu": the agent run without --resource (as by
    hand) matched no pod's GPU at all (found by the agent's end-to-end run)."""
    from wattcap.agent.run import gpu_resources
    from wattcap.cli import build_parser

    args = build_parser().parse_args(["agent", "--node-name", "gpu-node-0"])
    assert gpu_resources(args) == ("nvidia.com/gpu",)
    args = build_parser().parse_args(["agent", "--resource", "nvidia.com/mig-1g.10gb"])
    assert gpu_resources(args) == ("nvidia.com/mig-1g.10gb",)
