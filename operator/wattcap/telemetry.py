"""Measured power from Prometheus (prometheus-api-client): the site now, and per pod.

The operator trusts a reading only if it is whole and plausible. A slow,
unreachable or nonsensical Prometheus yields `Reading(ok=False)`, and the
cycle falls back to the conservative model: it never admits on numbers it
cannot verify, and never preempts because a meter went quiet.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from .model import PowerPolicy

GPU_POWER_METRIC = "DCGM_FI_DEV_POWER_USAGE"
STALE_AFTER_S = 60.0  # older samples mean the exporter stopped: not a measurement of now


@dataclass(slots=True)
class Reading:
    """One read of measured power; `ok=False` says why in `error`."""

    ok: bool
    site_watts: float | None = None
    gpu_watts_by_pod: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    error: str | None = None


def interpret(
    gpu_series: list[dict[str, Any]],
    site_series: list[dict[str, Any]] | None,
    policy: PowerPolicy,
    site_nodes: Iterable[str],
    site_gpus: int,
    now_s: float,
) -> Reading:
    """Turn raw query results into a Reading, refusing what cannot be true.

    Without a site query, site power is the FORMAT.md model on measured GPU
    power, and every GPU of the site must be reported.
    """
    nodes = set(site_nodes)
    ceiling = policy.gpu_tdp_watts * 1.5  # DCGM reads a little over TDP in spikes; not 2x
    gpu_sum = 0.0
    seen = 0
    by_pod: dict[tuple[str, str], list[float]] = {}
    for s in gpu_series:
        labels = s.get("metric") or {}
        try:
            ts, raw = s["value"]
            value = float(raw)
            ts = float(ts)
        except (KeyError, TypeError, ValueError):
            return Reading(False, error=f"unparseable sample {s!r:.120}")
        if not math.isfinite(value) or value < 0 or value > ceiling:
            return Reading(
                False,
                error=f"implausible GPU power {value!r} W on "
                f"{labels.get('Hostname', '?')}/{labels.get('gpu', '?')}",
            )
        if now_s - ts > STALE_AFTER_S:
            return Reading(False, error=f"stale GPU power ({now_s - ts:.0f}s old)")
        if labels.get("Hostname") not in nodes:
            continue
        seen += 1
        gpu_sum += value
        pod, ns = labels.get("pod"), labels.get("namespace")
        if pod and ns:
            by_pod.setdefault((ns, pod), []).append(value)
    if seen < site_gpus:
        # a partial scrape (exporter starting, a node not reporting) is no
        # measurement of the site: filling the gaps at TDP would read as an
        # excursion and shed work for a monitoring gap
        return Reading(False, error=f"GPU power reported for {seen} of the site's {site_gpus} GPUs")
    if site_series is not None:
        if len(site_series) != 1:
            return Reading(
                False,
                error=f"site power query returned {len(site_series)} series, expected exactly 1",
            )
        try:
            site = float(site_series[0]["value"][1])
        except (KeyError, TypeError, ValueError, IndexError):
            return Reading(False, error="site power query returned no number")
        floor = policy.idle_site_watts(len(nodes), site_gpus) * 0.5
        if not math.isfinite(site) or site < floor:
            return Reading(
                False,
                error=f"implausible site power {site!r} W (idle alone is about {floor * 2:.0f} W)",
            )
    else:
        site = policy.pue * (len(nodes) * policy.node_base_watts + gpu_sum)
    return Reading(True, site, by_pod)


class Telemetry:
    """Reads Prometheus; one instance per policy URL, reused across cycles."""

    def __init__(self, url: str, timeout_s: float = 3.0) -> None:
        self.url = url
        self.prom = PrometheusConnect(
            url, disable_ssl=True, timeout=timeout_s, retry=Retry(total=0)
        )

    def read(self, policy: PowerPolicy, site_nodes: list[str], site_gpus: int) -> Reading:
        try:
            gpu = self.prom.custom_query(GPU_POWER_METRIC)
            site = (
                self.prom.custom_query(policy.site_power_query) if policy.site_power_query else None
            )
        except Exception as err:  # the client raises many types; all mean "no reading"
            return Reading(
                False, error=f"Prometheus at {self.url}: {type(err).__name__}: {str(err)[:200]}"
            )
        if not isinstance(gpu, list) or (site is not None and not isinstance(site, list)):
            return Reading(False, error="Prometheus returned a non-vector result")
        return interpret(gpu, site, policy, site_nodes, site_gpus, time.time())
