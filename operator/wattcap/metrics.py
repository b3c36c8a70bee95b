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

# Every series of a site's loop carries `site` (its PowerPolicy's name): several
# sites in one cluster each decide under their own cap (sites.py).
SITE_POWER = Gauge("wattcap_site_power_watts", "Site power in watts.", ["source", "site"])
CAP = Gauge("wattcap_cap_watts", "Power cap in force now, in watts.", ["site"])
HEADROOM = Gauge(
    "wattcap_headroom_watts", "Usable cap less projected site power, in watts.", ["site"]
)
QUEUE = Gauge("wattcap_queue_jobs", "TrainingJobs waiting, by reason.", ["reason", "site"])
UNMANAGED = Gauge(
    "wattcap_unmanaged_watts",
    "Site power above idle planned for GPU work wattcap does not manage, in watts.",
    ["site"],
)
RUNNING = Gauge("wattcap_running_jobs", "TrainingJobs admitted and not finished.", ["site"])
ADMISSION_LATENCY = Histogram(
    "wattcap_admission_latency_seconds",
    "Time from TrainingJob creation to admission.",
    ["site"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 12 * 3600, 86400),
)
CYCLE_SECONDS = Histogram(
    "wattcap_cycle_duration_seconds",
    "Wall time of one decision cycle.",
    ["site"],
    # 1.5 and 2: the load target (p95 <= 2 s) is read off a bucket bound, not interpolated
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 2.5, 5, 10, 20, 40),
)
FORECAST_ERROR = Gauge(
    "wattcap_forecast_error_ratio",
    "Last finished job's (measured - forecast) / forecast, per class.",
    ["workload_class", "site"],
)
FORECAST_HISTORIES = Gauge(
    "wattcap_forecast_histories",
    "(namespace, workload class) power histories the forecaster keeps (bounded).",
    ["site"],
)
FORECAST_EVICTED = Counter(
    "wattcap_forecast_histories_evicted",
    "Least recently used (namespace, workload class) histories forgotten for the bound.",
    ["site"],
)
PREEMPTIONS = Counter("wattcap_preemptions_total", "Jobs preempted, by reason.", ["reason", "site"])
PROMETHEUS_UP = Gauge(
    "wattcap_prometheus_up", "1 if the last read of measured power worked.", ["site"]
)
# Without it, a site that never set prometheus.url reads as "down" (the gauge starts
# at 0) and pages someone for a reader that does not exist.
PROMETHEUS_CONFIGURED = Gauge(
    "wattcap_prometheus_configured", "1 if the site's PowerPolicy names a Prometheus.", ["site"]
)
ERRORS = Counter(
    "wattcap_errors_total",
    "Errors the site loop caught and carried on from, by step and kind of error.",
    ["step", "kind", "site"],
)
# a share of each cycle's writes refreshes waiting jobs' text (statuswrites.py): how
# many due refreshes the last cycle left for later, so a share too small shows
STATUS_DEFERRED = Gauge(
    "wattcap_status_refreshes_deferred",
    "Due TrainingJob status refreshes (newer text only) the last cycle left for later ones.",
    ["site"],
)
STATUS_FIRSTS_DEFERRED = Gauge(
    "wattcap_status_first_answers_deferred",
    "New waiting TrainingJobs whose first status the last cycle left for later ones.",
    ["site"],
)
ADMIT_PACE = Gauge(
    "wattcap_admission_pace",
    "Admissions the next cycle writes at most, learned from how fast the API server writes.",
    ["site"],
)
LAST_CYCLE = Gauge(
    "wattcap_last_cycle_timestamp_seconds", "When the site loop last completed a cycle.", ["site"]
)
# For alerts (charts/wattcap/templates/prometheusrule.yaml): loop liveness, and
# from the outlook the operator publishes in PowerPolicy status (outlook.py).
PAST_MAX_WAIT = Gauge(
    "wattcap_jobs_past_max_wait", "Waiting TrainingJobs past their maxWait.", ["site"]
)
CAP_DROP_AT = Gauge(
    "wattcap_cap_drop_timestamp_seconds",
    "Unix time of the next cap drop within 24 h (+Inf: none).",
    ["site"],
)
CAP_DROP_CAP = Gauge(
    "wattcap_cap_drop_watts", "Cap from the next cap drop on (NaN: none).", ["site"]
)
CAP_DROP_HEADROOM = Gauge(
    "wattcap_cap_drop_headroom_watts",
    "Over the next cap drop's window: least usable cap less committed (non-preemptible) draw.",
    ["site"],
)

_KNOWN_REASONS: dict[str, set[str]] = {}  # per site: every reason it has reported
# workload classes are named by tenants: only the most recently finished ones
# keep a FORECAST_ERROR series, so /metrics and Prometheus stay bounded
MAX_CLASS_SERIES = 50
_CLASS_SERIES: OrderedDict[tuple[str, str], None] = OrderedDict()
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


def count_error(step: str, kind: str, site: str) -> None:
    """One error the loop survived; `kind` is an exception class name or an HTTP status."""
    ERRORS.labels(step, kind, site).inc()


def record_cycle(dec: Decision, running: int, seconds: float, site: str) -> None:
    """Update gauges from one decision; called once per cycle."""
    SITE_POWER.labels("projected", site).set(dec.projected_site_watts)
    if dec.measured_site_watts is not None:
        SITE_POWER.labels("measured", site).set(dec.measured_site_watts)
    CAP.labels(site).set(dec.cap_watts)
    UNMANAGED.labels(site).set(dec.unmanaged_watts)
    HEADROOM.labels(site).set(dec.effective_cap_watts - dec.projected_site_watts)
    RUNNING.labels(site).set(running)
    counts: dict[str, int] = {}
    for w in dec.waits:
        counts[w.reason] = counts.get(w.reason, 0) + 1
    known = _KNOWN_REASONS.setdefault(site, set())
    known.update(counts)
    for reason in known:
        QUEUE.labels(reason, site).set(counts.get(reason, 0))
    for p in dec.preempts:
        PREEMPTIONS.labels(p.reason, site).inc()
    CYCLE_SECONDS.labels(site).observe(seconds)
    LAST_CYCLE.labels(site).set_to_current_time()


def record_outlook(policy_status: Mapping[str, Any], site: str) -> None:
    """Gauges from the outlook a cycle published, so alerts see the plan ahead."""
    out = policy_status.get("outlook") or {}
    PAST_MAX_WAIT.labels(site).set(out.get("pastMaxWait", 0))
    drop = out.get("nextCapDrop")
    if drop:
        CAP_DROP_AT.labels(site).set(parse_time(drop["at"], "nextCapDrop.at"))
        CAP_DROP_CAP.labels(site).set(drop["capWatts"])
        CAP_DROP_HEADROOM.labels(site).set(drop["headroomWatts"])
    else:
        CAP_DROP_AT.labels(site).set(math.inf)
        CAP_DROP_CAP.labels(site).set(math.nan)
        CAP_DROP_HEADROOM.labels(site).set(math.nan)


def record_forecast_error(workload_class: str, measured: float, forecast: float, site: str) -> None:
    """A finished job's forecast error for its class; the least recently
    finished class's series is dropped once MAX_CLASS_SERIES are kept (all sites together)."""
    with _CLASS_LOCK:
        _CLASS_SERIES[(workload_class, site)] = None
        _CLASS_SERIES.move_to_end((workload_class, site))
        FORECAST_ERROR.labels(workload_class, site).set((measured - forecast) / forecast)
        while len(_CLASS_SERIES) > MAX_CLASS_SERIES:
            old, _ = _CLASS_SERIES.popitem(last=False)
            FORECAST_ERROR.remove(*old)


def forget_site(site: str) -> None:
    """Drop a site's series once its loop stops (its PowerPolicy was deleted):
    a gone site must not keep reporting its last cap, and series stay bounded."""
    for metric in (
        SITE_POWER, CAP, HEADROOM, QUEUE, UNMANAGED, RUNNING, ADMISSION_LATENCY, CYCLE_SECONDS,
        FORECAST_ERROR, FORECAST_HISTORIES, FORECAST_EVICTED, PREEMPTIONS, PROMETHEUS_UP,
        PROMETHEUS_CONFIGURED, ERRORS, STATUS_DEFERRED, STATUS_FIRSTS_DEFERRED, LAST_CYCLE,
        ADMIT_PACE, PAST_MAX_WAIT, CAP_DROP_AT, CAP_DROP_CAP, CAP_DROP_HEADROOM,
    ):  # fmt: skip
        metric.remove_by_labels({"site": site})  # every series of the site, whatever else
    _KNOWN_REASONS.pop(site, None)
    with _CLASS_LOCK:
        for key in [k for k in _CLASS_SERIES if k[1] == site]:
            del _CLASS_SERIES[key]
