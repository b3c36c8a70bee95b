"""`make demo` twice changes nothing the first run made; `make demo-down`
twice stops it all. Runs hack/demo.sh on the session's control plane
(DEMO_KEEP_CLUSTER=1 keeps it up for the tests after this one).

Binds Prometheus's, the exporter's and the operator's ports (tests/integration/ports.py):
one run per checkout and WATTCAP_TEST_PORT_OFFSET.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, kget, kubectl

pytestmark = pytest.mark.integration
DEMO = str(ROOT / "hack" / "demo.sh")
STATE = ROOT / ".cluster" / "demo"


def demo(cmd: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEMO_KEEP_CLUSTER": "1"}
    run = subprocess.run([DEMO, cmd], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def pids() -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in STATE.glob("*.pid")}


def alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def snapshot(kc: str) -> dict[str, str]:
    """What a second run must not change: uids and resource versions."""
    out = {}
    pol = kget(kc, "powerpolicy.wattcap.io", "site")["metadata"]
    out["policy"] = pol["uid"]
    out["policy-spec"] = str(kget(kc, "powerpolicy.wattcap.io", "site")["spec"])
    for ns in ("ml", "vision"):
        for t in kget(kc, "trainingjobs.wattcap.io", "-n", ns)["items"]:
            out[f"{ns}/{t['metadata']['name']}"] = t["metadata"]["uid"] + str(t["spec"])
    return out


@pytest.fixture
def clean_site(crds: str) -> Iterator[str]:
    """No PowerPolicy before (the demo creates its own) and none of the demo's
    jobs or policy after, so later tests start from their own."""

    def clean() -> None:
        for ns in ("ml", "vision"):
            kubectl(crds, "delete", "trainingjobs.wattcap.io", "--all", "-n", ns, check=False)
        # kopf's finalizer stays on a policy whose operator is gone: drop it first
        kubectl(
            crds,
            "patch",
            "powerpolicy.wattcap.io",
            "site",
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )
        kubectl(crds, "delete", "powerpolicy.wattcap.io", "site", "--ignore-not-found")

    clean()
    yield crds
    demo("down")
    clean()


def test_demo_up_twice_changes_nothing_and_down_twice_stops_it(clean_site: str) -> None:
    kc = clean_site
    first = demo("up")
    assert "PowerPolicy site: created" in first.stderr
    assert "kubectl wattcap status" in first.stdout and "http://127.0.0.1:" in first.stdout
    started, objects = pids(), snapshot(kc)
    assert set(started) == {"exporter", "operator"} and all(map(alive, started.values()))
    assert len(objects) == 2 + 8  # the policy (uid, spec) and eight TrainingJobs

    second = demo("up")
    for line in ("exporter: already running", "operator: already running", "already up"):
        assert line in second.stderr, line
    assert "PowerPolicy site: exists, kept" in second.stderr
    assert pids() == started
    assert snapshot(kc) == objects

    demo("down")
    assert not any(map(alive, started.values()))
    assert pids() == {}
    demo("down")  # nothing left to stop is not an error
