"""The integration tier's fixed ports, shifted by WATTCAP_TEST_PORT_OFFSET.

The power stack (Prometheus, the simulated DCGM exporter, the operator's
/metrics) listens on well-known ports so that hack/prometheus.sh's default
config and the dashboards read the same place. Two checkouts running the tier
at once would collide on them; each sets its own offset (the control plane
itself already takes free ports, and its state is per checkout).
"""

from __future__ import annotations

import os

OFFSET = int(os.environ.get("WATTCAP_TEST_PORT_OFFSET", "0"))
PROM = 9090 + OFFSET
PROM_TLS = 9091 + OFFSET
EXPORTER = 9400 + OFFSET
METRICS = 8080 + OFFSET
PROM_URL = f"http://127.0.0.1:{PROM}"


def export_for_scripts() -> None:
    """Point hack/prometheus.sh and hack/demo.sh, run as subprocesses, at the same ports."""
    os.environ.setdefault("PROM_PORT", str(PROM))
    os.environ.setdefault("PROM_EXPORTER_TARGET", f"127.0.0.1:{EXPORTER}")
    os.environ.setdefault("PROM_OPERATOR_TARGET", f"127.0.0.1:{METRICS}")
    os.environ.setdefault("DEMO_EXPORTER_PORT", str(EXPORTER))
    os.environ.setdefault("DEMO_METRICS_PORT", str(METRICS))
