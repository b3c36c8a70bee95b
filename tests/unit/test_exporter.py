"""The simulated DCGM exporter's pure parts: profile, noise, GPU assignment, samples, exposition."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import threading
import time
import urllib.request
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.core import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from wattcap.sim.exporter import (
    ENERGY_METRIC,
    LABELS,
    POWER_ANNOTATION,
    POWER_METRIC,
    Assignment,
    DcgmCollector,
    GpuDemand,
    PowerProfile,
    SiteSimulator,
    assign_gpus,
    gpu_uuid,
    make_server,
    model_name,
    noise_z,
    parse_profile,
    pod_gpu_request,
    profile_watts,
    render,
)

IDLE, TDP = 70.0, 700.0
T0 = 1_800_000_000.0  # a fixed wall clock: 2027-01-15


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def node(name: str, gpus: int = 8, product: str = "NVIDIA-H100-80GB-HBM3") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"type": "kwok", "nvidia.com/gpu.product": product}},
        "status": {"capacity": {"nvidia.com/gpu": str(gpus)}},
    }


def pod(
    name: str,
    node_name: str | None,
    gpus: int,
    *,
    phase: str = "Running",
    start: float | None = T0,
    profile: dict[str, Any] | str | None = None,
    created: float = T0,
    ns: str = "ml",
) -> dict[str, Any]:
    ann = {}
    if profile is not None:
        ann[POWER_ANNOTATION] = profile if isinstance(profile, str) else json.dumps(profile)
    status: dict[str, Any] = {"phase": phase}
    if start is not None:
        status["startTime"] = iso(start)
    return {
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": f"uid-{ns}-{name}",
            "creationTimestamp": iso(created),
            "annotations": ann,
        },
        "spec": {
            "nodeName": node_name,
            "containers": [
                {"name": "sidecar", "image": "x"},
                {"name": "train", "image": "x", "resources": {"limits": {"nvidia.com/gpu": gpus}}},
            ],
        },
        "status": status,
    }


# ---------------------------------------------------------------- profile


def test_parse_profile_full_and_defaults() -> None:
    p = parse_profile(
        '{"watts": 450, "noise": 0.03, "rampSeconds": 20, "checkpointEverySeconds": 60,'
        ' "checkpointSeconds": 5, "checkpointWatts": 150}'
    )
    assert p == PowerProfile(450, 0.03, 20, 60, 5, 150)
    assert parse_profile(None, default_watts=400) == PowerProfile(watts=400)
    assert parse_profile("  ", default_watts=321) == PowerProfile(watts=321)
    assert parse_profile('{"watts": 500}') == PowerProfile(watts=500)


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1, 2]",
        "{}",
        '{"watts": "450"}',
        '{"watts": true}',
        '{"watts": -1}',
        '{"watts": 450, "ramp_seconds": 10}',
        '{"watts": 450, "noise": NaN}',
    ],
)
def test_parse_profile_rejects(raw: str) -> None:
    with pytest.raises(ValueError, match="sim-power"):
        parse_profile(raw)


def test_ramp_is_linear_from_idle_to_watts() -> None:
    p = PowerProfile(watts=450, ramp_seconds=20)
    assert profile_watts(p, -5) == IDLE  # clock skew: before the start
    assert profile_watts(p, 0) == IDLE
    assert profile_watts(p, 10) == pytest.approx(IDLE + (450 - IDLE) / 2)
    assert profile_watts(p, 20) == 450
    assert profile_watts(p, 1000) == 450
    ramp = [profile_watts(p, t / 10) for t in range(0, 201)]
    assert all(a <= b for a, b in itertools.pairwise(ramp))


def test_idle_before_the_work_and_after_it() -> None:
    p = parse_profile('{"watts": 450, "noise": 0.1, "idleSeconds": 10, "workSeconds": 30}')
    assert (p.idle_seconds, p.work_seconds) == (10, 30)
    assert profile_watts(p, 0, z=2.0) == IDLE  # bound, work not started: no noise either
    assert profile_watts(p, 9.9) == IDLE
    assert profile_watts(p, 10) == 450
    assert profile_watts(p, 39.9) == 450
    assert profile_watts(p, 40, z=2.0) == IDLE  # work done, pod not yet gone
    assert profile_watts(p, 1000) == IDLE
    # the ramp and checkpoints count from when the work starts
    q = PowerProfile(watts=450, ramp_seconds=20, idle_seconds=10)
    assert profile_watts(q, 20) == pytest.approx(IDLE + (450 - IDLE) / 2)
    assert profile_watts(q, 30) == 450


def test_checkpoint_dips() -> None:
    p = PowerProfile(
        watts=450, checkpoint_every_seconds=60, checkpoint_seconds=5, checkpoint_watts=150
    )
    assert profile_watts(p, 0) == 450  # no dip at the start
    assert profile_watts(p, 59.9) == 450
    assert profile_watts(p, 60) == 150
    assert profile_watts(p, 64.9) == 150
    assert profile_watts(p, 65) == 450
    assert profile_watts(p, 122) == 150
    # checkpointWatts absent: dips to idle
    q = PowerProfile(watts=450, checkpoint_every_seconds=30)
    assert profile_watts(q, 31) == IDLE
    assert profile_watts(q, 36) == 450
    # a dip during the ramp wins over the ramp
    r = PowerProfile(watts=600, ramp_seconds=100, checkpoint_every_seconds=10, checkpoint_watts=90)
    assert profile_watts(r, 11) == 90


def test_clipped_to_idle_and_tdp() -> None:
    assert profile_watts(PowerProfile(watts=900), 10) == TDP
    assert profile_watts(PowerProfile(watts=20), 10) == IDLE
    assert profile_watts(PowerProfile(watts=450, noise=0.1), 10, z=100.0) == TDP
    assert profile_watts(PowerProfile(watts=450, noise=0.5), 10, z=-100.0) == IDLE
    assert profile_watts(PowerProfile(watts=300), 10, idle_watts=50, tdp_watts=250) == 250


def test_noise_is_deterministic_and_standard_normal() -> None:
    assert noise_z(0, "pod-a", 3, 17) == noise_z(0, "pod-a", 3, 17)
    assert noise_z(0, "pod-a", 3, 17) != noise_z(1, "pod-a", 3, 17)
    assert noise_z(0, "pod-a", 3, 17) != noise_z(0, "pod-a", 4, 17)
    assert noise_z(0, "pod-a", 3, 17) != noise_z(0, "pod-a", 3, 18)
    zs = [noise_z(7, "p", g, t) for g in range(8) for t in range(2000)]
    assert statistics.fmean(zs) == pytest.approx(0.0, abs=0.03)
    assert statistics.pstdev(zs) == pytest.approx(1.0, abs=0.03)
    assert all(math.isfinite(z) for z in zs)


def test_noise_bounds_on_watts() -> None:
    p = PowerProfile(watts=450, noise=0.03)
    ws = [profile_watts(p, 100, z=noise_z(0, "p", 0, t)) for t in range(5000)]
    assert all(IDLE <= w <= TDP for w in ws)
    assert statistics.fmean(ws) == pytest.approx(450, rel=0.005)
    assert statistics.pstdev(ws) == pytest.approx(450 * 0.03, rel=0.1)
    assert max(abs(w - 450) for w in ws) < 450 * 0.03 * 6


@settings(max_examples=300, deadline=None)
@given(
    watts=st.floats(0, 2000),
    noise=st.floats(0, 2),
    ramp=st.floats(0, 600),
    every=st.floats(0, 600),
    dip=st.floats(0, 60),
    dip_w=st.none() | st.floats(0, 2000),
    elapsed=st.floats(-100, 10_000),
    z=st.floats(-10, 10),
)
def test_watts_always_within_idle_and_tdp(
    watts: float,
    noise: float,
    ramp: float,
    every: float,
    dip: float,
    dip_w: float | None,
    elapsed: float,
    z: float,
) -> None:
    p = PowerProfile(watts, noise, ramp, every, dip, dip_w)
    assert IDLE <= profile_watts(p, elapsed, z=z) <= TDP


# ---------------------------------------------------------------- assignment


def test_assignment_first_fit_and_stable() -> None:
    cap = {"n0": 8}
    a = assign_gpus({}, [GpuDemand("a", "n0", 2), GpuDemand("b", "n0", 3)], cap)
    assert a == {"a": Assignment("n0", (0, 1)), "b": Assignment("n0", (2, 3, 4))}
    # a leaves, c arrives: b keeps its GPUs, c gets the lowest free ones
    b = assign_gpus(a, [GpuDemand("b", "n0", 3), GpuDemand("c", "n0", 4)], cap)
    assert b == {"b": Assignment("n0", (2, 3, 4)), "c": Assignment("n0", (0, 1, 5, 6))}
    # order of the demands does not move existing pods
    c = assign_gpus(b, [GpuDemand("c", "n0", 4), GpuDemand("b", "n0", 3)], cap)
    assert c == b


def test_assignment_never_over_capacity() -> None:
    cap = {"n0": 8, "n1": 8}
    demands = [GpuDemand(f"p{i}", "n0", 3) for i in range(4)] + [GpuDemand("q", "n1", 9)]
    a = assign_gpus({}, demands, cap)
    assert set(a) == {"p0", "p1"}  # p2 needs 3, only 2 free; q needs more than the node
    assert sorted(i for x in a.values() for i in x.indices) == [0, 1, 2, 3, 4, 5]
    # p0 finishes: p2 fits now, p3 still waits
    b = assign_gpus(a, demands[1:], cap)
    assert set(b) == {"p1", "p2"} and b["p2"].indices == (0, 1, 2)
    # unknown node, stale index beyond a shrunk capacity
    assert assign_gpus({}, [GpuDemand("x", "gone", 1)], cap) == {}
    shrunk = assign_gpus({"p": Assignment("n0", (7,))}, [GpuDemand("p", "n0", 1)], {"n0": 4})
    assert shrunk == {"p": Assignment("n0", (0,))}


@settings(max_examples=200, deadline=None)
@given(
    rounds=st.lists(
        st.lists(st.tuples(st.integers(0, 11), st.sampled_from(["n0", "n1"]), st.integers(1, 8))),
        min_size=1,
        max_size=6,
    )
)
def test_assignment_invariants(rounds: list[list[tuple[int, str, int]]]) -> None:
    cap = {"n0": 8, "n1": 4}
    prev: dict[str, Assignment] = {}
    for demands_raw in rounds:
        seen: dict[str, GpuDemand] = {}
        for k, n, c in demands_raw:  # a pod has one node and one count for its life
            key = f"{k}-{n}-{c}"
            seen.setdefault(key, GpuDemand(key, n, c))
        demands = list(seen.values())
        cur = assign_gpus(prev, demands, cap)
        for nd, cp in cap.items():
            idx = [i for a in cur.values() if a.node == nd for i in a.indices]
            assert len(idx) == len(set(idx)) <= cp
            assert all(0 <= i < cp for i in idx)
        for key, a in cur.items():
            d = seen[key]
            assert a.node == d.node and len(a.indices) == d.count
            if key in prev:
                assert prev[key] == a  # stable for the pod's lifetime
        prev = cur


def test_pod_gpu_request() -> None:
    p = pod("a", "n0", 2)
    assert pod_gpu_request(p) == (2, "train")
    p["spec"]["containers"].append(
        {"name": "more", "resources": {"requests": {"nvidia.com/gpu": "3"}}}
    )
    assert pod_gpu_request(p) == (5, "train")
    p["spec"]["initContainers"] = [{"name": "i", "resources": {"limits": {"nvidia.com/gpu": 7}}}]
    assert pod_gpu_request(p) == (7, "train")
    assert pod_gpu_request({"spec": {"containers": [{"name": "c"}]}}) == (0, "")


# ---------------------------------------------------------------- the site


def sim(**kw: Any) -> SiteSimulator:
    return SiteSimulator(seed=0, interval=1.0, idle_watts=IDLE, tdp_watts=TDP, **kw)


def by_key(samples: list[Any]) -> dict[tuple[str, int], Any]:
    return {(s.node, s.index): s for s in samples}


def test_site_power_per_gpu() -> None:
    s = sim(default_watts=400)
    nodes = [node("n0"), node("n1", gpus=4), node("other", gpus=0)]
    pods = [
        pod("flat", "n0", 2, profile={"watts": 500}, created=T0 - 10),
        pod("ramp", "n0", 1, profile={"watts": 450, "rampSeconds": 20}, created=T0 - 5),
        pod("plain", "n1", 3),  # no annotation: default watts
        pod("pending", "n1", 1, phase="Pending", start=None, created=T0 + 1),
        pod("done", "n0", 4, phase="Succeeded"),
        pod("elsewhere", "cpu-node", 1),
        pod("unbound", None, 1, phase="Pending"),
        pod("bad", "n0", 1, profile="{oops", created=T0 + 2),
    ]
    out = by_key(s.step(nodes, pods, now=T0 + 10))
    assert len(out) == 12
    assert [out[("n0", i)].pod for i in range(8)] == ["flat", "flat", "ramp", "bad"] + [""] * 4
    assert out[("n0", 0)].watts == out[("n0", 1)].watts == 500
    assert out[("n0", 2)].watts == pytest.approx(IDLE + (450 - IDLE) / 2)
    assert out[("n0", 3)].watts == 400  # bad annotation: default
    assert all(out[("n0", i)].watts == IDLE for i in range(4, 8))
    assert [out[("n1", i)].pod for i in range(4)] == ["plain"] * 3 + ["pending"]
    assert [out[("n1", i)].watts for i in range(4)] == [400, 400, 400, IDLE]
    assert out[("n0", 0)].container == "train" and out[("n0", 0)].namespace == "ml"
    assert out[("n0", 5)].container == out[("n0", 5)].namespace == ""
    assert out[("n0", 0)].model == "NVIDIA H100 80GB HBM3"


def test_noise_deterministic_across_simulators() -> None:
    nodes = [node("n0")]
    pods = [pod("noisy", "n0", 8, profile={"watts": 450, "noise": 0.05})]
    a = [x.watts for x in sim().step(nodes, pods, now=T0 + 100)]
    b = [x.watts for x in sim().step(nodes, pods, now=T0 + 100)]
    c = [x.watts for x in sim().step(nodes, pods, now=T0 + 101)]
    assert a == b and a != c and len(set(a)) == 8


def test_energy_counter_integrates_power_and_is_monotonic() -> None:
    s = sim()
    nodes = [node("n0", gpus=2)]
    p = pod("j", "n0", 1, profile={"watts": 500, "noise": 0.1, "checkpointEverySeconds": 7})
    energies: list[list[float]] = []
    for k in range(40):
        pods = [p] if 5 <= k < 30 else []
        out = s.step(nodes, pods, now=T0 + k, mono=1000.0 + k)
        energies.append([x.energy_mj for x in out])
    for gpu in range(2):
        series = [e[gpu] for e in energies]
        assert series[0] == 0.0
        assert all(a <= b for a, b in itertools.pairwise(series))
    # the idle GPU: 70 W for 39 s = 2730 J
    assert energies[-1][1] == pytest.approx(IDLE * 39 * 1000)
    # the busy GPU drew more than idle, less than TDP
    assert IDLE * 39 * 1000 < energies[-1][0] < TDP * 39 * 1000


def test_energy_survives_node_churn_and_pod_restarts() -> None:
    s = sim()
    out1 = by_key(s.step([node("n0", 1), node("n1", 1)], [], now=T0, mono=0))
    out2 = by_key(s.step([node("n0", 1), node("n1", 1)], [], now=T0 + 2, mono=2))
    assert out2[("n0", 0)].energy_mj == pytest.approx(2 * IDLE * 1000)
    out3 = by_key(s.step([node("n0", 1)], [], now=T0 + 3, mono=3))  # n1 left
    assert set(out3) == {("n0", 0)} and out1
    assert ("n1", 0) not in s.energy_mj


def test_assignments_stable_through_site_steps() -> None:
    s = sim()
    nodes = [node("n0")]
    a = pod("a", "n0", 2, created=T0)
    b = pod("b", "n0", 2, created=T0 + 1)
    c = pod("c", "n0", 4, created=T0 + 2)
    first = by_key(s.step(nodes, [a, b, c], now=T0 + 5))
    assert [first[("n0", i)].pod for i in range(8)] == ["a"] * 2 + ["b"] * 2 + ["c"] * 4
    d = pod("d", "n0", 2, created=T0 + 3)
    # a finished; d is new; b and c keep theirs even though the list order changed
    second = by_key(s.step(nodes, [d, c, b], now=T0 + 6))
    assert [second[("n0", i)].pod for i in range(8)] == ["d"] * 2 + ["b"] * 2 + ["c"] * 4


def test_uuid_and_model_name() -> None:
    u = gpu_uuid("gpu-node-0", 3)
    assert u == gpu_uuid("gpu-node-0", 3) != gpu_uuid("gpu-node-0", 4)
    assert u.startswith("GPU-") and len(u) == 40 and u.count("-") == 5
    assert model_name(node("x")) == "NVIDIA H100 80GB HBM3"
    assert model_name({"metadata": {"labels": {}}}) == "NVIDIA GPU"


# ---------------------------------------------------------------- exposition


def test_exposition_matches_dcgm_names_types_and_labels() -> None:
    s = sim()
    collector = DcgmCollector()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    collector.publish(s.step([node("gpu-node-0")], [pod("j-0", "gpu-node-0", 2)], now=T0 + 1))
    text = render(registry).decode()
    assert f"# TYPE {POWER_METRIC} gauge" in text
    assert f"# TYPE {ENERGY_METRIC} counter" in text  # no _total, as dcgm-exporter writes it
    families = {f.name: f for f in text_string_to_metric_families(text)}
    power = families[POWER_METRIC].samples
    assert len(power) == 8
    for smp in power:
        assert tuple(smp.labels) == LABELS
        assert smp.labels["device"] == f"nvidia{smp.labels['gpu']}"
        assert smp.labels["Hostname"] == "gpu-node-0"
        assert smp.labels["modelName"] == "NVIDIA H100 80GB HBM3"
    held = [x for x in power if x.labels["pod"] == "j-0"]
    assert sorted(x.labels["gpu"] for x in held) == ["0", "1"]
    assert {x.labels["namespace"] for x in held} == {"ml"}
    assert {x.labels["container"] for x in held} == {"train"}
    idle = [x for x in power if x.labels["pod"] == ""]
    assert len(idle) == 6 and {x.value for x in idle} == {IDLE}
    assert {x.labels["namespace"] for x in idle} == {x.labels["container"] for x in idle} == {""}
    assert len(families[ENERGY_METRIC].samples) == 8


def test_http_server_serves_metrics() -> None:
    collector = DcgmCollector()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    collector.publish(sim().step([node("n0", 1)], [], now=T0))
    server = make_server("127.0.0.1", 0, registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            body = r.read().decode()
        assert f'{POWER_METRIC}{{gpu="0",' in body
        assert "wattcap_sim_exporter_list_errors_total 0" in body
    finally:
        server.shutdown()
        server.server_close()


def test_exporter_command_rejects_bad_settings() -> None:
    from wattcap.sim.exporter import exporter_command

    args = argparse.Namespace(
        kubeconfig=None,
        address="127.0.0.1",
        port=0,
        interval=1.0,
        seed=0,
        node_selector="type=kwok",
        idle_watts=800.0,
        tdp_watts=700.0,
    )
    assert exporter_command(args) == 2
    args.idle_watts, args.interval = 70.0, 0.0
    assert exporter_command(args) == 2
