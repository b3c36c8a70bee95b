"""Every panel of the chart's Grafana dashboard returns data from the real
Prometheus, during a run that exercises what the panels show (admissions,
finished jobs, a preemption). A metric renamed in the operator but not in the
dashboard leaves a panel empty, and this test fails naming it.

Needs the power stack of test_measured_power.py (Prometheus, the simulated
exporter and the operator's /metrics on the ports of ports.py): one run per
checkout and WATTCAP_TEST_PORT_OFFSET.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time

import pytest
from conftest import ROOT
from prometheus_api_client import PrometheusConnect
from test_measured_power import (  # noqa: F401 - fixtures
    PROM_URL,
    measured_job,
    measured_operator,
    phases,
    power_stack,
)
from test_operator import GPU_IDLE, IDLE_W, TDP, apply, set_policy, wait_for

from wattcap.model import format_time

pytestmark = pytest.mark.integration
DASHBOARD = ROOT / "charts" / "wattcap" / "files" / "dashboard.json"
# Grafana's interval variables, as Grafana would fill them for a short range
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "15s", "$__range": "5m"}


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, Grafana's
    variables filled in; an unknown variable is an error, not a skip."""
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets") or []:
            expr = target["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            assert not re.search(r"\$\w+", expr), f"{panel['title']}: unknown variable in {expr}"
            out.append((panel["title"], expr))
    return out


def empty_panels(prom: PrometheusConnect) -> list[str]:
    """Queries that return no finite sample now."""
    empty = []
    for title, expr in panel_queries():
        result = prom.custom_query(expr)
        values = [float(r["value"][1]) for r in result]
        if not any(math.isfinite(v) for v in values):
            empty.append(f"{title}: {expr}")
    return empty


def test_dashboard_panels_are_many_and_each_has_a_query() -> None:
    queries = panel_queries()
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len(queries) >= len(panels) >= 5
    assert all(expr.strip() for _, expr in queries)


@pytest.mark.usefixtures("power_stack", "measured_operator")
def test_every_panel_returns_data_from_the_real_prometheus(crds: str, namespace: str) -> None:
    kc = crds
    cap = IDLE_W + 3 * 8 * (TDP - GPU_IDLE)
    now = time.time()
    window = {  # a cap drop ahead, for the panel of headroom at the next drop
        "name": "later",
        "start": format_time(now + 7200),
        "end": format_time(now + 10800),
        "capWatts": IDLE_W + 500,
    }
    site = {"prometheus": {"url": PROM_URL}, "gracePeriod": "5s", "capSchedule": [window]}
    set_policy(kc, cap, **site)
    # Admission latency is a rate: Prometheus must have scraped this operator
    # once before the admissions, or the first sample it sees already holds
    # them and the rate over the window is 0 (no quantile).
    prom = PrometheusConnect(PROM_URL, disable_ssl=True)
    wait_for(
        "a scrape of this operator's first cycle",
        lambda: bool(prom.custom_query(f"wattcap_last_cycle_timestamp_seconds > {now}")),
        60,
        every=0.5,
    )
    # two short jobs finish (forecast error per class), one preemptible job keeps running
    apply(
        kc,
        [measured_job(f"short-{i}", namespace, 400, 10, "dash") for i in range(2)]
        + [measured_job("long", namespace, 400, 600, "dash-long", pre=True)],
    )
    wait_for(
        "the short jobs to finish",
        lambda: all(phases(kc, namespace).get(f"short-{i}") == "Succeeded" for i in range(2)),
        120,
    )
    wait_for("long to run", lambda: phases(kc, namespace).get("long") == "Running", 60)
    set_policy(kc, IDLE_W + 1000, **site)  # sheds it
    wait_for("long to be preempted", lambda: phases(kc, namespace).get("long") == "Preempted", 60)

    last: list[str] = []

    def all_have_data() -> bool:
        last[:] = empty_panels(prom)
        return not last

    with contextlib.suppress(AssertionError):  # the assert below names the empty panels
        wait_for("every panel to show data", all_have_data, 45)
    assert not last, "dashboard panels without data:\n" + "\n".join(last)
