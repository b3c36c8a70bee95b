"""The simulated exporter playing the node agent on kwok: a limited pod's GPUs draw
min(natural, limit), the limit in force is reported as DCGM_FI_DEV_ENFORCED_POWER_LIMIT,
a throttled pod finishes later by powerlimit.slowdown, and the `--no-agent` / node
annotation switch (the fake for a dead agent) applies and reports nothing."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.core import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from test_exporter import T0, node, pod

from wattcap.jobs import ANN_GPU_LIMIT
from wattcap.powerlimit import slowdown
from wattcap.sim.exporter import LIMIT_METRIC, DcgmCollector, SiteSimulator, render
from wattcap.sim.throttle import (
    AGENT_DOWN_ANNOTATION,
    DURATION_ANNOTATION,
    ENFORCED_ANNOTATION,
    finish_time,
    format_rfc3339,
    parse_go_duration,
    physics_patch,
)


def limited(name: str, asked: int | None, duration: str = "100s", **ann: str) -> dict[str, Any]:
    p = pod(name, "n0", 8, profile={"watts": 600})
    p["metadata"]["annotations"][DURATION_ANNOTATION] = duration
    if asked is not None:
        p["metadata"]["annotations"][ANN_GPU_LIMIT] = str(asked)
    p["metadata"]["annotations"].update(ann)
    return p


def apply(p: dict[str, Any], patch: dict[str, str | None]) -> None:
    ann = p["metadata"]["annotations"]
    for k, v in patch.items():
        if v is None:
            ann.pop(k, None)
        else:
            ann[k] = v


def limits_served(sim: SiteSimulator, nodes: list, pods: list, t: float) -> dict[str, float]:
    c = DcgmCollector()
    c.publish(sim.step(nodes, pods, now=t))
    reg = CollectorRegistry(auto_describe=False)
    reg.register(c)
    out = {}
    for fam in text_string_to_metric_families(render(reg).decode()):
        if fam.name == LIMIT_METRIC:
            for s in fam.samples:
                out[s.labels["gpu"]] = s.value
    return out


def test_go_durations_and_finish_times() -> None:
    assert parse_go_duration("90s") == 90 and parse_go_duration("1m30s") == 90
    assert parse_go_duration("1.5h") == 5400 and parse_go_duration("250ms") == 0.25
    assert parse_go_duration("ten") is None and parse_go_duration("5") is None
    assert finish_time("30s", T0) == (T0 + 30, False)
    at, absolute = finish_time(format_rfc3339(T0 + 12.5), None)
    assert absolute and at == pytest.approx(T0 + 12.5)


def test_a_limited_pod_draws_its_limit_reports_it_and_finishes_later() -> None:
    sim = SiteSimulator(tdp_watts=700.0)
    nodes, p = [node("n0")], limited("a", 450)
    t = T0 + 20  # 80 s of its 100 s left
    ((ns, name, patch),) = sim.agent_patches(nodes, [p], t)
    assert (ns, name) == ("ml", "a") and patch[ENFORCED_ANNOTATION] == "450"
    end, absolute = finish_time(patch[DURATION_ANNOTATION], None)
    assert absolute and end == pytest.approx(t + 80 * slowdown(600, 450), abs=1e-3)
    apply(p, patch)
    assert sim.agent_patches(nodes, [p], t + 1) == []  # in force: nothing more to write
    samples = sim.step(nodes, [p], now=t + 1)
    assert all(s.watts == 450 for s in samples)
    assert limits_served(sim, nodes, [p], t + 2) == {str(i): 450.0 for i in range(8)}
    # released: it speeds up again, what is left at full speed
    del p["metadata"]["annotations"][ANN_GPU_LIMIT]
    ((_, _, patch2),) = sim.agent_patches(nodes, [p], t + 10)
    assert patch2[ENFORCED_ANNOTATION] is None
    left = (end - (t + 10)) / slowdown(600, 450)
    end2, _ = finish_time(patch2[DURATION_ANNOTATION], None)
    assert end2 == pytest.approx(t + 10 + left, abs=1e-3)
    assert end2 > T0 + 100, "it lost time while throttled"


def test_a_limit_above_the_natural_draw_changes_nothing_but_the_record() -> None:
    sim = SiteSimulator(tdp_watts=700.0)
    p = limited("a", 650)
    ((_, _, patch),) = sim.agent_patches([node("n0")], [p], T0 + 20)
    end, _ = finish_time(patch[DURATION_ANNOTATION], None)
    assert end == pytest.approx(T0 + 100, abs=1e-3)


def test_the_agent_clamps_to_the_gpus_minimum() -> None:
    sim = SiteSimulator(tdp_watts=700.0, min_limit_watts=200.0)
    ((_, _, patch),) = sim.agent_patches([node("n0")], [limited("a", 120)], T0)
    assert patch[ENFORCED_ANNOTATION] == "200"  # the operator sees 200 > 120: unconfirmed


def test_a_dead_agent_applies_and_reports_nothing_and_its_limits_are_lost() -> None:
    """The fake for an agent that died: the node annotation (or --no-agent)."""
    down = node("n0")
    down["metadata"]["annotations"] = {AGENT_DOWN_ANNOTATION: "true"}
    sim = SiteSimulator(tdp_watts=700.0)
    p = limited("a", 450, **{ENFORCED_ANNOTATION: "450"}, duration=format_rfc3339(T0 + 120))
    ((_, _, patch),) = sim.agent_patches([down], [p], T0 + 20)
    assert patch[ENFORCED_ANNOTATION] is None  # back at the default: natural draw
    apply(p, patch)
    assert all(s.watts == 600 for s in sim.step([down], [p], now=T0 + 21))
    assert limits_served(sim, [down], [p], T0 + 22) == {}
    off = SiteSimulator(tdp_watts=700.0, agent=False)
    assert limits_served(off, [node("n0")], [limited("b", None)], T0) == {}
    assert (
        off.agent_patches([node("n0")], [limited("b", 450)], T0)[0][2].get(
            ENFORCED_ANNOTATION, "unset"
        )
        == "unset"
    )  # nothing applied; its finish time only pinned


def test_an_unlimited_gpu_reports_the_default_limit() -> None:
    sim = SiteSimulator(tdp_watts=700.0)
    served = limits_served(sim, [node("n0", gpus=2)], [], T0)
    assert served == {"0": 700.0, "1": 700.0}


def test_a_pod_the_operator_limits_has_its_go_duration_pinned() -> None:
    """kwok restarts a Go duration at every update of the pod, the operator's included."""
    p = limited("a", 450)
    patch = physics_patch(p["metadata"]["annotations"], T0, 600.0, T0 + 5, False)
    assert patch is not None and set(patch) == {DURATION_ANNOTATION}
    assert finish_time(patch[DURATION_ANNOTATION], None)[0] == pytest.approx(T0 + 100, abs=1e-3)
    assert physics_patch({DURATION_ANNOTATION: "100s"}, T0, 600.0, T0 + 5, True) is None


def test_the_referee_counts_a_limited_pod_at_its_limit_in_force() -> None:
    """Ground truth as the exporter makes it: min(profile, the limit in force on the pod),
    the one the simulated hardware holds, not the one the operator asked for."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
    from referee import site_watts

    kw: dict[str, Any] = dict(pue=1.0, node_base_w=0.0, gpu_idle_w=70.0, gpu_tdp_w=700.0)
    held = limited("a", 450, **{ENFORCED_ANNOTATION: "450"})
    asked_only = limited("b", 450)
    n = [node("n0", gpus=16)]
    n[0]["metadata"]["labels"] = {"type": "kwok"}
    s = site_watts(n, [held, asked_only], T0 + 30, **kw)
    assert s.site_w == pytest.approx(16 * 70 + 8 * (450 - 70) + 8 * (600 - 70))
