"""The chart's alerts, as Prometheus will run them: `helm template` renders the
PrometheusRule, `promtool test rules` runs tests/alerts/ against it.

Both tools are needed; a missing one fails the test with what to install
(never a skip: an alert nobody tested is worse than none).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "wattcap"
TESTS = ROOT / "tests" / "alerts"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
ALERTS = {
    "WattcapSiteOverCap",
    "WattcapHeadroomLowBeforeCapDrop",
    "WattcapMeasuredAboveProjection",
    "WattcapForecastErrorOutOfBand",
    "WattcapDecisionLoopStale",
    "WattcapPrometheusUnreadable",
    "WattcapJobsPastMaxWait",
}


def _tool(name: str, cached: Path | None, how: str) -> str:
    found = os.environ.get(f"WATTCAP_{name.upper()}") or shutil.which(name)
    if not found and cached is not None and cached.exists():
        found = str(cached)
    if not found:
        pytest.fail(f"{name} is not on PATH: {how}")
    return found


def helm() -> str:
    return _tool(
        "helm",
        Path.home() / ".cache/wattcap/bin/helm",
        "run hack/install-tools.sh (it builds helm into ~/.cache/wattcap/bin)",
    )


def promtool() -> str:
    return _tool(
        "promtool", None, "install Debian's prometheus package (hack/install-tools.sh does)"
    )


def render(*sets: str) -> list[dict[str, Any]]:
    args = [helm(), "template", "wattcap", str(CHART), "--namespace", "wattcap"]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def rule() -> dict[str, Any]:
    (doc,) = [d for d in render("prometheusRule.enabled=true") if d["kind"] == "PrometheusRule"]
    return doc


def test_the_rules_pass_their_promtool_tests(tmp_path: Path) -> None:
    groups = rule()["spec"]["groups"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    for f in TESTS.glob("*_test.yaml"):
        shutil.copy(f, tmp_path / f.name)
    tests = sorted(p.name for p in tmp_path.glob("*_test.yaml"))
    assert tests, f"no promtool tests in {TESTS}"
    check = subprocess.run(
        [promtool(), "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run(
        [promtool(), "test", "rules", *tests], cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_is_rendered_tested_firing_and_has_a_runbook_entry() -> None:
    rules = [r for g in rule()["spec"]["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == ALERTS
    fired: set[str] = set()
    for f in TESTS.glob("*_test.yaml"):
        for case in yaml.safe_load(f.read_text())["tests"]:
            for t in case.get("alert_rule_test") or []:
                if t.get("exp_alerts"):
                    fired.add(t["alertname"])
    assert fired == ALERTS, f"alerts no test shows firing: {ALERTS - fired}"
    headings = set(re.findall(r"^## (\w+)", RUNBOOKS.read_text(), re.M))
    assert headings >= ALERTS, f"no runbook entry for {ALERTS - headings}"
    for r in rules:
        anchor = r["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor == r["alert"].lower()


def test_the_rule_is_off_unless_asked_for() -> None:
    assert all(d["kind"] != "PrometheusRule" for d in render())
