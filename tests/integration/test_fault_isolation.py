"""One bad object never stops the site loop: on a real control plane with kwok GPU nodes.

Each test applies what the API server accepts but the operator used to choke
on (or what it should refuse), and checks that the object reports what is
wrong while the loop keeps deciding for everyone else. Site as in
test_operator.py: 8 nodes x 8 GPUs, idle 8.48 kW, all GPUs at TDP 48.8 kW.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, OperatorProcess, create_namespace, kget, kubectl
from test_operator import GPU_IDLE, IDLE_W, TDP, apply, set_policy, training_job, wait_for

pytestmark = pytest.mark.integration


def status(kc: str, ns: str, name: str) -> dict[str, Any]:
    return kget(kc, "trainingjob.wattcap.io", name, "-n", ns).get("status") or {}


def phase_is(kc: str, ns: str, name: str, *phases: str) -> bool:
    return status(kc, ns, name).get("phase") in phases


def test_a_poisoned_template_fails_alone_and_a_later_job_runs(
    kubeconfig: str, namespace: str, operator_process: OperatorProcess
) -> None:
    set_policy(kubeconfig, 48_800)
    bad = training_job("poisoned", namespace, 1, 8, 30, prio=100)
    bad["spec"]["template"]["spec"]["containers"] = "x"  # the CRD keeps the template free-form
    sidecar = training_job("sidecar", namespace, 1, 1, 30, prio=100)
    sidecar["spec"]["template"]["spec"]["containers"].append(
        {"name": "extra", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "7"}}}
    )
    apply(kubeconfig, [bad, sidecar])
    wait_for("InvalidSpec", lambda: phase_is(kubeconfig, namespace, "poisoned", "Failed"), 60)
    st = status(kubeconfig, namespace, "poisoned")
    assert st["reason"] == "InvalidSpec"
    assert "spec.template.spec.containers" in st["message"]
    wait_for("InvalidSpec", lambda: phase_is(kubeconfig, namespace, "sidecar", "Failed"), 60)
    assert "nvidia.com/gpu" in status(kubeconfig, namespace, "sidecar")["message"]

    apply(kubeconfig, training_job("after", namespace, 1, 8, 5))
    wait_for("the valid job", lambda: phase_is(kubeconfig, namespace, "after", "Succeeded"), 90)
    jobs = kget(kubeconfig, "jobs.batch", "-n", namespace)["items"]
    assert [j["metadata"]["name"] for j in jobs] == ["after"]
    pod = jobs[0]["spec"]["template"]["spec"]
    assert not any("kwok" in json.dumps(t) for t in pod.get("tolerations") or [])


def test_a_seventy_character_name_runs(
    kubeconfig: str, namespace: str, operator_process: OperatorProcess
) -> None:
    set_policy(kubeconfig, 48_800)
    name = "long-" + "n" * 65
    apply(kubeconfig, training_job(name, namespace, 2, 4, 5))
    wait_for("the long-named job", lambda: phase_is(kubeconfig, namespace, name, "Succeeded"), 120)
    (job,) = kget(kubeconfig, "jobs.batch", "-n", namespace)["items"]
    assert len(job["metadata"]["name"]) <= 63
    assert job["metadata"]["ownerReferences"][0]["name"] == name


def test_a_refused_create_is_reported_and_not_admitted(
    kubeconfig: str, namespace: str, operator_process: OperatorProcess
) -> None:
    """A quota that forbids Jobs (403), and a Job of the same name owned by
    nobody (409): neither TrainingJob is Admitted, each says why."""
    set_policy(kubeconfig, 48_800)
    squatter = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "squat", "namespace": namespace},
        "spec": {
            "suspend": True,
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}
            },
        },
    }
    apply(kubeconfig, squatter)
    apply(kubeconfig, training_job("squat", namespace, 1, 8, 5))

    def conflict() -> bool:
        st = status(kubeconfig, namespace, "squat")
        return st.get("reason") == "CreateFailed" and "not this TrainingJob" in st["message"]

    wait_for("the conflict in status", conflict, 60)
    assert status(kubeconfig, namespace, "squat")["phase"] == "Queued"
    assert kget(kubeconfig, "job.batch", "squat", "-n", namespace)["spec"]["suspend"] is True

    quota_ns = namespace[:50] + "-q"
    create_namespace(kubeconfig, quota_ns)
    try:
        kubectl(
            kubeconfig, "create", "quota", "nojobs", "--hard=count/jobs.batch=0", "-n", quota_ns
        )
        apply(kubeconfig, training_job("quota", quota_ns, 1, 8, 5))

        def refused() -> bool:
            st = status(kubeconfig, quota_ns, "quota")
            return st.get("reason") == "CreateFailed" and "403" in st["message"]

        wait_for("the quota refusal in status", refused, 60)
        st = status(kubeconfig, quota_ns, "quota")
        assert st["phase"] == "Queued" and "quota" in st["message"]
        events = kubectl(
            kubeconfig, "get", "events", "-n", quota_ns, "--field-selector", "reason=CreateFailed"
        ).stdout
        assert "quota" in events
        # the loop goes on for everyone else
        apply(kubeconfig, training_job("fine", namespace, 1, 8, 5))
        wait_for("the next job", lambda: phase_is(kubeconfig, namespace, "fine", "Succeeded"), 90)
    finally:
        kubectl(kubeconfig, "delete", "namespace", quota_ns, "--wait=false", check=False)


def placement(kc: str, ns: str, name: str) -> list[str]:
    job = kget(kc, "job.batch", name, "-n", ns)
    return json.loads(job["metadata"]["annotations"]["wattcap.io/placement"])


def test_a_preempted_job_resumes_on_other_nodes(
    kubeconfig: str, namespace: str, operator_process: OperatorProcess
) -> None:
    set_policy(kubeconfig, 48_800)
    apply(kubeconfig, training_job("mover", namespace, 1, 8, 25, pre=True))
    wait_for("running", lambda: phase_is(kubeconfig, namespace, "mover", "Running"), 60)
    (first,) = placement(kubeconfig, namespace, "mover")
    uid = kget(kubeconfig, "job.batch", "mover", "-n", namespace)["metadata"]["uid"]
    set_policy(kubeconfig, IDLE_W + 4 * (TDP - GPU_IDLE))  # no room for 8 GPUs at TDP

    def stopped() -> bool:
        job = kget(kubeconfig, "job.batch", "mover", "-n", namespace)
        return job["spec"].get("suspend") is True and not (job.get("status") or {}).get("active")

    wait_for("the preemption", stopped, 60)
    kubectl(kubeconfig, "cordon", first)  # its old node is gone for it: it must move
    try:
        set_policy(kubeconfig, 48_800)
        wait_for(
            "the job to run to completion elsewhere",
            lambda: phase_is(kubeconfig, namespace, "mover", "Succeeded"),
            120,
        )
    finally:
        kubectl(kubeconfig, "uncordon", first, check=False)
    job = kget(kubeconfig, "job.batch", "mover", "-n", namespace)
    assert job["metadata"]["uid"] != uid, "a fresh Job was created for the move"
    assert placement(kubeconfig, namespace, "mover") != [first]
    pods = kget(kubeconfig, "pods", "-n", namespace, "-l", "wattcap.io/trainingjob=mover")
    assert {p["spec"]["nodeName"] for p in pods["items"]} - {first}


def test_absurd_sizes_and_a_hot_control_period_are_refused(crds: str, namespace: str) -> None:
    big = training_job("huge", namespace, 1, 8, 5)
    big["spec"]["replicas"] = 1_000_000_000_000
    out = kubectl(crds, "apply", "-f", "-", stdin=yaml.safe_dump(big), check=False)
    assert out.returncode != 0 and "spec.replicas" in out.stderr, out.stderr
    policy = {
        "apiVersion": "wattcap.io/v1alpha1",
        "kind": "PowerPolicy",
        "metadata": {"name": "hot-loop"},
        "spec": {"capWatts": 10_000, "controlPeriod": "0.001s"},
    }
    out = kubectl(crds, "apply", "-f", "-", stdin=yaml.safe_dump(policy), check=False)
    assert out.returncode != 0 and "spec.controlPeriod" in out.stderr, out.stderr
    assert "at least 1s" in out.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return 0, ""


def test_the_operator_serves_liveness_and_readiness(crds: str, tmp_path: Path) -> None:
    set_policy(crds, 48_800)
    port = free_port()
    op = OperatorProcess(crds, tmp_path / "operator.log", metrics_port=port)
    op.start()
    try:
        # the site loop starts when kopf sees the PowerPolicy; then one cycle makes it ready
        wait_for("the site loop", lambda: probe(port, "/healthz")[1].startswith("ok: 1 loop"), 60)
        wait_for("/readyz", lambda: probe(port, "/readyz")[0] == 200, 60)
    finally:
        op.stop()


def test_the_chart_wires_both_probes_to_the_loop() -> None:
    helm = str(Path.home() / ".cache/wattcap/bin/helm")
    out = subprocess.run(
        [helm, "template", "w", str(ROOT / "charts" / "wattcap")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (dep,) = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment"]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_admitted_work_whose_pods_never_get_ready_is_requeued(
    kubeconfig: str, namespace: str, operator_process: OperatorProcess
) -> None:
    set_policy(kubeconfig, 48_800, podsReadyTimeout="5s")
    stuck = training_job("stuck", namespace, 1, 8, 5)
    stuck["spec"]["template"]["spec"]["nodeSelector"] = {"no-such-label": "anywhere"}
    apply(kubeconfig, stuck)

    def requeued() -> bool:
        return status(kubeconfig, namespace, "stuck").get("reason") == "PodsNotReady"

    wait_for("PodsNotReady", requeued, 60)
    st = status(kubeconfig, namespace, "stuck")
    assert st["phase"] == "Queued" and "0 of 1 pods ready" in st["message"]
    events = kubectl(
        kubeconfig, "get", "events", "-n", namespace, "--field-selector", "reason=PodsNotReady"
    ).stdout
    assert "stuck" in events
