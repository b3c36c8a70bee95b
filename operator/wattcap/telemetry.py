"""Measured power from Prometheus (prometheus-api-client): the site now, and per pod.

The operator trusts a node's reading only if it is whole, fresh and
plausible; a node that fails is planned at forecast while the rest of the
site stays measured. A slow, unreachable or nonsensical Prometheus (or no
node measured at all) yields `Reading(ok=False)`, and the cycle falls back to
the conservative model: it never admits on numbers it cannot verify, and
never preempts because a meter went quiet. Every query has a timeout.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .model import PowerPolicy
from .promaccess import PromAccess

GPU_POWER_METRIC = "DCGM_FI_DEV_POWER_USAGE"
# the GPU power limit in force, as the node agent reports it (enforcement.py)
ENFORCED_LIMIT_METRIC = "DCGM_FI_DEV_ENFORCED_POWER_LIMIT"
STALE_AFTER_S = 60.0  # older samples mean the exporter stopped: not a measurement of now


@dataclass(slots=True)
class Reading:
    """One read of measured power; `ok=False` says why in `error`.

    `unmeasured` names the site's nodes without fresh, plausible data for
    every GPU, and why; `node_gpu_watts` sums the GPUs of each measured node.
    Without a site meter (`metered=False`), `site_watts` covers every node's
    base power and the measured nodes' GPUs only: the controller adds the
    unmeasured nodes' GPUs at what it plans for them.
    """

    ok: bool
    site_watts: float | None = None
    gpu_watts_by_pod: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    error: str | None = None
    unmeasured: dict[str, str] = field(default_factory=dict)
    node_gpu_watts: dict[str, float] = field(default_factory=dict)
    metered: bool = False
    # why there is no reading, as the PowerPolicy's Measured condition reason
    reason: str = "PrometheusUnavailable"
    # (namespace, pod) -> the fresh enforced power limit of each of its GPUs (W); read
    # only with spec.powerLimits enabled
    enforced_by_pod: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    # the site's nodes that report a fresh enforced limit for every GPU: a node agent runs
    enforced_nodes: frozenset[str] = frozenset()
    # when those were sampled (the oldest of the GPUs' newest samples), per pod and per
    # node: the grace of a limit that stops being confirmed counts from there
    enforced_pod_at: dict[tuple[str, str], float] = field(default_factory=dict)
    enforced_node_at: dict[str, float] = field(default_factory=dict)


def _key(labels: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in labels.items() if k != "__name__"))


def _sample_times(raw: list[dict[str, Any]] | None) -> dict[tuple[tuple[str, str], ...], float]:
    """Each series' own sample time, from `timestamp(<metric>)`."""
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for s in raw or []:
        try:
            out[_key(s.get("metric") or {})] = float(s["value"][1])
        except (KeyError, TypeError, ValueError, IndexError):
            continue
    return out


def interpret(
    gpu_series: list[dict[str, Any]],
    site_series: list[dict[str, Any]] | None,
    policy: PowerPolicy,
    site_nodes: Mapping[str, int],
    now_s: float,
    sample_times: list[dict[str, Any]] | None = None,
) -> Reading:
    """Turn raw query results into a Reading, refusing what cannot be true.

    In this order, so one bad series spoils at most its own node: keep only
    the site's nodes (`site_nodes`: name -> GPUs); keep one sample per (node,
    GPU), the newest (a duplicated scrape target must not double the
    reading); then judge each sample's plausibility and age, the age from
    the sample's own timestamp (`sample_times`, the result of
    `timestamp(<metric>)`; the query's evaluation time otherwise, which
    Prometheus's lookback makes up to 5 minutes late). A node is measured
    only if every one of its GPUs passed.
    """
    ceiling = policy.gpu_tdp_watts * 1.5  # DCGM reads a little over TDP in spikes; not 2x
    best, bad = _newest_per_gpu(gpu_series, site_nodes, sample_times)
    good: dict[str, list[tuple[float, Mapping[str, Any]]]] = {}
    for (host, gpu), (ts, value, labels) in best.items():
        if not math.isfinite(value) or value < 0 or value > ceiling:
            bad.setdefault(host, f"implausible GPU power {value!r} W on GPU {gpu}")
        elif now_s - ts > STALE_AFTER_S:
            bad.setdefault(host, f"stale GPU power ({now_s - ts:.0f}s old) on GPU {gpu}")
        else:
            good.setdefault(host, []).append((value, labels))
    unmeasured: dict[str, str] = {}
    node_watts: dict[str, float] = {}
    by_pod: dict[tuple[str, str], list[float]] = {}
    for host, gpus in site_nodes.items():
        seen = good.get(host, [])
        if host in bad:
            unmeasured[host] = bad[host]
        elif len(seen) < gpus:
            unmeasured[host] = f"GPU power reported for {len(seen)} of its {gpus} GPUs"
        else:
            node_watts[host] = sum(v for v, _ in seen)
            for value, labels in seen:
                pod, ns = labels.get("pod"), labels.get("namespace")
                if pod and ns:
                    by_pod.setdefault((ns, pod), []).append(value)
    site_gpus = sum(site_nodes.values())
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
        floor = policy.idle_site_watts(len(site_nodes), site_gpus) * 0.5
        if not math.isfinite(site) or site < floor:
            return Reading(
                False,
                error=f"implausible site power {site!r} W (idle alone is about {floor * 2:.0f} W)",
            )
        return Reading(True, site, by_pod, None, unmeasured, node_watts, metered=True)
    if not node_watts and site_nodes:
        # nothing measured at all: that is no measurement of the site, and
        # filling it all in from the plan would only repeat the plan
        why = "; ".join(f"{n}: {w}" for n, w in sorted(unmeasured.items())[:3])
        return Reading(False, error=f"no node of the site has fresh GPU power ({why})")
    site = policy.pue * (len(site_nodes) * policy.node_base_watts + sum(node_watts.values()))
    return Reading(True, site, by_pod, None, unmeasured, node_watts)


def _newest_per_gpu(
    series: list[dict[str, Any]],
    site_nodes: Mapping[str, Any],
    sample_times: list[dict[str, Any]] | None,
) -> tuple[dict[tuple[str, str], tuple[float, float, Mapping[str, Any]]], dict[str, str]]:
    """The newest sample of each (node, GPU) of the site, as (sample time, value, labels),
    so a duplicated scrape counts once; and per node the first sample that would not
    parse. Series of nodes outside the site are dropped first: a foreign series must not
    make a site node look broken."""
    times = _sample_times(sample_times)
    best: dict[tuple[str, str], tuple[float, float, Mapping[str, Any]]] = {}
    bad: dict[str, str] = {}
    for s in series:
        labels = s.get("metric") or {}
        host = labels.get("Hostname")
        if host not in site_nodes:
            continue
        try:
            ts, raw = s["value"]
            value, ts = float(raw), float(ts)
        except (KeyError, TypeError, ValueError):
            bad[host] = f"unparseable sample {s!r:.80}"
            continue
        ts = times.get(_key(labels), ts)
        gpu = str(labels.get("gpu", labels.get("UUID", "")))
        prev = best.get((host, gpu))
        if prev is None or (ts, value) > prev[:2]:
            best[(host, gpu)] = (ts, value, labels)
    return best, bad


class Enforced(NamedTuple):
    """The enforced GPU power limits a reading shows (see `Reading`)."""

    by_pod: dict[tuple[str, str], list[float]]
    nodes: frozenset[str]
    pod_at: dict[tuple[str, str], float]
    node_at: dict[str, float]


def enforced_limits(
    series: list[dict[str, Any]],
    site_nodes: Mapping[str, int],
    now_s: float,
    sample_times: list[dict[str, Any]] | None = None,
) -> Enforced:
    """The enforced GPU power limits per (namespace, pod), and the nodes that report one
    for every GPU, each with when it was sampled (the oldest of its GPUs' samples): the
    newest sample of each (node, GPU) of the site, fresh and plausible only; anything
    else confirms nothing."""
    best, _ = _newest_per_gpu(series, site_nodes, sample_times)
    out: dict[tuple[str, str], list[float]] = {}
    pod_at: dict[tuple[str, str], float] = {}
    fresh: dict[str, int] = {}
    node_at: dict[str, float] = {}
    for ts, value, labels in best.values():
        if not math.isfinite(value) or value < 0 or now_s - ts > STALE_AFTER_S:
            continue
        host = str(labels.get("Hostname"))
        fresh[host] = fresh.get(host, 0) + 1
        node_at[host] = min(ts, node_at.get(host, ts))
        pod, ns = labels.get("pod"), labels.get("namespace")
        if pod and ns:
            key = (str(ns), str(pod))
            out.setdefault(key, []).append(value)
            pod_at[key] = min(ts, pod_at.get(key, ts))
    nodes = frozenset(h for h, n in fresh.items() if n >= site_nodes.get(h, 0))
    return Enforced(out, nodes, pod_at, {h: node_at[h] for h in nodes})


URL_REFUSED = "PrometheusURLRefused"


class Telemetry:
    """Reads Prometheus; one instance per policy URL, reused across cycles.

    The URL is checked against the operator's `PromAccess` once, here: a
    refused one makes no client at all, so nothing is ever fetched from it,
    and every read says why (reason PrometheusURLRefused, naming the field).
    """

    def __init__(self, url: str, timeout_s: float = 3.0, access: PromAccess | None = None) -> None:
        self.url = url
        self.access = access or PromAccess()
        self.refusal = self.access.refusal(url)
        self.prom = None if self.refusal else self.access.connect(url, timeout_s)

    def read(self, policy: PowerPolicy, site_nodes: Mapping[str, int]) -> Reading:
        """Query and interpret; never raises (every failure is a Reading with ok=False)."""
        if self.prom is None:
            return Reading(False, error=self.refusal, reason=URL_REFUSED)
        self.access.authorize(self.prom)
        try:
            gpu = self.prom.custom_query(GPU_POWER_METRIC)
            stamps = self.prom.custom_query(f"timestamp({GPU_POWER_METRIC})")
            site = (
                self.prom.custom_query(policy.site_power_query) if policy.site_power_query else None
            )
        except Exception as err:  # the client raises many types; all mean "no reading"
            return Reading(
                False, error=f"Prometheus at {self.url}: {type(err).__name__}: {str(err)[:200]}"
            )
        if not isinstance(gpu, list) or (site is not None and not isinstance(site, list)):
            return Reading(False, error="Prometheus returned a non-vector result")
        stamps = stamps if isinstance(stamps, list) else None
        now = time.time()
        reading = interpret(gpu, site, policy, site_nodes, now, stamps)
        if reading.ok and policy.power_limits.enabled:
            e = self._enforced(site_nodes, now)
            reading.enforced_by_pod, reading.enforced_nodes = e.by_pod, e.nodes
            reading.enforced_pod_at, reading.enforced_node_at = e.pod_at, e.node_at
        return reading

    def _enforced(self, site_nodes: Mapping[str, int], now: float) -> Enforced:
        """Enforced limits per pod; none (so nothing confirmed) if the query fails."""
        assert self.prom is not None
        try:
            raw = self.prom.custom_query(ENFORCED_LIMIT_METRIC)
            stamps = self.prom.custom_query(f"timestamp({ENFORCED_LIMIT_METRIC})")
        except Exception:  # no confirmation this cycle; power is still measured
            return Enforced({}, frozenset(), {}, {})
        if not isinstance(raw, list):
            return Enforced({}, frozenset(), {}, {})
        return enforced_limits(raw, site_nodes, now, stamps if isinstance(stamps, list) else None)
