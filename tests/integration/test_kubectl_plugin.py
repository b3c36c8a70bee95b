"""`kubectl wattcap` as users run it: the real kubectl finds the plugin on
PATH, against the real control plane with the operator deciding.

Golden-shape assertions: columns, reasons and JSON keys, never whole screens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import kget, kubectl
from test_operator import GPU_IDLE, IDLE_W, TDP, apply, set_policy, training_job, wait_for

from wattcap.model import format_time

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent  # where the package put kubectl-wattcap


def plugin(kc: str, *args: str) -> str:
    """`kubectl wattcap ARGS`, through kubectl's plugin discovery."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    kubectl_bin = os.environ.get("WATTCAP_KUBECTL", str(Path.home() / ".cache/wattcap/bin/kubectl"))
    run = subprocess.run(
        [kubectl_bin, "wattcap", *args, "--kubeconfig", kc],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def phases(kc: str, ns: str) -> dict[str, str]:
    items = kget(kc, "trainingjobs.wattcap.io", "-n", ns)["items"]
    return {t["metadata"]["name"]: (t.get("status") or {}).get("phase", "") for t in items}


def reasons(kc: str, ns: str) -> dict[str, str]:
    items = kget(kc, "trainingjobs.wattcap.io", "-n", ns)["items"]
    return {t["metadata"]["name"]: (t.get("status") or {}).get("reason", "") for t in items}


@pytest.fixture
def busy_site(crds: str, namespace: str, operator_process: Any) -> tuple[str, str]:
    """One 8-GPU job runs, two wait for power; a cap window opens in 2 h."""
    kc = crds
    one_job = 8 * (TDP - GPU_IDLE)
    window = {
        "name": "evening-peak",
        "start": format_time(time.time() + 7200),
        "end": format_time(time.time() + 10800),
        "capWatts": IDLE_W + 500,
    }
    set_policy(kc, IDLE_W + 1.5 * one_job, capSchedule=[window])
    apply(kc, training_job("first", namespace, 1, 8, 3000))
    wait_for("first to run", lambda: phases(kc, namespace).get("first") == "Running", 60)
    apply(
        kc,
        [
            training_job("second", namespace, 1, 8, 600, prio=5),
            training_job("third", namespace, 1, 8, 600),
        ],
    )
    wait_for(
        "two waits with reasons",
        lambda: sum(r.startswith("Waiting") for r in reasons(kc, namespace).values()) == 2,
        60,
    )
    return kc, namespace


def test_status_shows_cap_draw_jobs_and_the_published_plan(busy_site: tuple[str, str]) -> None:
    kc, _ = busy_site
    text = plugin(kc, "status")
    for label in ("cap now", "next changes", "measured", "projected", "forecast", "headroom"):
        assert f"\n{label}" in text, label
    assert "next cap drop" in text and "(evening-peak)" in text
    assert "queued" in text and "running" in text and "preempted" in text
    assert "# committed (idle, non-preemptible)  + preemptible and reserved  - cap" in text
    doc = json.loads(plugin(kc, "status", "-o", "json"))
    (site,) = [p for p in doc["items"] if p["name"] == "site"]
    assert {
        "capWatts",
        "nextCapChanges",
        "measuredWatts",
        "projectedWatts",
        "runningForecastWatts",
        "headroomWatts",
        "jobs",
        "outlook",
        "nextCapDrop",
    } <= set(site)
    assert site["jobs"]["running"] >= 1 and site["jobs"]["queued"] >= 2
    assert site["outlookCurrent"], "the outlook must be the last cycle's"
    assert site["nextCapDrop"]["window"] == "evening-peak"
    assert {"at", "capWatts", "plannedWatts"} <= set(site["outlook"][0])
    assert yaml.safe_load(plugin(kc, "status", "-o", "yaml"))["kind"] == "StatusList"


def test_queue_lists_waiting_jobs_in_decision_order_with_reasons(
    busy_site: tuple[str, str],
) -> None:
    kc, ns = busy_site
    lines = plugin(kc, "queue", "-n", ns).splitlines()
    header = lines[0].split()
    assert header == [
        "#",
        "NAMESPACE",
        "NAME",
        "PRIO",
        "GPUS",
        "FORECAST_KW",
        "REASON",
        "EST_START",
        "WAITED",
    ]
    rows = [line.split() for line in lines[1:]]
    assert [r[2] for r in rows] == ["second", "third"]  # priority 5 first
    assert all(r[6].startswith("Waiting") for r in rows)
    wide = plugin(kc, "queue", "-n", ns, "-o", "wide").splitlines()[0].split()
    assert wide[-4:] == ["PHASE", "CLASS", "PREEMPTIBLE", "MESSAGE"]
    items = json.loads(plugin(kc, "queue", "-A", "-o", "json"))["items"]
    mine = [q for q in items if q["namespace"] == ns]
    assert {"position", "reason", "estimatedStart", "forecastWatts", "message"} <= set(mine[0])


def test_explain_says_why_a_job_waits_from_its_status(busy_site: tuple[str, str]) -> None:
    kc, ns = busy_site
    text = plugin(kc, "explain", "third", "-n", ns)
    status = kget(kc, "trainingjob.wattcap.io", "third", "-n", ns)["status"]
    assert f"reason          {status['reason']}" in text
    assert status["message"].split(";")[0] in text
    assert "queue position  2 of 2 in the site's queue" in text
    rec = json.loads(plugin(kc, "explain", "third", "-n", ns, "-o", "json"))
    assert rec["kind"] == "Explanation"
    assert {"reason", "message", "estimatedStart", "forecast", "position", "sooner"} <= set(
        rec["items"]
    )


def test_top_groups_running_draw_by_namespace_and_class(busy_site: tuple[str, str]) -> None:
    kc, ns = busy_site
    text = plugin(kc, "top", "-n", ns)
    ns_table, class_table = text.split("\n\n")
    assert ns_table.splitlines()[0].split() == [
        "NAMESPACE",
        "JOBS",
        "GPUS",
        "MEASURED_KW",
        "FORECAST_KW",
        "MEASURED/FORECAST",
    ]
    assert ns_table.splitlines()[1].split()[:3] == [ns, "1", "8"]
    assert class_table.splitlines()[0].split()[0] == "CLASS"
    doc = json.loads(plugin(kc, "top", "-n", ns, "-o", "json"))
    assert {"namespace", "jobs", "gpus", "measuredWatts", "forecastWatts"} <= set(
        doc["items"]["namespace"][0]
    )


def test_context_flag_selects_the_kubeconfig_context(busy_site: tuple[str, str]) -> None:
    kc, ns = busy_site
    ctx = kubectl(kc, "config", "current-context").stdout.strip()
    assert "TrainingJob" not in plugin(kc, "queue", "-n", ns, "--context", ctx)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    bad = subprocess.run(
        [str(BIN / "kubectl-wattcap"), "status", "--kubeconfig", kc, "--context", "no-such"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 1 and "no-such" in bad.stderr
