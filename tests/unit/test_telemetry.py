"""Telemetry degrades per node: what one node (or a foreign series) reports never
disables measurement of the rest of the site."""

from __future__ import annotations

from typing import Any

from test_controller import NOW, job, mem, node, pod_of, site_policy, tj

from wattcap.controller import SiteState, cycle
from wattcap.telemetry import STALE_AFTER_S, interpret

POL = site_policy(100_000)  # PUE 1, no node base, idle 100 W, TDP 700 W
SITE = {"a": 2, "b": 2}


def series(host: str, gpu: str, watts: float, ts: float = NOW, **labels: str) -> dict[str, Any]:
    return {
        "metric": {"__name__": "DCGM_FI_DEV_POWER_USAGE", "Hostname": host, "gpu": gpu, **labels},
        "value": [ts, str(watts)],
    }


def stamps(gpu_series: list[dict[str, Any]], ages: dict[tuple[str, str], float]) -> list:
    """What `timestamp(DCGM_FI_DEV_POWER_USAGE)` returns: each sample's own time."""
    out = []
    for s in gpu_series:
        labels = {k: v for k, v in s["metric"].items() if k != "__name__"}
        age = ages.get((labels["Hostname"], labels["gpu"]), 0.0)
        out.append({"metric": labels, "value": [NOW, str(NOW - age)]})
    return out


def whole_site() -> list[dict[str, Any]]:
    return [series(h, g, 400.0) for h in SITE for g in ("0", "1")]


def test_a_foreign_implausible_series_is_ignored() -> None:
    r = interpret([*whole_site(), series("elsewhere", "0", 1000.0 * 9)], None, POL, SITE, NOW)
    assert r.ok and r.site_watts == 4 * 400.0 and not r.unmeasured


def test_a_duplicate_scrape_is_counted_once() -> None:
    dup = [series(h, g, 400.0, instance="second") for h in SITE for g in ("0", "1")]
    r = interpret([*whole_site(), *dup], None, POL, SITE, NOW)
    assert r.ok and r.site_watts == 4 * 400.0


def test_staleness_is_judged_on_each_samples_own_timestamp() -> None:
    gpu = whole_site()
    old = stamps(gpu, {("b", "1"): STALE_AFTER_S + 5})
    r = interpret(gpu, None, POL, SITE, NOW, old)
    assert r.ok and set(r.unmeasured) == {"b"} and "stale" in r.unmeasured["b"]
    assert r.node_gpu_watts == {"a": 800.0}


def test_an_implausible_node_is_unmeasured_and_the_rest_still_measured() -> None:
    gpu = [series("a", "0", 400.0), series("a", "1", 400.0), series("b", "0", 99_999.0)]
    r = interpret(gpu, None, POL, SITE, NOW)
    assert r.ok and set(r.unmeasured) == {"b"} and r.node_gpu_watts == {"a": 800.0}
    none = interpret([series("b", "0", 99_999.0)], None, POL, {"b": 2}, NOW)
    assert not none.ok  # no node measured: no measurement at all


def test_an_unmeasured_node_is_planned_at_forecast_and_the_rest_stay_measured() -> None:
    """Node b goes quiet: its job is planned at its admission forecast (700 W per
    GPU here), node a's measured 300 W per GPU still counts, and a measured
    overdraw on a alone still shows in the site figure."""
    pol = site_policy(100_000)
    tjs = [tj("on-a"), tj("on-b")]
    jobs = {("ml", "on-a"): job("on-a", ["a"]), ("ml", "on-b"): job("on-b", ["b"])}
    pods = [pod_of("on-a", "on-a-0", "a"), pod_of("on-b", "on-b-0", "b")]
    gpu = [series("a", str(g), 300.0, pod="on-a-0", namespace="ml") for g in range(8)]
    reading = interpret(gpu, None, pol, {"a": 8, "b": 8}, NOW)
    assert reading.ok and set(reading.unmeasured) == {"b"}
    plan = cycle(SiteState(pol, [node("a"), node("b")], pods, tjs, jobs, reading), mem(), NOW)
    assert plan.decision is not None
    assert plan.decision.measured_site_watts == 8 * 300.0 + 8 * 700.0
    assert plan.tj_status[("ml", "on-a")]["measuredWatts"] == 2400.0
    assert "b" in plan.policy_status["conditions"][0]["message"]
