"""A simulated NVIDIA DCGM exporter for kwok GPU nodes.

kwok nodes have no GPUs, so nothing measures their power. This process stands
in for dcgm-exporter: every interval it lists the GPU nodes and the pods bound
to them, gives each GPU-requesting pod GPU indices on its node (stable for the
pod's lifetime), computes every GPU's power from the pod's ground-truth profile
(annotation ``wattcap.io/sim-power``) and serves, on ``/metrics``, the
DCGM fields wattcap reads, with dcgm-exporter's names, types and labels:

    DCGM_FI_DEV_POWER_USAGE               gauge, W
    DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION  counter, mJ (power integrated over time)
    DCGM_FI_DEV_ENFORCED_POWER_LIMIT      gauge, W (as the node agent reports it)

It also plays wattcap's node agent and the physics of GPU power limits (`throttle.py`):
a pod the operator limits draws min(natural, limit) and finishes later.

The pure parts (profile parsing, profile -> watts at time t, noise, GPU
assignment) are plain functions; :class:`SiteSimulator` turns node and pod
dicts (as the API server returns them) into samples without any I/O, and only
:func:`exporter_command` talks to the API server and the network.
See docs/measured-power.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.core import CollectorRegistry, Metric
from prometheus_client.registry import Collector

from .throttle import DEFAULT_MIN_LIMIT_WATTS, agent_down, enforced_watts, physics_patch

log = logging.getLogger("wattcap.sim.exporter")

POWER_ANNOTATION = "wattcap.io/sim-power"
GPU_RESOURCE = "nvidia.com/gpu"
PRODUCT_LABEL = "nvidia.com/gpu.product"
POWER_METRIC = "DCGM_FI_DEV_POWER_USAGE"
ENERGY_METRIC = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
LIMIT_METRIC = "DCGM_FI_DEV_ENFORCED_POWER_LIMIT"
# dcgm-exporter's label names, in its order.
LABELS = ("gpu", "UUID", "device", "modelName", "Hostname", "container", "namespace", "pod")
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DEFAULT_IDLE_WATTS = 70.0
DEFAULT_TDP_WATTS = 700.0
DEFAULT_POD_WATTS = 400.0
DEFAULT_CHECKPOINT_SECONDS = 5.0

_PROFILE_KEYS = {
    "watts": "watts",
    "noise": "noise",
    "rampSeconds": "ramp_seconds",
    "checkpointEverySeconds": "checkpoint_every_seconds",
    "checkpointSeconds": "checkpoint_seconds",
    "checkpointWatts": "checkpoint_watts",
    "idleSeconds": "idle_seconds",
    "workSeconds": "work_seconds",
}


# --------------------------------------------------------------------------
# Pure parts: the power profile
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerProfile:
    """Ground-truth power of each GPU of one pod (the ``wattcap.io/sim-power`` annotation).

    ``checkpoint_watts=None`` means "dip to the idle power". ``idle_seconds``:
    the pod Running but its work not started (image pull, data loading), at
    idle; ``work_seconds`` (0: until the pod ends): how long the work lasts
    before the pod sits idle until it exits.
    """

    watts: float
    noise: float = 0.0
    ramp_seconds: float = 0.0
    checkpoint_every_seconds: float = 0.0
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS
    checkpoint_watts: float | None = None
    idle_seconds: float = 0.0
    work_seconds: float = 0.0


def parse_profile(raw: str | None, default_watts: float = DEFAULT_POD_WATTS) -> PowerProfile:
    """The profile in an annotation value; ``None`` or blank gives a flat ``default_watts``.

    Raises ValueError with a reason on malformed JSON, unknown keys (typos such
    as ``ramp_seconds`` would otherwise be silently ignored) or bad values.
    """
    if raw is None or not raw.strip():
        return PowerProfile(watts=float(default_watts))
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{POWER_ANNOTATION} is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{POWER_ANNOTATION} must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(_PROFILE_KEYS))
    if unknown:
        raise ValueError(
            f"{POWER_ANNOTATION}: unknown key(s) {unknown}; known: {sorted(_PROFILE_KEYS)}"
        )
    if "watts" not in obj:
        raise ValueError(f"{POWER_ANNOTATION}: 'watts' is required")
    kwargs: dict[str, float] = {}
    for key, value in obj.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{POWER_ANNOTATION}: {key} must be a finite number, got {value!r}")
        if value < 0:
            raise ValueError(f"{POWER_ANNOTATION}: {key} must be >= 0, got {value!r}")
        kwargs[_PROFILE_KEYS[key]] = float(value)
    return PowerProfile(**kwargs)


def profile_watts(
    profile: PowerProfile,
    elapsed: float,
    *,
    idle_watts: float = DEFAULT_IDLE_WATTS,
    tdp_watts: float = DEFAULT_TDP_WATTS,
    z: float = 0.0,
) -> float:
    """Power of one GPU of a Running pod, ``elapsed`` seconds after the pod started.

    - idle before ``idle_seconds`` and, if ``work_seconds`` > 0, from
      ``idle_seconds + work_seconds`` on; the rest counts from the end of
      ``idle_seconds``, when the work starts;
    - ramp: linear from ``idle_watts`` at 0 s to ``watts`` at ``ramp_seconds``;
    - checkpoint dips: during ``[k*every, k*every + checkpoint_seconds)`` for
      k = 1, 2, ... the target is ``checkpoint_watts`` (idle if unset);
    - noise: the target times ``1 + noise * z`` (z a standard normal draw);
    - the result is clipped to ``[idle_watts, tdp_watts]``.
    """
    elapsed = max(0.0, elapsed) - profile.idle_seconds
    if elapsed < 0 or (profile.work_seconds > 0 and elapsed >= profile.work_seconds):
        return idle_watts
    if profile.ramp_seconds > 0 and elapsed < profile.ramp_seconds:
        target = idle_watts + (profile.watts - idle_watts) * elapsed / profile.ramp_seconds
    else:
        target = profile.watts
    every = profile.checkpoint_every_seconds
    dipping = every > 0 and elapsed >= every and elapsed % every < profile.checkpoint_seconds
    if dipping:
        cw = profile.checkpoint_watts
        target = idle_watts if cw is None else cw
    watts = target * (1.0 + profile.noise * z)
    return min(max(watts, idle_watts), tdp_watts)


def noise_z(seed: int, pod_uid: str, gpu: int, tick: int) -> float:
    """A standard normal draw fixed by (seed, pod, gpu, tick): Box-Muller on a hash.

    Deterministic across processes and Python versions (no global RNG state).
    """
    digest = hashlib.blake2b(f"{seed}|{pod_uid}|{gpu}|{tick}".encode(), digest_size=16).digest()
    a = int.from_bytes(digest[:8], "big")
    b = int.from_bytes(digest[8:], "big")
    u1 = (a + 1) / 2.0**64  # (0, 1]: log is finite
    u2 = b / 2.0**64
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


# --------------------------------------------------------------------------
# Pure parts: GPU assignment
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuDemand:
    """A bound pod that holds ``count`` GPUs of ``node``; ``key`` is its uid."""

    key: str
    node: str
    count: int


@dataclass(frozen=True)
class Assignment:
    node: str
    indices: tuple[int, ...]


def assign_gpus(
    previous: Mapping[str, Assignment],
    demands: Sequence[GpuDemand],
    capacity: Mapping[str, int],
) -> dict[str, Assignment]:
    """GPU indices per pod: earlier assignments kept, new pods first-fit over free indices.

    ``demands`` is every pod that holds GPUs now, in priority order (oldest
    first); pods absent from it release their GPUs. A pod keeps its earlier
    indices while it exists on the same node with the same count. A new pod
    gets the lowest free indices of its node; if fewer than it needs are free
    (the API server briefly shows a new pod before an old one's exit), it gets
    none this time and is retried on the next call. No node ever has more
    than ``capacity[node]`` indices in use, nor an index >= its capacity.
    """
    result: dict[str, Assignment] = {}
    used: dict[str, set[int]] = {}
    for d in demands:
        prev = previous.get(d.key)
        cap = capacity.get(d.node, 0)
        if prev is None or prev.node != d.node or len(prev.indices) != d.count:
            continue
        taken = used.setdefault(d.node, set())
        if any(i >= cap or i in taken for i in prev.indices):
            continue
        taken.update(prev.indices)
        result[d.key] = prev
    for d in demands:
        if d.key in result or d.count <= 0:
            continue
        taken = used.setdefault(d.node, set())
        free = [i for i in range(capacity.get(d.node, 0)) if i not in taken]
        if len(free) < d.count:
            continue
        picked = tuple(free[: d.count])
        taken.update(picked)
        result[d.key] = Assignment(d.node, picked)
    return result


# --------------------------------------------------------------------------
# Pure parts: reading API objects
# --------------------------------------------------------------------------


def _quantity_int(value: Any) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        try:
            return int(float(str(value)))
        except ValueError:
            return 0


def _container_gpus(container: Mapping[str, Any]) -> int:
    res = container.get("resources") or {}
    for part in ("limits", "requests"):  # extended resources: limits rule, requests == limits
        qty = (res.get(part) or {}).get(GPU_RESOURCE)
        if qty is not None:
            return _quantity_int(qty)
    return 0


def pod_gpu_request(pod: Mapping[str, Any]) -> tuple[int, str]:
    """(GPUs the pod holds, name of its first container requesting GPUs).

    Like the scheduler: the sum over containers, or the largest init container
    if that is more.
    """
    spec = pod.get("spec") or {}
    total, first = 0, ""
    for c in spec.get("containers") or []:
        n = _container_gpus(c)
        if n > 0:
            total += n
            first = first or str(c.get("name", ""))
    init = max((_container_gpus(c) for c in spec.get("initContainers") or []), default=0)
    return max(total, init), first


def node_gpu_capacity(node: Mapping[str, Any]) -> int:
    """Physical GPUs of a node: status.capacity (what DCGM would see), else allocatable."""
    status = node.get("status") or {}
    for part in ("capacity", "allocatable"):
        qty = (status.get(part) or {}).get(GPU_RESOURCE)
        if qty is not None:
            return max(0, _quantity_int(qty))
    return 0


def model_name(node: Mapping[str, Any]) -> str:
    """dcgm's modelName from GPU feature discovery's product label.

    NVIDIA-H100-80GB-HBM3 -> NVIDIA H100 80GB HBM3.
    """
    labels = (node.get("metadata") or {}).get("labels") or {}
    product = labels.get(PRODUCT_LABEL)
    return product.replace("-", " ") if product else "NVIDIA GPU"


@lru_cache(maxsize=1 << 16)
def gpu_uuid(node: str, index: int) -> str:
    """A stable fake GPU UUID in NVIDIA's format, from the node name and index."""
    digest = hashlib.sha256(f"{node}/{index}".encode()).digest()
    return f"GPU-{uuid.UUID(bytes=digest[:16])}"


@lru_cache(maxsize=1 << 14)
def parse_time(value: str | None) -> float | None:
    """RFC 3339 (as the API server writes it) -> Unix seconds; None if absent or bad."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def pod_start_time(pod: Mapping[str, Any]) -> float | None:
    """When the pod started: status.startTime, else its first running container's startedAt."""
    status = pod.get("status") or {}
    t = parse_time(status.get("startTime"))
    if t is not None:
        return t
    for cs in status.get("containerStatuses") or []:
        t = parse_time(((cs.get("state") or {}).get("running") or {}).get("startedAt"))
        if t is not None:
            return t
    return None


# --------------------------------------------------------------------------
# The site: API objects in, one sample per GPU out (no I/O)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSample:
    node: str
    index: int
    uuid: str
    model: str
    pod: str
    namespace: str
    container: str
    watts: float
    energy_mj: float
    # the limit in force (W), as the node agent reports it; None: no agent reports here
    limit_w: float | None = None

    def labels(self) -> dict[str, str]:
        return {
            "gpu": str(self.index),
            "UUID": self.uuid,
            "device": f"nvidia{self.index}",
            "modelName": self.model,
            "Hostname": self.node,
            "container": self.container,
            "namespace": self.namespace,
            "pod": self.pod,
        }


@dataclass(frozen=True)
class _Holder:
    uid: str
    name: str
    namespace: str
    container: str
    running: bool
    start: float | None
    profile: PowerProfile
    limit: float | None = None  # the power limit in force on its GPUs (None: the default)


class SiteSimulator:
    """GPU assignments, power and energy counters of a site, advanced by :meth:`step`."""

    def __init__(
        self,
        *,
        seed: int = 0,
        interval: float = 1.0,
        idle_watts: float = DEFAULT_IDLE_WATTS,
        tdp_watts: float = DEFAULT_TDP_WATTS,
        default_watts: float = DEFAULT_POD_WATTS,
        agent: bool = True,
        min_limit_watts: float = DEFAULT_MIN_LIMIT_WATTS,
    ) -> None:
        if not 0 <= idle_watts <= tdp_watts:
            raise ValueError(f"need 0 <= idle watts ({idle_watts}) <= TDP ({tdp_watts})")
        self.seed = seed
        self.interval = interval if interval > 0 else 1.0
        self.idle_watts = float(idle_watts)
        self.tdp_watts = float(tdp_watts)
        self.default_watts = float(default_watts)
        # plays the node agent (False: `--no-agent`, the fake for a dead one everywhere)
        self.agent = agent
        self.min_limit_watts = float(min_limit_watts)
        self.assignments: dict[str, Assignment] = {}
        self.energy_mj: dict[tuple[str, int], float] = {}
        self.last_watts: dict[tuple[str, int], float] = {}
        self.last_mono: float | None = None
        self._bad_profiles: set[tuple[str, str]] = set()
        # Per pod uid: its GPU request (a pod's spec is immutable) and its
        # parsed profile with the annotation it came from (annotations are not).
        self._requests: dict[str, tuple[int, str]] = {}
        self._profiles: dict[str, tuple[str | None, PowerProfile]] = {}

    def _request(self, pod: Mapping[str, Any], uid: str) -> tuple[int, str]:
        got = self._requests.get(uid)
        if got is None:
            got = self._requests[uid] = pod_gpu_request(pod)
        return got

    def _profile(self, pod: Mapping[str, Any], uid: str) -> PowerProfile:
        raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(POWER_ANNOTATION)
        cached = self._profiles.get(uid)
        if cached is not None and cached[0] == raw:
            return cached[1]
        profile = self._parse_profile(pod, uid, raw)
        self._profiles[uid] = (raw, profile)
        return profile

    def _parse_profile(self, pod: Mapping[str, Any], uid: str, raw: str | None) -> PowerProfile:
        try:
            return parse_profile(raw, self.default_watts)
        except ValueError as e:
            if (uid, raw or "") not in self._bad_profiles:
                self._bad_profiles.add((uid, raw or ""))
                meta = pod.get("metadata") or {}
                log.warning(
                    "pod %s/%s: %s; using the default %.0f W",
                    meta.get("namespace"),
                    meta.get("name"),
                    e,
                    self.default_watts,
                )
            return PowerProfile(watts=self.default_watts)

    def agent_patches(
        self,
        nodes: Iterable[Mapping[str, Any]],
        pods: Iterable[Mapping[str, Any]],
        now: float,
    ) -> list[tuple[str, str, dict[str, str | None]]]:
        """(namespace, pod, annotations) writes that apply, change or drop the power limit
        in force on Running GPU pods, moving their finish time (`throttle.physics_patch`)."""
        up = {
            name: self.agent and not agent_down(n)
            for n in nodes
            if (name := (n.get("metadata") or {}).get("name"))
        }
        out = []
        for pod in pods:
            meta = pod.get("metadata") or {}
            node = (pod.get("spec") or {}).get("nodeName")
            if node not in up or (pod.get("status") or {}).get("phase") != "Running":
                continue
            if meta.get("deletionTimestamp"):
                continue
            uid = meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"
            if self._request(pod, uid)[0] <= 0:
                continue
            natural = self._profile(pod, uid).watts
            patch = physics_patch(
                meta.get("annotations") or {},
                pod_start_time(pod),
                natural,
                now,
                up[node],
                self.min_limit_watts,
                self.tdp_watts,
            )
            if patch:
                out.append((str(meta.get("namespace", "")), str(meta.get("name", "")), patch))
        return out

    def step(
        self,
        nodes: Iterable[Mapping[str, Any]],
        pods: Iterable[Mapping[str, Any]],
        now: float,
        mono: float | None = None,
    ) -> list[GpuSample]:
        """Advance to wall time ``now`` (``mono``: a monotonic clock for the energy integral).

        ``nodes`` are the GPU nodes, ``pods`` any pods (those not bound to one of
        ``nodes``, or terminal, are ignored). Returns one sample per GPU, sorted
        by node and index.
        """
        mono = now if mono is None else mono
        capacity: dict[str, int] = {}
        models: dict[str, str] = {}
        agents: dict[str, bool] = {}
        for node in nodes:
            name = (node.get("metadata") or {}).get("name")
            if name:
                capacity[name] = node_gpu_capacity(node)
                models[name] = model_name(node)
                agents[name] = self.agent and not agent_down(node)

        holders: dict[str, _Holder] = {}
        demands: list[tuple[str, str, str, GpuDemand]] = []
        for pod in pods:
            meta = pod.get("metadata") or {}
            node = (pod.get("spec") or {}).get("nodeName")
            phase = (pod.get("status") or {}).get("phase")
            if node not in capacity or phase in ("Succeeded", "Failed"):
                continue
            uid = meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"
            count, container = self._request(pod, uid)
            if count <= 0:
                continue
            holders[uid] = _Holder(
                uid=uid,
                name=str(meta.get("name", "")),
                namespace=str(meta.get("namespace", "")),
                container=container,
                running=phase == "Running",
                start=pod_start_time(pod),
                profile=self._profile(pod, uid),
                limit=enforced_watts(meta.get("annotations") or {}),
            )
            created = str(meta.get("creationTimestamp", ""))
            demands.append(
                (created, holders[uid].namespace, holders[uid].name, GpuDemand(uid, node, count))
            )
        demands.sort(key=lambda d: d[:3])
        for cache in (self._requests, self._profiles):  # forget pods that are gone
            for uid in [u for u in cache if u not in holders]:
                del cache[uid]
        self._bad_profiles = {b for b in self._bad_profiles if b[0] in holders}
        self.assignments = assign_gpus(self.assignments, [d[3] for d in demands], capacity)
        owner: dict[tuple[str, int], str] = {}
        for uid, a in self.assignments.items():
            for i in a.indices:
                owner[(a.node, i)] = uid

        dt = 0.0 if self.last_mono is None else max(0.0, mono - self.last_mono)
        self.last_mono = mono
        tick = int(now // self.interval)
        samples: list[GpuSample] = []
        seen: set[tuple[str, int]] = set()
        for node in sorted(capacity):
            for index in range(capacity[node]):
                key = (node, index)
                seen.add(key)
                holder = holders.get(owner.get(key, ""))
                watts = self.idle_watts
                if holder is not None and holder.running:
                    elapsed = 0.0 if holder.start is None else now - holder.start
                    z = noise_z(self.seed, holder.uid, index, tick) if holder.profile.noise else 0.0
                    watts = profile_watts(
                        holder.profile,
                        elapsed,
                        idle_watts=self.idle_watts,
                        tdp_watts=self.tdp_watts,
                        z=z,
                    )
                    if holder.limit is not None:  # the hardware holds it at its limit
                        watts = min(watts, holder.limit)
                prev = self.last_watts.get(key, watts)
                energy = self.energy_mj.get(key, 0.0) + (prev + watts) / 2.0 * dt * 1000.0
                self.energy_mj[key] = energy
                self.last_watts[key] = watts
                samples.append(
                    GpuSample(
                        node=node,
                        index=index,
                        uuid=gpu_uuid(node, index),
                        model=models[node],
                        pod=holder.name if holder else "",
                        namespace=holder.namespace if holder else "",
                        container=holder.container if holder else "",
                        watts=watts,
                        energy_mj=energy,
                        limit_w=self._limit_in_force(holder, agents[node]),
                    )
                )
        for key in set(self.energy_mj) - seen:  # nodes that left the site
            del self.energy_mj[key]
            self.last_watts.pop(key, None)
        return samples

    def _limit_in_force(self, holder: _Holder | None, agent_up: bool) -> float | None:
        """What the agent reports for a GPU: its pod's limit, else the default (TDP)."""
        if not agent_up:
            return None
        if holder is not None and holder.running and holder.limit is not None:
            return holder.limit
        return self.tdp_watts


# --------------------------------------------------------------------------
# Exposition
# --------------------------------------------------------------------------


class DcgmCollector(Collector):
    """Serves the latest published samples, plus a few metrics about the exporter itself."""

    def __init__(self) -> None:
        self._samples: list[GpuSample] = []
        self._lock = threading.Lock()
        self.list_errors = 0
        self.last_success: float = 0.0

    def publish(self, samples: list[GpuSample]) -> None:
        with self._lock:
            self._samples = samples

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            samples = self._samples
        power = Metric(POWER_METRIC, "Power draw (in W).", "gauge")
        energy = Metric(ENERGY_METRIC, "Total energy consumption since boot (in mJ).", "counter")
        limit = Metric(LIMIT_METRIC, "Current power limit for the device (in W).", "gauge")
        for s in samples:
            labels = s.labels()
            power.add_sample(POWER_METRIC, labels, round(s.watts, 3))
            energy.add_sample(ENERGY_METRIC, labels, round(s.energy_mj, 1))
            if s.limit_w is not None:
                limit.add_sample(LIMIT_METRIC, labels, round(s.limit_w, 3))
        yield power
        yield energy
        yield limit
        errors = Metric("wattcap_sim_exporter_list_errors", "Failed node/pod listings.", "counter")
        errors.add_sample("wattcap_sim_exporter_list_errors_total", {}, self.list_errors)
        yield errors
        ok = Metric(
            "wattcap_sim_exporter_last_success_timestamp_seconds",
            "When the nodes and pods were last listed successfully.",
            "gauge",
        )
        ok.add_sample("wattcap_sim_exporter_last_success_timestamp_seconds", {}, self.last_success)
        yield ok


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@lru_cache(maxsize=1 << 16)
def _label_text(items: tuple[tuple[str, str], ...]) -> str:
    """The inside of {...} for a label set; cached: a GPU's labels rarely change."""
    return ",".join(f'{k}="{_escape(v)}"' for k, v in items)


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def render(registry: CollectorRegistry) -> bytes:
    """Text exposition format 0.0.4, as dcgm-exporter (a Go exporter) writes it.

    prometheus_client's own writer names a counter family ``<name>_total`` in
    its HELP/TYPE lines; dcgm-exporter's energy counter has no ``_total``, so
    the family is written under the name of its samples.
    """
    out: list[str] = []
    for metric in registry.collect():
        names = {s.name for s in metric.samples}
        family = names.pop() if len(names) == 1 else metric.name
        out.append(f"# HELP {family} {metric.documentation}")
        out.append(f"# TYPE {family} {metric.type}")
        for s in metric.samples:
            if s.labels:
                lbl = _label_text(tuple(s.labels.items()))
                out.append(f"{s.name}{{{lbl}}} {_fmt(s.value)}")
            else:
                out.append(f"{s.name} {_fmt(s.value)}")
    return ("\n".join(out) + "\n").encode()


def make_server(address: str, port: int, registry: CollectorRegistry) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, ctype, code = render(registry), TEXT_CONTENT_TYPE, 200
            elif path in ("/", "/health", "/healthz"):
                body, ctype, code = b"OK\n", "text/plain; charset=utf-8", 200
            else:
                body, ctype, code = b"not found\n", "text/plain; charset=utf-8", 404
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    return server


# --------------------------------------------------------------------------
# The process
# --------------------------------------------------------------------------


def _load_kube_config(kubeconfig: str | None) -> Any:
    from kubernetes import client, config

    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        config.load_kube_config(config_file=path)
    else:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    return client.CoreV1Api()


def _list(call: Any, **kwargs: Any) -> list[dict[str, Any]]:
    resp = call(_preload_content=False, _request_timeout=(5, 20), **kwargs)
    try:
        return json.loads(resp.data)["items"] or []
    finally:
        resp.release_conn()


def list_site(api: Any, node_selector: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(GPU nodes, non-terminal bound pods) from the API server (its watch cache: rv=0)."""
    nodes = _list(api.list_node, label_selector=node_selector, resource_version="0")
    pods = _list(
        api.list_pod_for_all_namespaces,
        field_selector="spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed",
        resource_version="0",
    )
    return nodes, pods


def apply_agent_patches(
    api: Any, patches: list[tuple[str, str, dict[str, str | None]]], pods: list[dict[str, Any]]
) -> None:
    """Write the agent's patches; a pod's new state counts (in `pods`) only once written,
    so what the exporter serves is what the pod says (the referee reads the pod)."""
    if not patches:
        return
    by_name = {
        ((p.get("metadata") or {}).get("namespace"), (p.get("metadata") or {}).get("name")): p
        for p in pods
    }
    for ns, name, ann in patches:
        try:
            api.patch_namespaced_pod(
                name, ns, {"metadata": {"annotations": ann}}, _request_timeout=(5, 20)
            )
        except Exception as e:  # retried next interval
            log.warning("pod %s/%s: cannot apply its power limit: %s", ns, name, e)
            continue
        pod = by_name.get((ns, name))
        if pod is not None:
            meta = pod.setdefault("metadata", {})
            current = dict(meta.get("annotations") or {})
            for k, v in ann.items():
                if v is None:
                    current.pop(k, None)
                else:
                    current[k] = v
            meta["annotations"] = current


def exporter_command(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    interval = float(args.interval)
    if interval <= 0:
        log.error("--interval must be > 0")
        return 2
    try:
        sim = SiteSimulator(
            seed=int(args.seed),
            interval=interval,
            idle_watts=float(getattr(args, "idle_watts", DEFAULT_IDLE_WATTS)),
            tdp_watts=float(getattr(args, "tdp_watts", DEFAULT_TDP_WATTS)),
            default_watts=float(getattr(args, "default_watts", DEFAULT_POD_WATTS)),
            agent=not getattr(args, "no_agent", False),
            min_limit_watts=float(getattr(args, "min_limit_watts", DEFAULT_MIN_LIMIT_WATTS)),
        )
    except ValueError as e:
        log.error("%s", e)
        return 2
    try:
        api = _load_kube_config(args.kubeconfig)
    except Exception as e:
        log.error("cannot load a kubeconfig: %s", e)
        return 1

    collector = DcgmCollector()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        server = make_server(args.address, int(args.port), registry)
    except OSError as e:
        log.error("cannot listen on %s:%s: %s", args.address, args.port, e)
        return 1
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    log.info(
        "serving DCGM metrics on http://%s:%s/metrics for nodes %r every %.2fs "
        "(idle %.0f W, TDP %.0f W, default %.0f W)",
        args.address,
        server.server_address[1],
        args.node_selector,
        interval,
        sim.idle_watts,
        sim.tdp_watts,
        sim.default_watts,
    )

    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    nodes: list[dict[str, Any]] = []
    pods: list[dict[str, Any]] = []
    failing = False
    deadline = time.monotonic()
    while not stop.is_set():
        try:
            nodes, pods = list_site(api, args.node_selector)
            apply_agent_patches(api, sim.agent_patches(nodes, pods, time.time()), pods)
            collector.last_success = time.time()
            if failing:
                log.info("listing nodes and pods works again")
            failing = False
        except Exception as e:
            # Keep the last known nodes and pods: GPUs keep drawing (and the
            # energy counters keep counting) while the API server is away.
            collector.list_errors += 1
            if not failing or collector.list_errors % 30 == 0:
                log.warning("listing nodes/pods failed (%d so far): %s", collector.list_errors, e)
            failing = True
        try:
            collector.publish(sim.step(nodes, pods, now=time.time(), mono=time.monotonic()))
        except Exception:
            log.exception("computing GPU power failed; serving the previous values")
        deadline += interval
        now = time.monotonic()
        if deadline < now:  # fell behind (a slow listing): skip, don't burst
            deadline = now
        stop.wait(deadline - now)
    server.shutdown()
    server.server_close()
    return 0
