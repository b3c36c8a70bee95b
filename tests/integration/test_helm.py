"""`helm install` of charts/wattcap into the real control plane, as a platform team would."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, kget, kubectl

pytestmark = pytest.mark.integration
HELM = os.environ.get("WATTCAP_HELM", str(Path.home() / ".cache/wattcap/bin/helm"))


def helm(kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HELM, "--kubeconfig", kubeconfig, *args], capture_output=True, text=True, check=True
    )


def test_chart_installs_and_uninstalls(kubeconfig: str) -> None:
    ns = "wattcap-helm-test"
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
            "--wait=false",
        )
        deploy = kget(kubeconfig, "deployment", "-n", ns, "-l", "app.kubernetes.io/name=wattcap")[
            "items"
        ]
        assert len(deploy) == 1
        container = deploy[0]["spec"]["template"]["spec"]["containers"][0]
        assert "operator" in container["args"] or "operator" in container.get("command", [])
        sa = deploy[0]["spec"]["template"]["spec"]["serviceAccountName"]
        crds = {c["metadata"]["name"] for c in kget(kubeconfig, "crd")["items"]}
        assert {"trainingjobs.wattcap.io", "powerpolicies.wattcap.io"} <= crds
        # least privilege, checked by the API server's own authorizer
        who = f"system:serviceaccount:{ns}:{sa}"

        def can_i(verb: str, resource: str) -> str:
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
    finally:
        subprocess.run(
            [HELM, "--kubeconfig", kubeconfig, "uninstall", "wattcap", "--namespace", ns],
            capture_output=True,
            text=True,
        )
