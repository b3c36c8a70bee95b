"""`wattcap agent`: the process on each GPU node (the chart's DaemonSet, agent.enabled).

Three threads: a watch of the node's pods (fieldSelector spec.nodeName) that keeps
PodLimits, the metrics server, and the loop that, every --interval seconds or as soon as
a pod's limit changes, asks the kubelet which pod holds which GPU and brings every GPU to
its pod's limit (Agent.pass_once). Limits stay as set when the agent stops: the hardware
keeps the site's promise while the agent restarts, and the next agent reconciles.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

import grpc

from .gpus import GpuReport, reconcile
from .metrics import AgentMetrics
from .podresources import GPU_RESOURCES, SOCKET, DeviceAssignment, list_devices
from .pods import PodLimits, wants_for

log = logging.getLogger("wattcap.agent")


class Agent:
    """One node's GPUs, their pods' limits and what is exported."""

    def __init__(
        self,
        nvml: Any,
        limits: PodLimits,
        metrics: AgentMetrics,
        socket: str = SOCKET,
        resources: Sequence[str] = GPU_RESOURCES,
    ) -> None:
        self.nvml = nvml
        self.limits = limits
        self.metrics = metrics
        self.socket = socket
        self.resources = tuple(resources)
        self._assignments: list[DeviceAssignment] | None = None
        self._told_mig: set[str] = set()  # GPUs whose MIG skip was logged

    def pass_once(self) -> list[GpuReport]:
        """Bring every GPU to its pod's limit; [] while the kubelet has never answered.

        A kubelet that stops answering leaves the last allocation in use: restoring
        defaults on a guess would lift throttles the site counts on.
        """
        try:
            self._assignments = list_devices(self.socket, self.resources)
        except grpc.RpcError as exc:
            self.metrics.podresources_errors += 1
            log.warning("kubelet pod-resources at %s: %s", self.socket, exc)
        if self._assignments is None:
            return []
        try:
            reports = reconcile(self.nvml, wants_for(self._assignments, self.limits))
        except self.nvml.NVMLError as exc:
            self.metrics.nvml_errors += 1
            log.error("NVML cannot count the GPUs: %s", exc)
            return []
        for r in reports:
            if r.error is not None:
                log.warning("GPU %d (%s): %s", r.index, r.uuid or "?", r.error)
            if r.skipped == "MIG" and r.uuid not in self._told_mig:
                self._told_mig.add(r.uuid)
                log.warning(
                    "GPU %d (%s) has MIG enabled: its power limit is shared by every MIG "
                    "device's pod, so the agent leaves it as it is and reports no enforced "
                    "limit for it (jobs there are preempted rather than throttled)",
                    r.index,
                    r.uuid,
                )
        self.metrics.update(reports)
        return reports


def watch_pods(
    api: Any,
    node: str,
    limits: PodLimits,
    wake: threading.Event,
    stop: threading.Event | None = None,
    timeout_seconds: int = 300,
) -> None:
    """Keep `limits` for the pods bound to `node`: list, then watch; relist on any error
    and every `timeout_seconds` (a watch can silently stall). Returns once `stop` is set."""
    from kubernetes import watch

    selector = f"spec.nodeName={node}"
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            resp = api.list_pod_for_all_namespaces(
                field_selector=selector, _preload_content=False, _request_timeout=(5, 30)
            )
            body = json.loads(resp.data)
            limits.reset(body.get("items") or [])
            wake.set()
            stream = watch.Watch().stream(
                api.list_pod_for_all_namespaces,
                field_selector=selector,
                resource_version=body["metadata"]["resourceVersion"],
                timeout_seconds=timeout_seconds,
            )
            for event in stream:
                if stop.is_set():
                    return
                if event["type"] in ("ADDED", "MODIFIED", "DELETED") and limits.apply(
                    event["type"], event["raw_object"]
                ):
                    wake.set()
        except Exception as exc:
            log.warning("watching the pods of node %s: %s; listing again", node, exc)
            stop.wait(2.0)


def gpu_resources(args: argparse.Namespace) -> tuple[str, ...]:
    """The extended resources whose devices are GPUs: --resource, else nvidia.com/gpu."""
    return tuple(args.resource or GPU_RESOURCES)


def agent_command(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    node = args.node_name or os.environ.get("NODE_NAME", "")
    if not node:
        log.error("--node-name (or $NODE_NAME) is required: the agent acts on its own node")
        return 2
    import pynvml
    from kubernetes import client, config
    from prometheus_client import start_http_server

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.error("NVML: %s (the NVIDIA driver and /dev/nvidia* must be visible)", exc)
        return 1
    if args.kubeconfig or os.environ.get("KUBECONFIG"):
        config.load_kube_config(config_file=args.kubeconfig or os.environ["KUBECONFIG"])
    else:
        config.load_incluster_config()
    metrics = AgentMetrics(node)
    start_http_server(args.metrics_port, args.address, registry=metrics.registry)
    limits, wake, stop = PodLimits(), threading.Event(), threading.Event()
    agent = Agent(pynvml, limits, metrics, args.pod_resources_socket, gpu_resources(args))
    threading.Thread(
        target=watch_pods, args=(client.CoreV1Api(), node, limits, wake, stop), daemon=True
    ).start()
    signal.signal(signal.SIGTERM, lambda *_: (stop.set(), wake.set()))
    log.info("agent on node %s: metrics on :%d", node, args.metrics_port)
    while not stop.is_set():
        agent.pass_once()
        wake.wait(args.interval)
        wake.clear()
    pynvml.nvmlShutdown()
    return 0
