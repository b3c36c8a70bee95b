"""Ground truth for "never over the cap": site power from the pods themselves.

The operator's own status (its forecasts, its measured gauge) is what is
under test, so it cannot also be the judge. The referee lists the site's
nodes and pods from the API server, about once a second in a background
thread, and computes the site's power the way the simulated exporter makes
it: every GPU of a Running pod (terminating pods included: they draw until
gone) at its `wattcap.io/sim-power` profile (without the exporter's noise),
every other GPU at idle, every node at its base power, all times PUE. A pod
without the annotation is counted at `missing_watts` (default TDP: the most
a GPU can draw). A pod under a GPU power limit draws min(profile, limit), the
limit the simulated hardware holds (`wattcap.io/sim-power-limit`, written by
the exporter playing the node agent), not the one the operator asked for.

    with Referee(kubeconfig, pue=1.0, node_base_w=500, gpu_idle_w=70) as ref:
        ...
    assert ref.peak_w() <= cap

No timing enters pass/fail: tests assert on the samples taken, and read
`max_gap_s` only to report the rate reached.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

from kubernetes import client, config

from wattcap.sim.exporter import (
    DEFAULT_TDP_WATTS,
    POWER_ANNOTATION,
    node_gpu_capacity,
    parse_profile,
    pod_gpu_request,
    pod_start_time,
    profile_watts,
)
from wattcap.sim.throttle import enforced_watts


@dataclass(frozen=True)
class Sample:
    t: float  # wall time, s
    site_w: float
    busy_gpus: int
    running_pods: int


def site_watts(
    nodes: list[dict],
    pods: list[dict],
    now: float,
    *,
    pue: float,
    node_base_w: float,
    gpu_idle_w: float,
    gpu_tdp_w: float = DEFAULT_TDP_WATTS,
    missing_watts: float | None = None,
    node_label: tuple[str, str] | None = ("type", "kwok"),
) -> Sample:
    """Site power from API objects (as dicts): pure, so it is unit-testable."""
    gpus: dict[str, int] = {}
    for n in nodes:
        meta = n.get("metadata") or {}
        labels = meta.get("labels") or {}
        if node_label is None or labels.get(node_label[0]) == node_label[1]:
            gpus[meta["name"]] = node_gpu_capacity(n)
    missing = gpu_tdp_w if missing_watts is None else missing_watts
    busy, running, above_idle = 0, 0, 0.0
    for p in pods:
        if (p.get("spec") or {}).get("nodeName") not in gpus:
            continue
        if (p.get("status") or {}).get("phase") != "Running":
            continue
        count, _ = pod_gpu_request(p)
        if count <= 0:
            continue
        ann = (p.get("metadata") or {}).get("annotations") or {}
        raw = ann.get(POWER_ANNOTATION)
        start = pod_start_time(p)
        profile = parse_profile(raw, missing)
        w = profile_watts(
            profile,
            now - start if start is not None else 0.0,
            idle_watts=gpu_idle_w,
            tdp_watts=gpu_tdp_w,
        )
        limit = enforced_watts(ann)
        if limit is not None:
            w = min(w, limit)
        busy += count
        running += 1
        above_idle += count * (w - gpu_idle_w)
    idle = len(gpus) * node_base_w + sum(gpus.values()) * gpu_idle_w
    return Sample(now, pue * (idle + above_idle), busy, running)


class Referee:
    """Samples `site_watts` in a background thread until stopped."""

    def __init__(
        self,
        kubeconfig: str,
        *,
        pue: float,
        node_base_w: float,
        gpu_idle_w: float,
        gpu_tdp_w: float = DEFAULT_TDP_WATTS,
        missing_watts: float | None = None,
        every_s: float = 0.5,
    ) -> None:
        self.kw = dict(
            pue=pue,
            node_base_w=node_base_w,
            gpu_idle_w=gpu_idle_w,
            gpu_tdp_w=gpu_tdp_w,
            missing_watts=missing_watts,
        )
        self.every_s = every_s
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        api = config.new_client_from_config(config_file=kubeconfig)
        self._core = client.CoreV1Api(api)
        self._thread = threading.Thread(target=self._run, name="referee", daemon=True)

    def sample(self) -> Sample:
        """One sample now (also what the thread takes)."""
        api = self._core.api_client
        # a bounded wait: a restarting API server (the chaos suite) must cost
        # a few samples, not stall the referee
        nodes = api.sanitize_for_serialization(self._core.list_node(_request_timeout=5).items)
        pods = api.sanitize_for_serialization(
            self._core.list_pod_for_all_namespaces(_request_timeout=5).items
        )
        return site_watts(nodes, pods, time.time(), **self.kw)  # type: ignore[arg-type]

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                s = self.sample()
                with self._lock:
                    self.samples.append(s)
            except Exception as e:
                self.errors.append(repr(e))
            self._stop.wait(max(0.0, self.every_s - (time.monotonic() - t0)))

    def start(self) -> Referee:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def __enter__(self) -> Referee:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def taken(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)

    def count(self) -> int:
        with self._lock:
            return len(self.samples)

    def since(self, t: float) -> list[Sample]:
        return [s for s in self.taken() if s.t >= t]

    def peak_w(self, since: float = 0.0) -> float:
        return max((s.site_w for s in self.since(since)), default=0.0)

    def seconds_over(self, cap_w: float) -> float:
        """Time the samples spent over `cap_w`: each over-cap sample counts
        until the next sample (a step function of the samples)."""
        s = self.taken()
        return sum(b.t - a.t for a, b in itertools.pairwise(s) if a.site_w > cap_w)

    def max_gap_s(self) -> float:
        s = self.taken()
        return max((b.t - a.t for a, b in itertools.pairwise(s)), default=float("inf"))

    def wait_samples(self, n: int, timeout_s: float = 120.0) -> None:
        """Wait until `n` more samples are taken (a count, not a duration)."""
        goal = self.count() + n
        end = time.monotonic() + timeout_s
        while self.count() < goal:
            if time.monotonic() > end:
                raise AssertionError(f"the referee took no {n} samples in {timeout_s:.0f}s")
            time.sleep(0.1)
