"""What the agent exports: the limit in force per GPU, as DCGM names it, and NVML errors.

DCGM_FI_DEV_ENFORCED_POWER_LIMIT (W) carries dcgm-exporter's labels, so the operator reads
the agent's series and dcgm-exporter's alike (the power-limit contract: a job counts as
throttled only while this gauge shows its limit on its GPUs). A GPU NVML failed on has no
limit to report; it shows as wattcap_agent_gpu_error 1 and counts in
wattcap_agent_nvml_errors_total instead, so the operator, seeing no confirmation, falls
back to preemption. A GPU the agent leaves alone (MIG enabled, gpus.py) has no enforced
limit either; it shows as wattcap_agent_gpu_skipped 1 with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .gpus import GpuReport

ENFORCED_METRIC = "DCGM_FI_DEV_ENFORCED_POWER_LIMIT"
GPU_LABELS = ("gpu", "UUID", "Hostname")
POD_LABELS = ("namespace", "pod", "container")


class AgentMetrics(Collector):
    """The last pass's reports, served from its own registry (the agent's metrics port)."""

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self._reports: list[GpuReport] = []
        self._errors: dict[tuple[str, str], int] = {}
        self.podresources_errors = 0  # kubelet List calls that failed
        self.nvml_errors = 0  # passes NVML could not even count the GPUs in
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def update(self, reports: Sequence[GpuReport]) -> None:
        for r in reports:
            if r.error is not None:
                key = (str(r.index), r.uuid)
                self._errors[key] = self._errors.get(key, 0) + 1
        self._reports = list(reports)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        enforced = GaugeMetricFamily(
            ENFORCED_METRIC,
            "Power limit in force on the GPU, W (applied by wattcap's node agent).",
            labels=[*GPU_LABELS, *POD_LABELS],
        )
        failing = GaugeMetricFamily(
            "wattcap_agent_gpu_error",
            "1 when NVML failed on this GPU in the agent's last pass (its limit is unknown).",
            labels=list(GPU_LABELS),
        )
        skipped = GaugeMetricFamily(
            "wattcap_agent_gpu_skipped",
            "1 when the agent leaves this GPU's power limit alone (reason MIG: MIG enabled).",
            labels=[*GPU_LABELS, "reason"],
        )
        for r in self._reports:
            gpu = [str(r.index), r.uuid, self.hostname]
            failing.add_metric(gpu, 0.0 if r.error is None else 1.0)
            if r.skipped is not None:
                skipped.add_metric([*gpu, r.skipped], 1.0)
            if r.enforced_w is not None:
                w = r.want
                pod = [w.namespace, w.pod, w.container] if w else ["", "", ""]
                enforced.add_metric([*gpu, *pod], r.enforced_w)
        errors = CounterMetricFamily(
            "wattcap_agent_nvml_errors",
            "NVML calls that failed for this GPU since the agent started.",
            labels=list(GPU_LABELS),
        )
        for (index, uuid), n in sorted(self._errors.items()):
            errors.add_metric([index, uuid, self.hostname], float(n))
        node = CounterMetricFamily(
            "wattcap_agent_pass_errors",
            "Agent passes that failed whole: the kubelet did not answer, or NVML had no GPUs.",
            labels=["Hostname", "source"],
        )
        node.add_metric([self.hostname, "podresources"], float(self.podresources_errors))
        node.add_metric([self.hostname, "nvml"], float(self.nvml_errors))
        yield enforced
        yield failing
        yield skipped
        yield errors
        yield node
