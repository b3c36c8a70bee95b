"""Measured power closes the loop: exporter -> real Prometheus -> operator.

Same site as test_operator.py (8 x 8 GPUs, idle 8.48 kW, TDP 700 W, PUE 1.0).
Jobs carry their ground truth in `wattcap.io/sim-power`, which only the
simulated exporter reads; the operator sees it only through Prometheus.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ports
import pytest
from conftest import ROOT, OperatorProcess, kget, kubectl
from prometheus_api_client import PrometheusConnect
from test_operator import (
    GPU_IDLE,
    IDLE_W,
    TDP,
    admitted_site_watts,
    apply,
    set_policy,
    tjs,
    training_job,
    wait_for,
)

pytestmark = pytest.mark.integration
PROM_URL = ports.PROM_URL
PROM = str(ROOT / "hack" / "prometheus.sh")


@pytest.fixture(scope="module")
def power_stack(crds: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus scraping the simulated DCGM exporter and the operator."""
    log = open(tmp_path_factory.mktemp("exporter") / "exporter.log", "wb")  # noqa: SIM115
    exporter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wattcap.cli",
            "sim",
            "exporter",
            "--kubeconfig",
            crds,
            "--port",
            str(ports.EXPORTER),
            "--interval",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    subprocess.run([PROM, "up"], check=True)
    prom = PrometheusConnect(PROM_URL, disable_ssl=True)
    wait_for(
        "exporter series in Prometheus",
        lambda: len(prom.custom_query("DCGM_FI_DEV_POWER_USAGE")) >= 64,
        60,
    )
    yield crds
    exporter.terminate()
    exporter.wait(10)
    subprocess.run([PROM, "down"], check=False)


@pytest.fixture
def measured_operator(power_stack: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(power_stack, tmp_path / "operator.log", metrics_port=ports.METRICS)
    op.start()
    yield op
    op.stop()
    print((tmp_path / "operator.log").read_text()[-4000:])


def measured_job(
    name: str,
    ns: str,
    true_watts: float,
    seconds: int,
    cls: str,
    *,
    gpus: int = 8,
    prio: int = 0,
    pre: bool = False,
    hint: float | None = None,
) -> dict[str, Any]:
    obj = training_job(name, ns, 1, gpus, seconds, prio=prio, pre=pre, hint=hint)
    obj["spec"]["workloadClass"] = cls
    obj["spec"]["template"]["metadata"]["annotations"]["wattcap.io/sim-power"] = json.dumps(
        {"watts": true_watts, "noise": 0.01}
    )
    return obj


def status(kc: str, ns: str, name: str) -> dict[str, Any]:
    return kget(kc, "trainingjob.wattcap.io", name, "-n", ns).get("status") or {}


def policy_condition(kc: str, kind: str) -> dict[str, Any]:
    st = kget(kc, "powerpolicy.wattcap.io", "site").get("status") or {}
    return next((c for c in st.get("conditions") or [] if c["type"] == kind), {})


def phases(kc: str, ns: str) -> dict[str, str]:
    return {t["metadata"]["name"]: (t.get("status") or {}).get("phase", "") for t in tjs(kc, ns)}


def test_a_new_class_is_learned_and_more_jobs_fit(
    power_stack: str, namespace: str, measured_operator: OperatorProcess
) -> None:
    kc = power_stack
    cap = IDLE_W + 2 * 8 * (TDP - GPU_IDLE) + 500  # two 8-GPU jobs at the TDP prior
    set_policy(kc, cap, prometheus={"url": PROM_URL}, gracePeriod="5s")
    apply(kc, [measured_job(f"first-{i}", namespace, 400, 25, "llama") for i in range(3)])
    most = 0

    def first_done() -> bool:
        nonlocal most
        p = phases(kc, namespace)
        most = max(most, sum(v in ("Admitted", "Running") for v in p.values()))
        return len(p) == 3 and all(v == "Succeeded" for v in p.values())

    wait_for("the first three jobs", first_done, 180, every=0.5)
    assert most == 2, "on the prior (TDP) only two 8-GPU jobs fit"
    for i in range(3):
        got = status(kc, namespace, f"first-{i}")["measuredWatts"]
        assert abs(got - 8 * 400) <= 0.05 * 8 * 400, got

    apply(kc, measured_job("probe", namespace, 400, 600, "llama"))
    wait_for("the probe's forecast", lambda: status(kc, namespace, "probe").get("forecast"), 30)
    fc = status(kc, namespace, "probe")["forecast"]
    assert fc["source"] == "history"
    assert 400 <= fc["gpuWatts"] <= 440, fc  # within 10 % of the true 400 W

    apply(kc, [measured_job(f"more-{i}", namespace, 400, 600, "llama") for i in range(5)])

    def many_running() -> bool:  # ~420 W planned per GPU: three fit where two did
        return sum(v in ("Admitted", "Running") for v in phases(kc, namespace).values()) > most

    wait_for("more jobs under the same cap than on day one", many_running, 60)
    assert admitted_site_watts(tjs(kc, namespace)) <= cap


def test_a_job_drawing_more_than_forecast_is_shed_after_grace(
    power_stack: str, namespace: str, measured_operator: OperatorProcess
) -> None:
    kc = power_stack
    cap = IDLE_W + 3 * 8 * (300 - GPU_IDLE) + 1000  # fits three jobs on their 300 W hints
    # hints as low as 300 W (0.43 of TDP) are believed here: the policy's floor is lowered
    set_policy(kc, cap, prometheus={"url": PROM_URL}, gracePeriod="5s", hintFloorFraction=0.4)
    prom = PrometheusConnect(PROM_URL, disable_ssl=True)

    def meter_idle() -> bool:  # no GPU still read at work for an earlier test's pods
        v = prom.custom_query("max(DCGM_FI_DEV_POWER_USAGE)")
        return bool(v) and float(v[0]["value"][1]) < GPU_IDLE + 50

    # Until the meter has caught up with the last test's teardown, this operator
    # reads that test's load as over this lower cap: MeasuredOverCap before these
    # jobs ran, and the tiny job admitted with them once the reading fell (twice
    # in fresh-path runs: the operator lived 2 s).
    wait_for("the meter to read the site idle", meter_idle, 60, every=0.5)
    apply(
        kc,
        [
            measured_job(f"hot-{p}", namespace, 620, 600, f"hot{p}", prio=p, pre=True, hint=300)
            for p in range(3)
        ],
    )
    wait_for(
        "the measured excursion",
        lambda: policy_condition(kc, "WithinCap").get("reason") == "MeasuredOverCap",
        60,
        every=0.5,
    )
    # over the cap by measurement: nothing new is admitted, however small
    apply(kc, measured_job("tiny", namespace, 100, 600, "tiny", gpus=1, hint=100))
    wait_for(
        "the operator to decide on the tiny job",
        lambda: status(kc, namespace, "tiny").get("phase") is not None,
        30,
        every=0.5,
    )
    tiny = status(kc, namespace, "tiny")
    assert tiny["phase"] == "Queued", tiny
    assert tiny.get("reason") in ("WaitingForPower", "SheddingLoad"), tiny

    wait_for(
        "site power back under the cap",
        lambda: policy_condition(kc, "WithinCap").get("status") == "True",
        120,
        every=0.5,
    )
    p = phases(kc, namespace)
    assert p["hot-0"] == "Preempted", p
    assert p["hot-2"] == "Running", "the highest priority keeps running"
    assert status(kc, namespace, "hot-0")["reason"] in ("MeasuredOverCap", "WaitingForPower")
    assert kget(kc, "job.batch", "hot-0", "-n", namespace)["spec"]["suspend"] is True

    def measured_under() -> bool:
        v = prom.custom_query('wattcap_site_power_watts{source="measured"}')
        return bool(v) and float(v[0]["value"][1]) <= cap

    wait_for("Prometheus to show the site under the cap", measured_under, 30)
    events = kubectl(
        kc, "get", "events", "-n", "default", "--field-selector", "reason=MeasuredOverCap"
    ).stdout
    assert "MeasuredOverCap" in events


def test_prometheus_outage_falls_back_to_the_conservative_model(
    power_stack: str, namespace: str, measured_operator: OperatorProcess
) -> None:
    kc = power_stack
    cap = IDLE_W + 2.5 * 8 * (TDP - GPU_IDLE)
    set_policy(kc, cap, prometheus={"url": PROM_URL}, gracePeriod="5s")
    apply(kc, measured_job("calm", namespace, 300, 900, "calm"))
    wait_for(
        "the running job's reservation to tighten from measurements",
        lambda: status(kc, namespace, "calm").get("plannedGpuWatts", TDP) < 400,  # true 300 W
        120,
    )
    apply(kc, measured_job("second", namespace, 500, 900, "new-a"))
    wait_for("second admitted", lambda: phases(kc, namespace).get("second") == "Running", 30)

    subprocess.run([PROM, "down"], check=True)
    try:
        wait_for(
            "the Measured condition to drop",
            lambda: policy_condition(kc, "Measured").get("reason") == "PrometheusUnavailable",
            30,
        )
        # calm is planned at its admission forecast (TDP) again: a third TDP job
        # would fit on the measured figure but not on the conservative one
        apply(kc, measured_job("third", namespace, 500, 900, "new-b"))
        time.sleep(8)
        p = phases(kc, namespace)
        assert p["third"] == "Queued", p
        assert p["calm"] == "Running" and p["second"] == "Running", "an outage sheds nothing"
    finally:
        subprocess.run([PROM, "up"], check=True)
    wait_for("recovery", lambda: policy_condition(kc, "Measured").get("status") == "True", 60)
    wait_for(
        "the third job admitted once measurements return",
        lambda: phases(kc, namespace).get("third") in ("Admitted", "Running"),
        90,
    )


def test_an_idle_wait_before_its_work_does_not_tighten_a_running_jobs_plan(
    power_stack: str, namespace: str, measured_operator: OperatorProcess
) -> None:
    """Its pod Running and read, its GPUs idle for 75 s (image pull, data
    staging), then at 450 W: planned at its admission forecast until its
    work has run past its warm-up, then tightened from what it draws."""
    kc = power_stack
    set_policy(kc, IDLE_W + 20_000, prometheus={"url": PROM_URL})
    job = measured_job("slow-start", namespace, 450, 900, "slow-start")
    job["spec"]["template"]["metadata"]["annotations"]["wattcap.io/sim-power"] = json.dumps(
        {"watts": 450, "noise": 0.01, "idleSeconds": 75}
    )
    apply(kc, job)
    wait_for("the job measured", lambda: "measuredWatts" in status(kc, namespace, "slow-start"), 60)
    admitted = status(kc, namespace, "slow-start")["forecast"]["gpuWatts"]
    assert admitted > 450, "admitted above its true draw, or tightening shows nothing"
    seen: list[tuple[float, float]] = []
    deadline = time.monotonic() + 40  # past the 30 s warm-up counted from its first reading
    while time.monotonic() < deadline:
        st = status(kc, namespace, "slow-start")
        seen.append((st["measuredWatts"], st["plannedGpuWatts"]))
        time.sleep(1)
    assert max(m for m, _ in seen) < 8 * 200, f"its work started early: {seen}"
    assert all(p == admitted for _, p in seen), f"tightened from idle readings: {seen}"
    wait_for(
        "its plan tightened once it works",
        lambda: status(kc, namespace, "slow-start").get("plannedGpuWatts", TDP) < 0.9 * admitted,
        150,
    )
    # from its working readings alone: its idle ones in the mean would put it near 300 W
    assert status(kc, namespace, "slow-start")["plannedGpuWatts"] >= 0.95 * 450


def test_a_namespaces_checked_hints_plan_its_next_hinted_job(
    power_stack: str, namespace: str, measured_operator: OperatorProcess
) -> None:
    """Five 1-GPU jobs, each of a class of its own, hint what they draw
    (300 to 500 W). Once they have finished, measured through Prometheus, the
    namespace's hints are checked: a sixth job of a class never seen, hinting
    500 W, is planned from that record (`hinted`, with a spread) rather than
    as an unchecked claim (`hint`, a bound). A job with no hint in another new
    class still starts from TDP."""
    kc = power_stack
    set_policy(kc, IDLE_W + 20_000, prometheus={"url": PROM_URL})
    before = measured_job("before", namespace, 500, 600, "fresh-0", gpus=1, hint=500)
    apply(kc, before)
    wait_for("the first forecast", lambda: status(kc, namespace, "before").get("forecast"), 30)
    assert status(kc, namespace, "before")["forecast"]["source"] == "hint"
    honest = [
        measured_job(f"honest-{k}", namespace, w, 25, f"own-{k}", gpus=1, hint=w)
        for k, w in enumerate((300, 350, 400, 450, 500))
    ]
    apply(kc, honest)
    wait_for(
        "the five hinted jobs",
        lambda: all(phases(kc, namespace).get(f"honest-{k}") == "Succeeded" for k in range(5)),
        180,
        every=0.5,
    )
    apply(kc, [measured_job("after", namespace, 500, 600, "fresh-1", gpus=1, hint=500),
               measured_job("unhinted", namespace, 500, 600, "fresh-2", gpus=1)])  # fmt: skip
    for p in ("after", "unhinted"):
        wait_for(f"{p}'s forecast", lambda p=p: status(kc, namespace, p).get("forecast"), 30)
    fc = status(kc, namespace, "after")["forecast"]
    assert fc["source"] == "hinted", fc
    assert 480 <= fc["gpuWatts"] <= 560, fc  # the record's bound: 500 W read through a ratio of ~1
    assert status(kc, namespace, "unhinted")["forecast"]["source"] == "prior"
