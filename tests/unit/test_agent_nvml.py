"""The node agent's NVML side (`wattcap agent`), against FakeNvml (tests/unit/fake_nvml.py).

What it must do with the GPUs of its node: apply each pod's limit in milliwatts, never
outside NVML's [min, max] constraints, restore the default when no pod asks (also for a
limit left over from before it started), go on with the other GPUs when NVML fails for
one, and export the limit in force as DCGM names it.
"""

from __future__ import annotations

import inspect

import pynvml
import pytest
from fake_nvml import (
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_NO_PERMISSION,
    FakeGpu,
    FakeNvml,
)
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from wattcap.agent.gpus import NVML_CALLS, Want, reconcile
from wattcap.agent.metrics import AgentMetrics


def nvml(*gpus: FakeGpu) -> FakeNvml:
    fake = FakeNvml(list(gpus) or [FakeGpu("GPU-a"), FakeGpu("GPU-b")])
    fake.nvmlInit()
    return fake


def want(watts: int | None, pod: str = "train-0") -> Want:
    return Want(namespace="team-a", pod=pod, container="main", watts=watts)


def test_the_fake_has_the_call_signatures_of_pynvml() -> None:
    """Every NVML call the agent makes exists in pynvml with the fake's parameters."""
    for name in NVML_CALLS:
        real = inspect.signature(getattr(pynvml, name))
        fake = inspect.signature(getattr(FakeNvml, name))
        assert list(real.parameters) == list(fake.parameters)[1:], name


def test_a_pods_limit_is_set_in_milliwatts_and_reported_in_watts() -> None:
    fake = nvml()
    reports = reconcile(fake, {"GPU-a": want(300)})
    assert fake.sets == [(0, 300_000)]
    a, b = reports
    assert (a.uuid, a.enforced_w, a.want, a.error) == ("GPU-a", 300.0, want(300), None)
    assert (b.uuid, b.enforced_w, b.want, b.error) == ("GPU-b", 700.0, None, None)


def test_device_ids_may_be_indices() -> None:
    """The device plugin's DEVICE_ID_STRATEGY=index names GPUs by index, not UUID."""
    fake = nvml()
    reconcile(fake, {"1": want(250)})
    assert fake.sets == [(1, 250_000)]


@pytest.mark.parametrize(("asked", "applied"), [(50, 200_000), (1000, 700_000), (0, 200_000)])
def test_a_limit_is_never_set_outside_nvmls_constraints(asked: int, applied: int) -> None:
    fake = nvml(FakeGpu("GPU-a", limit_mw=400_000), FakeGpu("GPU-b"))
    [a, _] = reconcile(fake, {"GPU-a": want(asked)})
    assert fake.sets == [(0, applied)]
    assert a.enforced_w == applied / 1000 and a.error is None


def test_nothing_is_set_when_the_limit_is_already_in_force() -> None:
    fake = nvml()
    reconcile(fake, {"GPU-a": want(300)})
    reconcile(fake, {"GPU-a": want(300)})
    assert fake.sets == [(0, 300_000)]


def test_the_default_is_restored_when_no_pod_asks_any_more() -> None:
    """The annotation removed (watts None) or the pod gone (no want): back to the default."""
    fake = nvml()
    reconcile(fake, {"GPU-a": want(300), "GPU-b": want(300, "train-1")})
    reports = reconcile(fake, {"GPU-a": want(None)})
    assert fake.sets[2:] == [(0, 700_000), (1, 700_000)]
    assert [r.enforced_w for r in reports] == [700.0, 700.0]


def test_a_limit_left_from_before_the_agent_started_is_restored() -> None:
    fake = nvml(FakeGpu("GPU-a", limit_mw=350_000, default_mw=600_000), FakeGpu("GPU-b"))
    reconcile(fake, {})
    assert fake.sets == [(0, 600_000)]


def test_an_nvml_error_on_one_gpu_leaves_the_others_applied() -> None:
    fake = nvml(FakeGpu("GPU-a"), FakeGpu("GPU-b"), FakeGpu("GPU-c"))
    fake.faults[(0, "nvmlDeviceGetUUID")] = NVML_ERROR_GPU_IS_LOST
    fake.faults[(1, "nvmlDeviceSetPowerManagementLimit")] = NVML_ERROR_NO_PERMISSION
    wants = {"GPU-a": want(300), "GPU-b": want(300), "GPU-c": want(300)}
    a, b, c = reconcile(fake, wants)
    assert a.error == "GPU is lost" and a.enforced_w is None
    assert b.error == "Insufficient Permissions" and b.uuid == "GPU-b" and b.enforced_w is None
    assert c.error is None and c.enforced_w == 300.0
    assert fake.gpus[2].limit_mw == 300_000


def samples(metrics: AgentMetrics, name: str) -> dict[frozenset, float]:
    text = generate_latest(metrics.registry).decode()
    return {
        frozenset(s.labels.items()): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_the_enforced_limit_is_exported_with_dcgm_labels() -> None:
    fake = nvml()
    fake.faults[(1, "nvmlDeviceGetPowerManagementLimit")] = NVML_ERROR_GPU_IS_LOST
    metrics = AgentMetrics("gpu-node-3")
    metrics.update(reconcile(fake, {"GPU-a": want(300)}))
    metrics.update(reconcile(fake, {"GPU-a": want(300)}))
    gpu_a = {"gpu": "0", "UUID": "GPU-a", "Hostname": "gpu-node-3"}
    gpu_b = {"gpu": "1", "UUID": "GPU-b", "Hostname": "gpu-node-3"}
    pod = {"namespace": "team-a", "pod": "train-0", "container": "main"}
    # A GPU NVML failed on has no limit to report: an error, counted, instead.
    assert samples(metrics, "DCGM_FI_DEV_ENFORCED_POWER_LIMIT") == {
        frozenset({**gpu_a, **pod}.items()): 300.0
    }
    assert samples(metrics, "wattcap_agent_nvml_errors_total") == {frozenset(gpu_b.items()): 2.0}
    assert samples(metrics, "wattcap_agent_gpu_error") == {
        frozenset(gpu_a.items()): 0.0,
        frozenset(gpu_b.items()): 1.0,
    }


def test_an_idle_gpu_is_exported_without_pod_labels() -> None:
    metrics = AgentMetrics("n")
    metrics.update(reconcile(nvml(), {}))
    assert sorted(samples(metrics, "DCGM_FI_DEV_ENFORCED_POWER_LIMIT").values()) == [700.0, 700.0]
    for labels in samples(metrics, "DCGM_FI_DEV_ENFORCED_POWER_LIMIT"):
        assert dict(labels)["pod"] == ""


def test_a_mig_enabled_gpu_is_left_as_it_is_and_reported_as_skipped() -> None:
    """With MIG on, a GPU's power limit is the physical GPU's, shared by the pods of all
    its MIG devices (which the kubelet names MIG-..., not the GPU): no pod's limit can be
    its own. The agent leaves such a GPU's limit alone, reports no enforced limit for it
    (so nothing on it counts as throttled) and says why in wattcap_agent_gpu_skipped."""
    fake = nvml(
        FakeGpu("GPU-a", mig=True, limit_mw=500_000),
        FakeGpu("GPU-b", mig=False),
        FakeGpu("GPU-c"),  # no MIG support at all (NVML_ERROR_NOT_SUPPORTED)
    )
    metrics = AgentMetrics("gpu-node-3")
    reports = reconcile(fake, {"GPU-a": want(300), "GPU-b": want(300), "GPU-c": want(250)})
    metrics.update(reports)
    assert fake.sets == [(1, 300_000), (2, 250_000)]
    a, b, c = reports
    assert (a.skipped, a.enforced_w, a.error) == ("MIG", None, None)
    assert (b.skipped, b.enforced_w) == (None, 300.0) and (c.skipped, c.enforced_w) == (None, 250.0)
    gpu_a = {"gpu": "0", "UUID": "GPU-a", "Hostname": "gpu-node-3"}
    assert samples(metrics, "wattcap_agent_gpu_skipped") == {
        frozenset({**gpu_a, "reason": "MIG"}.items()): 1.0
    }
    enforced = samples(metrics, "DCGM_FI_DEV_ENFORCED_POWER_LIMIT")
    assert sorted(dict(k)["gpu"] for k in enforced) == ["1", "2"]
    assert samples(metrics, "wattcap_agent_gpu_error")[frozenset(gpu_a.items())] == 0.0
