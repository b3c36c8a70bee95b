"""The operator reads a real Prometheus served over TLS, and nothing else (issue #14).

A Prometheus (the Debian binary, as hack/prometheus.sh runs it) serves
HTTPS on localhost:9091 with a certificate from a CA this module makes with
openssl, and scrapes the simulated DCGM exporter. The operator is started
with that CA, a token file and an allow-list naming only localhost:9091:

- it measures the site through TLS;
- with another CA it fails safe: Measured=False, no measured power;
- a PowerPolicy editor who points spec.prometheus.url at an internal host
  (here a recording HTTP server on 127.0.0.1) gets a condition naming the
  field, and the operator never sends it a request.

Same site as test_operator.py (8 x 8 GPUs, idle 8.48 kW, PUE 1.0).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import ports
import pytest
import requests
from conftest import OperatorProcess, kget, kubectl
from test_operator import IDLE_W, set_policy, wait_for

from wattcap.model import parse_time

pytestmark = pytest.mark.integration
PORT = ports.PROM_TLS
URL = f"https://localhost:{PORT}"
EDITOR = "policy-editor-carol"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(d: Path, name: str) -> tuple[Path, Path]:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-keyout", str(key), "-out", str(crt), "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return key, crt


def make_server_cert(d: Path, ca_key: Path, ca_crt: Path) -> tuple[Path, Path]:
    key, csr, crt, ext = d / "server.key", d / "server.csr", d / "server.crt", d / "ext.cnf"
    ext.write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=localhost",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "1", "-out", str(crt), "-extfile", str(ext),
    )  # fmt: skip
    return key, crt


@pytest.fixture(scope="module")
def tls_stack(crds: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The exporter, and Prometheus scraping it, serving HTTPS with our CA's certificate."""
    d = tmp_path_factory.mktemp("tls")
    ca_key, ca_crt = make_ca(d, "wattcap-test-ca")
    _, other_ca = make_ca(d, "some-other-ca")
    key, crt = make_server_cert(d, ca_key, ca_crt)
    (d / "web.yml").write_text(f"tls_server_config:\n  cert_file: {crt}\n  key_file: {key}\n")
    (d / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: dcgm-exporter\n    honor_labels: true\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{ports.EXPORTER}']\n"
    )
    token = d / "token"
    token.write_text("not-checked-by-prometheus\n")
    prom_bin = os.environ.get("PROMETHEUS") or shutil.which("prometheus")
    assert prom_bin, "prometheus is not on PATH: hack/install-tools.sh installs it"
    logs = open(d / "stack.log", "wb")  # noqa: SIM115
    exporter = subprocess.Popen(
        [sys.executable, "-m", "wattcap.cli", "sim", "exporter", "--kubeconfig", crds,
         "--port", str(ports.EXPORTER), "--interval", "1"],
        stdout=logs, stderr=subprocess.STDOUT,
    )  # fmt: skip
    prom = subprocess.Popen(
        [prom_bin, f"--config.file={d / 'prometheus.yml'}", f"--web.config.file={d / 'web.yml'}",
         f"--web.listen-address=127.0.0.1:{PORT}", f"--storage.tsdb.path={d / 'data'}"],
        stdout=logs, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def series() -> int:
        try:
            r = requests.get(
                f"{URL}/api/v1/query",
                params={"query": "DCGM_FI_DEV_POWER_USAGE"},
                verify=str(ca_crt),
                timeout=2,
            )
            return len(r.json()["data"]["result"])
        except (requests.RequestException, ValueError, KeyError):
            return 0

    try:
        wait_for("exporter series in the TLS Prometheus", lambda: series() >= 64, 90)
        # plain HTTP is not served: the operator can only have read it through TLS
        with pytest.raises(requests.RequestException):
            requests.get(f"http://localhost:{PORT}/api/v1/query?query=up", timeout=2).json()
        yield {"ca": ca_crt, "other_ca": other_ca, "token": token}
    finally:
        prom.terminate()
        exporter.terminate()
        prom.wait(15)
        exporter.wait(15)


def operator_with(kc: str, tmp: Path, ca: Path, token: Path) -> tuple[OperatorProcess, float]:
    """The operator with these flags, and (whole seconds) when it started."""
    args = ["--prometheus-allowed-host", f"localhost:{PORT}", "--prometheus-ca-file", str(ca)]
    op = OperatorProcess(
        kc, tmp / "operator.log", args=[*args, "--prometheus-token-file", str(token)]
    )
    started = float(int(time.time()))
    op.start()
    return op, started


def measured(kc: str, since: float = 0.0) -> dict[str, Any]:
    """The Measured condition, once a cycle at or after `since` wrote it (an
    earlier test's operator may have left the policy's status behind)."""
    st = kget(kc, "powerpolicy.wattcap.io", "site").get("status") or {}
    if since and parse_time(st.get("lastCycle") or "1970-01-01T00:00:00Z", "lastCycle") < since:
        return {}
    return next((c for c in st.get("conditions") or [] if c["type"] == "Measured"), {})


def policy_status(kc: str) -> dict[str, Any]:
    return kget(kc, "powerpolicy.wattcap.io", "site").get("status") or {}


def test_the_operator_measures_the_site_through_tls_with_its_ca(
    tls_stack: dict[str, Any], crds: str, tmp_path: Path
) -> None:
    kc = crds
    set_policy(kc, IDLE_W * 2, prometheus={"url": URL})
    op, t0 = operator_with(kc, tmp_path, tls_stack["ca"], tls_stack["token"])
    try:
        wait_for("Measured=True", lambda: measured(kc, t0).get("status") == "True", 60, every=0.5)
        got = policy_status(kc)["measuredWatts"]
        # idle 8.48 kW, or more where an earlier test's pods are still stopping
        assert 0.95 * IDLE_W <= got <= IDLE_W * 2, got
    finally:
        op.stop()
        print((tmp_path / "operator.log").read_text()[-3000:])


def test_a_wrong_ca_fails_safe(tls_stack: dict[str, Any], crds: str, tmp_path: Path) -> None:
    """Prometheus's certificate does not verify against the CA given: no
    reading is trusted, the policy says so, and nothing is planned on it."""
    kc = crds
    set_policy(kc, IDLE_W * 2, prometheus={"url": URL})
    op, t0 = operator_with(kc, tmp_path, tls_stack["other_ca"], tls_stack["token"])
    try:
        wait_for(
            "Measured=False",
            lambda: measured(kc, t0).get("reason") == "PrometheusUnavailable",
            60,
            every=0.5,
        )
        cond = measured(kc)
        assert cond["status"] == "False" and "SSL" in cond["message"], cond
        time.sleep(3)  # a few more cycles (controlPeriod 2s): it stays unmeasured
        st = policy_status(kc)
        assert st.get("measuredWatts") is None, st
        assert measured(kc)["status"] == "False"
    finally:
        op.stop()
        print((tmp_path / "operator.log").read_text()[-3000:])


class _Recorder(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"status":"success","data":{"resultType":"vector","result":[]}}')

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def internal_service() -> Iterator[ThreadingHTTPServer]:
    """An internal HTTP service the operator can reach, recording every request."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    srv.hits = []  # type: ignore[attr-defined]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()


@pytest.fixture
def policy_editor(crds: str) -> Iterator[str]:
    """A user who may edit PowerPolicies and nothing else."""
    rules = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "test-powerpolicy-editor"},
        "rules": [
            {
                "apiGroups": ["wattcap.io"],
                "resources": ["powerpolicies"],
                "verbs": ["get", "list", "watch", "patch", "update"],
            }
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "test-powerpolicy-editor"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "test-powerpolicy-editor",
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": EDITOR}],
    }
    kubectl(crds, "apply", "-f", "-", stdin=json.dumps({"kind": "List", "apiVersion": "v1",
                                                         "items": [rules, binding]}))  # fmt: skip
    yield EDITOR
    kubectl(crds, "delete", "clusterrolebinding,clusterrole", "test-powerpolicy-editor",
            check=False)  # fmt: skip


def test_a_policy_editor_cannot_point_the_operator_at_an_internal_host(
    tls_stack: dict[str, Any],
    crds: str,
    tmp_path: Path,
    internal_service: ThreadingHTTPServer,
    policy_editor: str,
) -> None:
    kc = crds
    set_policy(kc, IDLE_W * 2, prometheus={"url": URL})
    op, t0 = operator_with(kc, tmp_path, tls_stack["ca"], tls_stack["token"])
    try:
        wait_for("Measured=True", lambda: measured(kc, t0).get("status") == "True", 60, every=0.5)
        target = f"http://127.0.0.1:{internal_service.server_address[1]}"
        patch = json.dumps({"spec": {"prometheus": {"url": target}}})
        res = kubectl(
            kc, f"--as={policy_editor}", "patch", "powerpolicy.wattcap.io", "site",
            "--type=merge", "-p", patch, check=False,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr  # the edit itself is the editor's right
        wait_for(
            "the URL refused",
            lambda: measured(kc).get("reason") == "PrometheusURLRefused",
            30,
            every=0.5,
        )
        cond = measured(kc)
        assert cond["status"] == "False", cond
        assert cond["message"].startswith("spec.prometheus.url host '127.0.0.1'"), cond
        time.sleep(4)  # a few more cycles at the 2 s control period
        assert internal_service.hits == [], internal_service.hits  # type: ignore[attr-defined]
        assert policy_status(kc).get("measuredWatts") is None
    finally:
        op.stop()
        print((tmp_path / "operator.log").read_text()[-3000:])


def _export(kc: str, tmp: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wattcap.cli", "history", "export", "--kubeconfig", kc,
         "--prometheus", URL, "--since", "1h", "--out", str(tmp / "trace.csv"), *flags],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_history_export_reads_the_tls_prometheus_with_the_operators_ca_and_token(
    tls_stack: dict[str, Any], crds: str, tmp_path: Path
) -> None:
    """`wattcap history export` reaches the same Prometheus the operator does:
    with its CA bundle and token it exports; with another CA it stops with one
    line that names the URL, instead of writing an empty trace as if there were
    no history."""
    ok = _export(crds, tmp_path, "--prometheus-ca-file", str(tls_stack["ca"]),
                 "--prometheus-token-file", str(tls_stack["token"]))  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "exported" in ok.stderr, ok.stderr
    assert (tmp_path / "trace.csv").read_text().startswith("job_id,"), ok.stderr
    bad = _export(crds, tmp_path, "--prometheus-ca-file", str(tls_stack["other_ca"]))
    assert bad.returncode != 0, bad.stderr
    assert URL in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
