"""The operator's own /metrics, named by Prometheus conventions (base units, _total).

The same port serves the probes of `health.py` (`/healthz`, `/readyz`).
"""

from __future__ import annotations

import math
import socketserver
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app

from .admission import Decision
from .health import LIVENESS, Liveness, health_app
from .model import parse_time

SITE_POWER = Gauge("wattcap_site_power_watts", "Site power in watts.", ["source"])
CAP = Gauge("wattcap_cap_watts", "Power cap in force now, in watts.")
HEADROOM = Gauge("wattcap_headroom_watts", "Usable cap less projected site power, in watts.")
QUEUE = Gauge("wattcap_queue_jobs", "TrainingJobs waiting, by reason.", ["reason"])
UNMANAGED = Gauge(
    "wattcap_unmanaged_watts",
    "Site power above idle planned for GPU work wattcap does not manage, in watts.",
)
RUNNING = Gauge("wattcap_running_jobs", "TrainingJobs admitted and not finished.")
ADMISSION_LATENCY = Histogram(
    "wattcap_admission_latency_seconds",
    "Time from TrainingJob creation to admission.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 86400),
)
CYCLE_SECONDS = Histogram(
    "wattcap_cycle_duration_seconds",
    "Wall time of one decision cycle.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
FORECAST_ERROR = Gauge(
    "wattcap_forecast_error_ratio",
    "Last finished job's (measured - forecast) / forecast, per class.",
    ["workload_class"],
)
PREEMPTIONS = Counter("wattcap_preemptions_total", "Jobs preempted, by reason.", ["reason"])
PROMETHEUS_UP = Gauge("wattcap_prometheus_up", "1 if the last read of measured power worked.")
# Without it, a site that never set prometheus.url reads as "down" (the gauge starts
# at 0) and pages someone for a reader that does not exist.
PROMETHEUS_CONFIGURED = Gauge(
    "wattcap_prometheus_configured", "1 if the governing PowerPolicy names a Prometheus."
)
ERRORS = Counter(
    "wattcap_errors_total",
    "Errors the site loop caught and carried on from, by step and kind of error.",
    ["step", "kind"],
)
LAST_CYCLE = Gauge(
    "wattcap_last_cycle_timestamp_seconds", "When the site loop last completed a cycle."
)
# For alerts (charts/wattcap/templates/prometheusrule.yaml): loop liveness, and
# from the outlook the operator publishes in PowerPolicy status (outlook.py).
PAST_MAX_WAIT = Gauge("wattcap_jobs_past_max_wait", "Waiting TrainingJobs past their maxWait.")
CAP_DROP_AT = Gauge(
    "wattcap_cap_drop_timestamp_seconds", "Unix time of the next cap drop within 24 h (+Inf: none)."
)
CAP_DROP_CAP = Gauge("wattcap_cap_drop_watts", "Cap from the next cap drop on (NaN: none).")
CAP_DROP_HEADROOM = Gauge(
    "wattcap_cap_drop_headroom_watts",
    "Over the next cap drop's window: least usable cap less committed (non-preemptible) draw.",
)

_KNOWN_REASONS: set[str] = set()
# workload classes are named by tenants: only the most recently finished ones
# keep a FORECAST_ERROR series, so /metrics and Prometheus stay bounded
MAX_CLASS_SERIES = 50
_CLASS_SERIES: OrderedDict[str, None] = OrderedDict()
_CLASS_LOCK = threading.Lock()


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Probes every few seconds would flood the operator's log."""


def serve(port: int, liveness: Liveness = LIVENESS, addr: str = "0.0.0.0") -> WSGIServer | None:
    """Expose /metrics, /healthz and /readyz on the port (0 disables); returns the server."""
    if not port:
        return None
    app = health_app(liveness, make_wsgi_app())
    server = make_server(addr, port, app, server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def count_error(step: str, kind: str) -> None:
    """One error the loop survived; `kind` is an exception class name or an HTTP status."""
    ERRORS.labels(step, kind).inc()


def record_cycle(dec: Decision, running: int, seconds: float) -> None:
    """Update gauges from one decision; called once per cycle."""
    SITE_POWER.labels("projected").set(dec.projected_site_watts)
    if dec.measured_site_watts is not None:
        SITE_POWER.labels("measured").set(dec.measured_site_watts)
    CAP.set(dec.cap_watts)
    UNMANAGED.set(dec.unmanaged_watts)
    HEADROOM.set(dec.effective_cap_watts - dec.projected_site_watts)
    RUNNING.set(running)
    counts: dict[str, int] = {}
    for w in dec.waits:
        counts[w.reason] = counts.get(w.reason, 0) + 1
    _KNOWN_REASONS.update(counts)
    for reason in _KNOWN_REASONS:
        QUEUE.labels(reason).set(counts.get(reason, 0))
    for p in dec.preempts:
        PREEMPTIONS.labels(p.reason).inc()
    CYCLE_SECONDS.observe(seconds)
    LAST_CYCLE.set_to_current_time()


def record_outlook(policy_status: Mapping[str, Any]) -> None:
    """Gauges from the outlook a cycle published, so alerts see the plan ahead."""
    out = policy_status.get("outlook") or {}
    PAST_MAX_WAIT.set(out.get("pastMaxWait", 0))
    drop = out.get("nextCapDrop")
    if drop:
        CAP_DROP_AT.set(parse_time(drop["at"], "nextCapDrop.at"))
        CAP_DROP_CAP.set(drop["capWatts"])
        CAP_DROP_HEADROOM.set(drop["headroomWatts"])
    else:
        CAP_DROP_AT.set(math.inf)
        CAP_DROP_CAP.set(math.nan)
        CAP_DROP_HEADROOM.set(math.nan)


def record_forecast_error(workload_class: str, measured: float, forecast: float) -> None:
    """A finished job's forecast error for its class; the least recently
    finished class's series is dropped once MAX_CLASS_SERIES are kept."""
    with _CLASS_LOCK:
        _CLASS_SERIES[workload_class] = None
        _CLASS_SERIES.move_to_end(workload_class)
        FORECAST_ERROR.labels(workload_class).set((measured - forecast) / forecast)
        while len(_CLASS_SERIES) > MAX_CLASS_SERIES:
            old, _ = _CLASS_SERIES.popitem(last=False)
            FORECAST_ERROR.remove(old)
