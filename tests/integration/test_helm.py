"""`helm install` of charts/wattcap into the real control plane, as a platform team would.

Self-contained: it removes the wattcap CRDs first (an earlier test's install
would otherwise make "the chart installs its CRDs" true whatever the chart
does), uses a namespace of its own, and checks that `helm uninstall`
succeeds and removes what the release made. Helm never deletes CRDs on
uninstall, so the chart's CRDs stay for the tests after this one.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, kget, kubectl

pytestmark = pytest.mark.integration
HELM = os.environ.get("WATTCAP_HELM", str(Path.home() / ".cache/wattcap/bin/helm"))
CRDS = ("trainingjobs.wattcap.io", "powerpolicies.wattcap.io")


def helm(kubeconfig: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [HELM, "--kubeconfig", kubeconfig, *args], capture_output=True, text=True, check=False
    )
    if check:
        assert out.returncode == 0, f"helm {' '.join(args)}: {out.stderr}"
    return out


def crd_uids(kubeconfig: str) -> dict[str, str]:
    return {
        c["metadata"]["name"]: c["metadata"]["uid"]
        for c in kget(kubeconfig, "crd")["items"]
        if c["metadata"]["name"] in CRDS
    }


def _drop_finalizers(kubeconfig: str) -> None:
    """Objects an earlier test left keep kopf's finalizer once their operator is
    gone, and a CRD is deleted only after its objects: release them first."""
    for crd in CRDS:
        if crd not in crd_uids(kubeconfig):
            continue
        for obj in kget(kubeconfig, crd, "-A")["items"]:
            meta = obj["metadata"]
            where = ["-n", meta["namespace"]] if meta.get("namespace") else []
            kubectl(kubeconfig, "patch", crd, meta["name"], *where, "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}', check=False)  # fmt: skip


def test_chart_installs_its_crds_and_operator_and_uninstalls(kubeconfig: str) -> None:
    ns = f"wattcap-helm-{random.randrange(10**6)}"
    _drop_finalizers(kubeconfig)
    kubectl(
        kubeconfig, "delete", "crd", *CRDS, "--ignore-not-found", "--wait=true", "--timeout=120s"
    )
    assert crd_uids(kubeconfig) == {}, "the CRDs are still there: the test would prove nothing"
    try:
        helm(
            kubeconfig,
            "install",
            "wattcap",
            str(ROOT / "charts" / "wattcap"),
            "--namespace",
            ns,
            "--create-namespace",
            "--set",
            "dashboard.enabled=true",
            "--set",
            "agent.enabled=true",
            "--wait=false",
        )
        installed = crd_uids(kubeconfig)
        assert set(installed) == set(CRDS), "the chart installs both CRDs"
        for crd in CRDS:
            wait = ("wait", "--for=condition=Established", "--timeout=60s")
            kubectl(kubeconfig, *wait, "crd/" + crd)
        deploy = kget(kubeconfig, "deployment", "-n", ns, "-l", "app.kubernetes.io/name=wattcap")[
            "items"
        ]
        assert len(deploy) == 1
        container = deploy[0]["spec"]["template"]["spec"]["containers"][0]
        assert "operator" in container["args"] or "operator" in container.get("command", [])
        sa = deploy[0]["spec"]["template"]["spec"]["serviceAccountName"]
        # least privilege, checked by the API server's own authorizer
        who = f"system:serviceaccount:{ns}:{sa}"

        def can_i(verb: str, resource: str, who: str = who) -> str:
            return kubectl(
                kubeconfig,
                "auth",
                "can-i",
                verb,
                resource,
                "--as",
                who,
                "-n",
                "default",
                check=False,
            ).stdout.strip()

        assert can_i("create", "jobs.batch") == "yes"
        assert can_i("get", "secrets") == "no"
        # the node agent reads pods and writes nothing
        agent = f"system:serviceaccount:{ns}:wattcap-agent"
        assert can_i("watch", "pods", agent) == "yes"
        assert can_i("patch", "pods", agent) == "no"
        assert can_i("get", "secrets", agent) == "no"
        assert kget(kubeconfig, "daemonset", "-n", ns, "wattcap-agent")["spec"]["template"]

        out = helm(kubeconfig, "uninstall", "wattcap", "--namespace", ns, "--wait")
        assert "uninstalled" in out.stdout
        assert helm(kubeconfig, "status", "wattcap", "--namespace", ns, check=False).returncode
        left = kget(kubeconfig, "deployment,serviceaccount,service", "-n", ns)["items"]
        assert [i["metadata"]["name"] for i in left if i["kind"] != "ServiceAccount"] == []
        assert sa not in {i["metadata"]["name"] for i in left}
        assert crd_uids(kubeconfig) == installed, "helm keeps CRDs on uninstall"
    finally:
        helm(kubeconfig, "uninstall", "wattcap", "--namespace", ns, check=False)
        kubectl(kubeconfig, "delete", "namespace", ns, "--wait=false", check=False)
        _wait_policies_gone(kubeconfig)


# a Job only the operator may make while the chart's admission policies are enforced
_LABELLED_JOB = """apiVersion: batch/v1
kind: Job
metadata: {name: helm-policies-gone, namespace: default, labels: {wattcap.io/trainingjob: x}}
spec:
  suspend: true
  template: {spec: {restartPolicy: Never, containers: [{name: c, image: x}]}}
"""


def _wait_policies_gone(kubeconfig: str, timeout_s: float = 60.0) -> None:
    """The API server drops a deleted ValidatingAdmissionPolicy from what it
    enforces a while after the delete (seconds on a loaded machine): the next
    test, making such a Job itself, was refused by the uninstalled release's
    policy (CI at f608352). Wait until a dry run is let through."""
    deadline = time.monotonic() + timeout_s
    while True:
        res = kubectl(
            kubeconfig, "create", "--dry-run=server", "-f", "-", stdin=_LABELLED_JOB, check=False
        )
        if res.returncode == 0:
            return
        assert time.monotonic() < deadline, f"policies still enforced after uninstall: {res.stderr}"
        time.sleep(0.5)


def _render(*sets: str) -> list[dict]:
    import yaml

    chart = os.environ.get("WATTCAP_CHART", str(ROOT / "charts" / "wattcap"))
    args = [a for s in sets for a in ("--set", s)]
    out = subprocess.run(
        [HELM, "template", "r", chart, "--namespace", "wattcap", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_the_node_agent_renders_with_its_privileges_and_a_read_only_role() -> None:
    """agent.enabled=true: a DaemonSet on GPU nodes with the kubelet's pod-resources
    socket, NVML through the NVIDIA runtime, root with SYS_ADMIN only, and a role
    that reads pods and writes nothing. Off by default."""
    assert not [d for d in _render() if d["kind"] == "DaemonSet"]
    docs = _render("agent.enabled=true")
    [ds] = [d for d in docs if d["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["runtimeClassName"] == "nvidia"
    [c] = pod["containers"]
    assert c["args"][0] == "agent"
    assert "resources" not in c or "nvidia.com/gpu" not in str(c["resources"])
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    sc = c["securityContext"]
    assert sc["runAsUser"] == 0 and not sc["privileged"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["SYS_ADMIN"]}
    [mount] = c["volumeMounts"]
    [vol] = pod["volumes"]
    assert mount["readOnly"] and mount["mountPath"] == "/var/lib/kubelet/pod-resources"
    assert vol["hostPath"]["path"] == "/var/lib/kubelet/pod-resources"
    [role] = [
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "r-wattcap-agent"
    ]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    ]
    [binding] = [
        d
        for d in docs
        if d["kind"] == "ClusterRoleBinding" and d["roleRef"]["name"] == "r-wattcap-agent"
    ]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]
    # The operator's Service must not select the agent's pods.
    [svc] = [d for d in docs if d["kind"] == "Service"]
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert not all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
