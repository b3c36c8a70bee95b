"""The platform team's loop on a real site: run jobs, export the site's own
history from the cluster and the real Prometheus, tune on it, and patch the
live PowerPolicy with what `wattcap tune` suggests (server-side dry run).

Same measured site as test_measured_power.py: jobs' true power is in their
`wattcap.io/sim-power` annotation, which only the simulated exporter reads;
the export must find it through Prometheus.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import kubectl
from test_measured_power import (  # noqa: F401 - fixtures used by name
    PROM_URL,
    measured_job,
    measured_operator,
    phases,
    power_stack,
)
from test_operator import IDLE_W, apply, set_policy, wait_for

from wattcap.sim.trace import load_trace

pytestmark = pytest.mark.integration


def wattcap(*args: str, kubeconfig: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattcap.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "KUBECONFIG": kubeconfig},
    )


def test_history_export_writes_a_jobs_draw_at_work_not_its_idle_wait_and_tail(
    power_stack: str,  # noqa: F811
    namespace: str,
    measured_operator,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A job's pod holds its GPUs idle before its work starts (image pull, data
    loading) and after it ends (pod not yet gone); the trace's power is what the
    job draws at work, or `tune` plans the class low. Here 20 s idle, 45 s at
    550 W, 25 s idle: the mean over the run is about 310 W."""
    kc = power_stack
    set_policy(kc, IDLE_W + 20_000, prometheus={"url": PROM_URL})
    job = measured_job("hist-idle", namespace, 550, 90, "hist-idle")
    job["spec"]["template"]["metadata"]["annotations"]["wattcap.io/sim-power"] = json.dumps(
        {"watts": 550, "noise": 0.01, "idleSeconds": 20, "workSeconds": 45}
    )
    apply(kc, job)
    wait_for(
        "the job to succeed",
        lambda: phases(kc, namespace).get("hist-idle") == "Succeeded",
        240,
        every=1.0,
    )
    trace = tmp_path / "history.csv"
    r = wattcap("history", "export", "--since", "1h", "--out", str(trace), kubeconfig=kc)
    assert r.returncode == 0, r.stderr
    jobs = {j.job_id: j for j in load_trace(trace, nodes=8, gpus_per_node=8)}
    got = jobs[f"{namespace}/hist-idle"].gpu_watts
    assert abs(got - 550) <= 0.05 * 550, got


def test_history_export_then_tune_then_patch(
    power_stack: str,  # noqa: F811
    namespace: str,
    measured_operator,  # noqa: F811
    tmp_path: Path,
) -> None:
    kc = power_stack
    set_policy(kc, IDLE_W + 20_000, prometheus={"url": PROM_URL})
    truth = {"hist-a": (350, 20), "hist-b": (550, 30)}
    apply(kc, [measured_job(n, namespace, w, s, n) for n, (w, s) in truth.items()])
    wait_for(
        "both jobs to succeed",
        lambda: set(phases(kc, namespace).values()) == {"Succeeded"},
        180,
        every=1.0,
    )

    trace = tmp_path / "history.csv"
    r = wattcap("history", "export", "--since", "1h", "--out", str(trace), kubeconfig=kc)
    assert r.returncode == 0, r.stderr
    assert "pass it as --start" in r.stderr
    jobs = {j.job_id: j for j in load_trace(trace, nodes=8, gpus_per_node=8)}
    mine = {k.split("/", 1)[1]: v for k, v in jobs.items() if k.startswith(namespace + "/")}
    assert set(mine) == set(truth)
    for name, (watts, seconds) in truth.items():
        j = mine[name]
        assert abs(j.gpu_watts - watts) <= 0.05 * watts, (name, j.gpu_watts)  # the meter's word
        assert seconds - 2 <= j.duration_s <= seconds + 15, (name, j.duration_s)
        assert j.workload_class == name and j.gpus_per_replica == 8

    policy = tmp_path / "policy.yaml"
    policy.write_text(kubectl(kc, "get", "powerpolicy.wattcap.io", "site", "-o", "yaml").stdout)
    r = wattcap(
        "tune",
        "--trace",
        str(trace),
        "--policy",
        str(policy),
        "--nodes",
        "8",
        "--gpus-per-node",
        "8",
        "--start",
        "2026-07-01T00:00:00Z",
        "--grid",
        "safetyMargin=0,0.05",
        "--grid",
        "backfill=true,false",
        "--json",
        kubeconfig=kc,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["command"].startswith("kubectl patch powerpolicy site --type merge -p ")
    dry = kubectl(
        kc,
        "patch",
        "powerpolicy.wattcap.io",
        "site",
        "--type",
        "merge",
        "-p",
        json.dumps(out["patch"]),
        "--dry-run=server",
        "-o",
        "json",
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
    patched = json.loads(dry.stdout)["spec"]
    for key, value in out["patch"]["spec"].items():
        assert patched[key] == value
