"""Typed domain objects parsed from the same manifests the cluster stores.

Parsing lives here, not in the handlers or the simulator, so that a bad
manifest gets one error message wherever it is read: the field's path and
why it is wrong, never a traceback. Times inside the core are float epoch
seconds; datetimes exist only at the edges.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

API_GROUP = "wattcap.io"
API_VERSION = "v1alpha1"
API = f"{API_GROUP}/{API_VERSION}"

ORDERINGS = ("PriorityFIFO", "FIFO")
OVERRUN_ACTIONS = ("Stop", "Replan")
# How GPU work wattcap does not manage is planned (spec.unmanaged.planGpusAt):
# at what it measures (TDP while unmeasured), or at a fixed reserve.
UNMANAGED_PLANS = ("Measured", "Reserve")
ADMISSION_MODELS = ("siteChance", "perJobQuantile")  # chance.ADMISSION_MODELS
# Bounds the CRD states too: a period below a second is a hot loop against the
# API server, and no site runs a job on more replicas (one per node) than this.
MIN_CONTROL_PERIOD_S = 1.0
MAX_REPLICAS = 10_000


class ManifestError(ValueError):
    """A manifest field is missing or wrong; `field` is its dotted path."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}")
        self.field = field
        self.why = why


# A TrainingJob's phases, as its status shows them: the controller writes them,
# and the status writes judge by them (what waits, what is done).
QUEUED, ADMITTED, RUNNING = "Queued", "Admitted", "Running"
SUCCEEDED, FAILED, PREEMPTED = "Succeeded", "Failed", "Preempted"
TERMINAL = (SUCCEEDED, FAILED)


def ref_of(obj: Mapping[str, Any]) -> tuple[str, str]:
    """An object's (namespace, name), from any object the API returns or the
    controller builds; one reading, so every map keyed by it agrees."""
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "default")), str(meta.get("name", ""))


# --------------------------------------------------------------------- parsing helpers

_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(value: Any, path: str) -> float:
    """Seconds from an int/float or a Go-style duration string ("90s", "1h30m")."""
    if isinstance(value, bool):
        raise ManifestError(path, f"expected seconds or a duration like '1h30m', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value and (m := _DURATION_RE.match(value.strip())):
        h, mi, s = (float(g) if g else 0.0 for g in m.groups())
        seconds = h * 3600 + mi * 60 + s
    else:
        raise ManifestError(path, f"expected seconds or a duration like '1h30m', got {value!r}")
    if seconds < 0:
        raise ManifestError(path, f"must not be negative, got {value!r}")
    return seconds


def parse_time(value: Any, path: str) -> float:
    """Epoch seconds from an RFC 3339 timestamp (a trailing Z or z, as RFC 3339
    and the CRD's pattern allow)."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ManifestError(
                path, f"expected an RFC 3339 time like 2026-07-01T14:00:00Z, got {value!r}"
            ) from None
    else:
        raise ManifestError(path, f"expected an RFC 3339 time, got {value!r}")
    if dt.tzinfo is None:
        raise ManifestError(path, f"time {value!r} needs a timezone (e.g. a trailing Z)")
    return dt.timestamp()


# A cap-schedule window's start and end (the CRD's pattern, the same text): the
# RFC 3339 form that both Go's time.Parse (the API server's CEL) and Python read,
# upper-case T and Z, year 0001 on, offsets under 24 h. RFC 3339 also allows a
# lower-case t and z, which the API server's CEL cannot read.
WINDOW_TIME_PATTERN = (
    r"^([1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-[0-9]{2}-[0-9]{2}"
    r"T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_WINDOW_TIME_RE = re.compile(WINDOW_TIME_PATTERN)


def parse_window_time(value: Any, path: str) -> float:
    """Epoch seconds of a window edge, in the one form the CRD takes (above)."""
    if isinstance(value, str) and not _WINDOW_TIME_RE.match(value):
        raise ManifestError(
            path,
            f"expected an RFC 3339 time like 2026-07-01T14:00:00Z or "
            f"2026-07-01T16:00:00+02:00 (upper-case T and Z), got {value!r}",
        )
    return parse_time(value, path)


def format_time(epoch_s: float) -> str:
    """RFC 3339 UTC with a Z, the form Kubernetes status fields use (a
    four-digit year always: strftime's %Y writes year 1 as "1" on Linux)."""
    dt = datetime.fromtimestamp(epoch_s, UTC)
    return f"{dt.year:04d}-{dt:%m-%dT%H:%M:%S}Z"


def _number(
    spec: Mapping[str, Any],
    key: str,
    path: str,
    default: float | None = None,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_min: bool = False,
) -> float:
    full = f"{path}.{key}"
    if key not in spec or spec[key] is None:
        if default is None:
            raise ManifestError(full, "is required")
        return float(default)
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ManifestError(full, f"expected a number, got {value!r}")
    value = float(value)
    if minimum is not None and (value <= minimum if exclusive_min else value < minimum):
        sign = ">" if exclusive_min else ">="
        raise ManifestError(full, f"must be {sign} {minimum:g}, got {value:g}")
    if maximum is not None and value > maximum:
        raise ManifestError(full, f"must be <= {maximum:g}, got {value:g}")
    return value


def _integer(
    spec: Mapping[str, Any],
    key: str,
    path: str,
    default: int | None = None,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    full = f"{path}.{key}"
    value = spec.get(key, default)
    if value is None:
        raise ManifestError(full, "is required")
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ManifestError(full, f"expected a whole number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ManifestError(full, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ManifestError(full, f"must be <= {maximum}, got {value}")
    return value


def _boolean(spec: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = spec.get(key, default)
    if not isinstance(value, bool):
        raise ManifestError(f"{path}.{key}", f"expected true or false, got {value!r}")
    return value


def _string(spec: Mapping[str, Any], key: str, path: str, default: str | None = None) -> str:
    value = spec.get(key, default)
    if value is None:
        raise ManifestError(f"{path}.{key}", "is required")
    if not isinstance(value, str):
        raise ManifestError(f"{path}.{key}", f"expected a string, got {value!r}")
    return value


def _mapping(obj: Any, path: str) -> Mapping[str, Any]:
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise ManifestError(path, f"expected a mapping, got {type(obj).__name__}")
    return obj


# --------------------------------------------------------------------- PowerPolicy


@dataclass(frozen=True, slots=True)
class CapWindow:
    """A time window with a lower cap: peak hours or a demand-response event."""

    start_s: float
    end_s: float
    cap_watts: float
    name: str = ""


@dataclass(frozen=True, slots=True)
class PowerLimits:
    """The second lever: per-GPU power limits (throttling), and how far the site lets it go.

    Off by default: a site enables it once a node agent applies the limits. Throttling
    costs the throttled job time (wattcap.powerlimit); preempting costs it its progress
    since the last checkpoint, `preemption_loss_s` assumed, and its stopped time.
    """

    enabled: bool = False
    min_fraction: float = 0.5  # no GPU limited below this fraction of TDP
    max_slowdown: float | None = None  # no job throttled to run slower than this factor
    preemption_loss_s: float = 1800.0


@dataclass(frozen=True, slots=True)
class PowerPolicy:
    """The site's power contract and how wattcap should spend it.

    Defaults here are the CRD's defaults; change them together.
    """

    cap_watts: float
    name: str = "site"
    cap_schedule: tuple[CapWindow, ...] = ()
    pue: float = 1.2
    node_base_watts: float = 800.0
    gpu_idle_watts: float = 70.0
    gpu_tdp_watts: float = 700.0
    safety_margin: float = 0.02
    coverage: float = 0.95
    # How forecasts become a plan (chance.py): the site's draw as one
    # distribution (siteChance), or every job at its own upper quantile.
    admission_model: str = "siteChance"
    # Correlation assumed between the draws of two jobs of one class (siteChance).
    class_correlation: float = 0.3
    ordering: str = "PriorityFIFO"
    backfill: bool = True
    reservation_depth: int = 8
    preemption: bool = True
    control_period_s: float = 15.0
    grace_period_s: float = 60.0
    pods_ready_timeout_s: float = 600.0  # admitted work whose pods are not all ready is requeued
    max_termination_grace_s: float = 120.0  # caps the pods' terminationGracePeriodSeconds
    default_duration_s: float = 3600.0
    max_wait_s: float = 86400.0
    # What tenants declare is bounded by the site: a hint below this fraction
    # of TDP is raised to it, and a maxDelay below the minimum is raised to it
    # (maxDelay: 0 would otherwise put a job ahead of every priority at once).
    hint_floor_fraction: float = 0.5
    min_max_delay_s: float = 3600.0
    # GPU work on the site's nodes that wattcap does not manage (exempt
    # namespaces: inference, another scheduler) is planned at `unmanaged_plan`:
    # "Measured" (its measured draw, TDP while unmeasured, never below the
    # reserve) or "Reserve" (the reserve alone), in site watts above idle.
    unmanaged_reserve_watts: float = 0.0
    unmanaged_plan: str = "Measured"
    # a running job measured above its admission forecast by more than this
    # fraction is shed first when the site must shed
    overdraw_tolerance: float = 0.2
    # a job running past its declared expectedDuration plus overrunGrace is
    # stopped (Stop: the Job's activeDeadlineSeconds) or re-planned as
    # open-ended and, if preemptible, shed first (Replan)
    overrun_action: str = "Stop"
    overrun_grace_s: float = 600.0
    prometheus_url: str | None = None
    site_power_query: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    site_nodes: int | None = None
    site_gpus_per_node: int | None = None
    power_limits: PowerLimits = PowerLimits()
    # jobs that name no site run under this one (sites.py); several sites in one cluster
    default_site: bool = False

    def max_delay_for(self, requested_s: float | None) -> float | None:
        """A job's maxDelay as the policy allows it: never below minMaxDelay."""
        return None if requested_s is None else max(requested_s, self.min_max_delay_s)

    def cap_at(self, t_s: float) -> float:
        """Cap in force at time t: the lowest of the base cap and every open window."""
        return _lowest_cap(self.cap_watts, self.cap_schedule, t_s)

    def effective_cap_at(self, t_s: float) -> float:
        """What admission may plan against: the cap less the safety margin."""
        return self.cap_at(t_s) * (1.0 - self.safety_margin)

    def cap_changes(self, after_s: float, until_s: float) -> list[float]:
        """Times in (after, until) where the cap may change: window edges."""
        edges = {e for w in self.cap_schedule for e in (w.start_s, w.end_s)}
        return sorted(t for t in edges if after_s < t < until_s)

    def active_window(self, t_s: float) -> CapWindow | None:
        """The open window that sets the cap now, if any."""
        best = None
        for w in self.cap_schedule:
            if (
                w.start_s <= t_s < w.end_s
                and w.cap_watts < self.cap_watts
                and (best is None or w.cap_watts < best.cap_watts)
            ):
                best = w
        return best

    def idle_site_watts(self, nodes: int, gpus: int) -> float:
        """Site power with every GPU idle: the floor no schedule can go below."""
        return self.pue * (nodes * self.node_base_watts + gpus * self.gpu_idle_watts)

    def job_site_watts(self, gpus: int, gpu_watts: float) -> float:
        """What a job adds to site power above idle (FORMAT.md's power model)."""
        return self.pue * gpus * (gpu_watts - self.gpu_idle_watts)


# Defaults as values: on a slots dataclass, `PowerPolicy.pue` is a slot
# descriptor, not the default, so parsing (and the CRD tests) read an instance.


def _lowest_cap(base_cap: float, schedule: tuple[CapWindow, ...], t_s: float) -> float:
    cap = base_cap
    for w in schedule:
        if w.start_s <= t_s < w.end_s and w.cap_watts < cap:
            cap = w.cap_watts
    return cap


def cap_steps(
    base_cap: float, schedule: tuple[CapWindow, ...]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The cap as a step function, for callers that look it up often.

    Returns the sorted window edges and the cap in force before, between and
    after them: `caps[k]` holds on [edges[k-1], edges[k]), so the cap at t is
    `caps[bisect_right(edges, t)]`. Between two edges the open windows do not
    change, so the value at an edge holds until the next one.
    """
    edges = tuple(sorted({e for w in schedule for e in (w.start_s, w.end_s)}))
    caps = tuple(_lowest_cap(base_cap, schedule, t) for t in (-math.inf, *edges))
    return edges, caps


DEFAULTS = PowerPolicy(cap_watts=1.0)


def _parse_power_limits(spec: Mapping[str, Any], p: str, tdp: float, idle: float) -> PowerLimits:
    """spec.powerLimits; its floor must stay above the GPU's idle power (CRD: bounds only)."""
    lp = f"{p}.powerLimits"
    raw = _mapping(spec.get("powerLimits"), lp)
    d = PowerLimits()
    frac = _number(raw, "minFraction", lp, d.min_fraction, minimum=0.1, maximum=1.0)
    enabled = _boolean(raw, "enabled", lp, d.enabled)
    if enabled and frac * tdp < idle:
        raise ManifestError(
            f"{lp}.minFraction",
            f"{frac:g} x gpuTdpWatts ({frac * tdp:g} W) is below gpuIdleWatts ({idle:g} W)",
        )
    slow = (
        _number(raw, "maxSlowdown", lp, minimum=1.0, maximum=10.0)
        if raw.get("maxSlowdown") is not None
        else None
    )
    return PowerLimits(
        enabled=enabled,
        min_fraction=frac,
        max_slowdown=slow,
        preemption_loss_s=parse_duration(
            raw.get("preemptionLoss", d.preemption_loss_s), f"{lp}.preemptionLoss"
        ),
    )


def parse_power_policy(obj: Mapping[str, Any]) -> PowerPolicy:
    """Build a PowerPolicy from a manifest (whole object or its spec)."""
    obj = _mapping(obj, "PowerPolicy")
    if "spec" in obj:
        _check_kind(obj, "PowerPolicy")
        name = str(_mapping(obj.get("metadata"), "metadata").get("name", "site"))
        spec = _mapping(obj["spec"], "spec")
    else:
        name, spec = "site", obj
    p = "spec"
    cap = _number(spec, "capWatts", p, minimum=0, exclusive_min=True)
    windows = []
    raw_windows = spec.get("capSchedule") or []
    if not isinstance(raw_windows, list):
        raise ManifestError(f"{p}.capSchedule", "expected a list of {start, end, capWatts}")
    for i, raw in enumerate(raw_windows):
        wp = f"{p}.capSchedule[{i}]"
        raw = _mapping(raw, wp)
        start = parse_window_time(raw.get("start"), f"{wp}.start")
        end = parse_window_time(raw.get("end"), f"{wp}.end")
        if end <= start:
            raise ManifestError(f"{wp}.end", "must be after start")
        wcap = _number(raw, "capWatts", wp, minimum=0, exclusive_min=True)
        windows.append(CapWindow(start, end, wcap, str(raw.get("name", ""))))
    pue = _number(spec, "pue", p, DEFAULTS.pue, minimum=1.0, maximum=3.0)
    base = _number(spec, "nodeBaseWatts", p, DEFAULTS.node_base_watts, minimum=0)
    idle = _number(spec, "gpuIdleWatts", p, DEFAULTS.gpu_idle_watts, minimum=0)
    tdp = _number(spec, "gpuTdpWatts", p, DEFAULTS.gpu_tdp_watts, minimum=0, exclusive_min=True)
    if tdp < idle:
        raise ManifestError(f"{p}.gpuTdpWatts", f"must be >= gpuIdleWatts ({idle:g}), got {tdp:g}")
    margin = _number(spec, "safetyMargin", p, DEFAULTS.safety_margin, minimum=0, maximum=0.5)
    coverage = _number(spec, "coverageTarget", p, DEFAULTS.coverage, minimum=0.5, maximum=0.9999)
    ordering = _string(spec, "ordering", p, DEFAULTS.ordering)
    admission_model = _string(spec, "admissionModel", p, DEFAULTS.admission_model)
    if admission_model not in ADMISSION_MODELS:
        raise ManifestError(
            f"{p}.admissionModel",
            f"must be one of {', '.join(ADMISSION_MODELS)}, got {admission_model!r}",
        )
    rho = _number(spec, "classCorrelation", p, DEFAULTS.class_correlation, minimum=0, maximum=1)
    if ordering not in ORDERINGS:
        raise ManifestError(
            f"{p}.ordering", f"must be one of {', '.join(ORDERINGS)}, got {ordering!r}"
        )
    prom = _mapping(spec.get("prometheus"), f"{p}.prometheus")
    unmanaged = _mapping(spec.get("unmanaged"), f"{p}.unmanaged")
    plan_at = _string(unmanaged, "planGpusAt", f"{p}.unmanaged", DEFAULTS.unmanaged_plan)
    if plan_at not in UNMANAGED_PLANS:
        raise ManifestError(
            f"{p}.unmanaged.planGpusAt",
            f"must be one of {', '.join(UNMANAGED_PLANS)}, got {plan_at!r}",
        )
    selector = _mapping(spec.get("nodeSelector"), f"{p}.nodeSelector")
    site = _mapping(spec.get("site"), f"{p}.site")
    site_nodes = _integer(site, "nodes", f"{p}.site", minimum=1) if "nodes" in site else None
    site_gpn = (
        _integer(site, "gpusPerNode", f"{p}.site", minimum=0) if "gpusPerNode" in site else None
    )
    policy = PowerPolicy(
        cap_watts=cap,
        name=name,
        cap_schedule=tuple(windows),
        pue=pue,
        node_base_watts=base,
        gpu_idle_watts=idle,
        gpu_tdp_watts=tdp,
        safety_margin=margin,
        coverage=coverage,
        admission_model=admission_model,
        class_correlation=rho,
        ordering=ordering,
        backfill=_boolean(spec, "backfill", p, DEFAULTS.backfill),
        reservation_depth=_integer(
            spec, "reservationDepth", p, DEFAULTS.reservation_depth, minimum=0, maximum=1000
        ),
        preemption=_boolean(spec, "preemption", p, DEFAULTS.preemption),
        control_period_s=parse_duration(
            spec.get("controlPeriod", DEFAULTS.control_period_s), f"{p}.controlPeriod"
        ),
        grace_period_s=parse_duration(
            spec.get("gracePeriod", DEFAULTS.grace_period_s), f"{p}.gracePeriod"
        ),
        pods_ready_timeout_s=parse_duration(
            spec.get("podsReadyTimeout", DEFAULTS.pods_ready_timeout_s), f"{p}.podsReadyTimeout"
        ),
        max_termination_grace_s=parse_duration(
            spec.get("maxTerminationGracePeriod", DEFAULTS.max_termination_grace_s),
            f"{p}.maxTerminationGracePeriod",
        ),
        default_duration_s=parse_duration(
            spec.get("defaultJobDuration", DEFAULTS.default_duration_s),
            f"{p}.defaultJobDuration",
        ),
        max_wait_s=parse_duration(spec.get("maxWait", DEFAULTS.max_wait_s), f"{p}.maxWait"),
        hint_floor_fraction=_number(
            spec, "hintFloorFraction", p, DEFAULTS.hint_floor_fraction, minimum=0, maximum=1
        ),
        min_max_delay_s=parse_duration(
            spec.get("minMaxDelay", DEFAULTS.min_max_delay_s), f"{p}.minMaxDelay"
        ),
        unmanaged_reserve_watts=_number(
            unmanaged, "reserveWatts", f"{p}.unmanaged", DEFAULTS.unmanaged_reserve_watts, minimum=0
        ),
        unmanaged_plan=plan_at,
        overrun_action=_string(spec, "overrunAction", p, DEFAULTS.overrun_action),
        overrun_grace_s=parse_duration(
            spec.get("overrunGrace", DEFAULTS.overrun_grace_s), f"{p}.overrunGrace"
        ),
        overdraw_tolerance=_number(
            spec, "overdrawTolerance", p, DEFAULTS.overdraw_tolerance, minimum=0, maximum=10
        ),
        prometheus_url=prom.get("url") or None,
        site_power_query=prom.get("sitePowerQuery") or None,
        node_selector={str(k): str(v) for k, v in selector.items()},
        site_nodes=site_nodes,
        site_gpus_per_node=site_gpn,
        power_limits=_parse_power_limits(spec, p, tdp, idle),
        default_site=_boolean(spec, "defaultSite", p, False),
    )
    if policy.overrun_action not in OVERRUN_ACTIONS:
        raise ManifestError(
            f"{p}.overrunAction",
            f"must be one of {', '.join(OVERRUN_ACTIONS)}, got {policy.overrun_action!r}",
        )
    if policy.control_period_s < MIN_CONTROL_PERIOD_S:
        raise ManifestError(
            f"{p}.controlPeriod",
            f"must be at least {MIN_CONTROL_PERIOD_S:g}s, got {policy.control_period_s:g}s",
        )
    if site_nodes is not None and site_gpn is not None:
        validate_cap_against_site(policy, site_nodes, site_nodes * site_gpn, path=p)
    return policy


def validate_cap_against_site(
    policy: PowerPolicy, nodes: int, gpus: int, path: str = "spec"
) -> None:
    """Refuse a cap the site cannot meet even with every GPU idle."""
    idle = policy.idle_site_watts(nodes, gpus)
    if policy.cap_watts < idle:
        raise ManifestError(
            f"{path}.capWatts",
            f"cap {policy.cap_watts:g} W is below the site's idle power {idle:g} W "
            f"({nodes} nodes, {gpus} GPUs, PUE {policy.pue:g})",
        )
    for i, w in enumerate(policy.cap_schedule):
        if w.cap_watts < idle:
            raise ManifestError(
                f"{path}.capSchedule[{i}].capWatts",
                f"cap {w.cap_watts:g} W is below the site's idle power {idle:g} W",
            )


def _check_kind(obj: Mapping[str, Any], kind: str) -> None:
    if obj.get("kind", kind) != kind:
        raise ManifestError("kind", f"expected {kind}, got {obj.get('kind')!r}")
    api = obj.get("apiVersion", API)
    if api != API:
        raise ManifestError("apiVersion", f"expected {API}, got {api!r}")


# --------------------------------------------------------------------- TrainingJob


@dataclass(frozen=True, slots=True)
class TrainingJobSpec:
    """What a user asked for; the operator's view of one TrainingJob."""

    name: str
    namespace: str
    replicas: int
    gpus_per_replica: int
    # As written: `priority` only lowers a job within its PriorityClass
    # (`priorities.job_priority` resolves the number the core sees).
    priority: int | None = None
    priority_class_name: str | None = None
    workload_class: str = "default"
    preemptible: bool = False
    gpu_watts_hint: float | None = None
    expected_duration_s: float | None = None
    max_delay_s: float | None = None
    template: Mapping[str, Any] = field(default_factory=dict)
    site: str | None = None  # the PowerPolicy it runs under (sites.py); None: the default

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def gpus(self) -> int:
        return self.replicas * self.gpus_per_replica


SYSTEM_CLASS = (
    "system-* PriorityClasses are for cluster components; name a class marked for wattcap"
)


def _priority_class_name(spec: Mapping[str, Any], path: str) -> str | None:
    """The PriorityClass a job names; the cluster's own system classes never
    (the CRD refuses them too: its CEL rule carries the same message)."""
    name = _string(spec, "priorityClassName", path, "") or None
    if name is not None and name.startswith("system-"):
        raise ManifestError(f"{path}.priorityClassName", SYSTEM_CLASS)
    return name


def parse_training_job(obj: Mapping[str, Any]) -> TrainingJobSpec:
    """Build a TrainingJobSpec from a whole TrainingJob object."""
    obj = _mapping(obj, "TrainingJob")
    _check_kind(obj, "TrainingJob")
    meta = _mapping(obj.get("metadata"), "metadata")
    spec = _mapping(obj.get("spec"), "spec")
    p = "spec"
    hint = spec.get("gpuWattsHint")
    return TrainingJobSpec(
        name=_string(meta, "name", "metadata"),
        namespace=_string(meta, "namespace", "metadata", "default"),
        replicas=_integer(spec, "replicas", p, 1, minimum=1, maximum=MAX_REPLICAS),
        gpus_per_replica=_integer(spec, "gpusPerReplica", p, minimum=1),
        priority=None if spec.get("priority") is None else _integer(spec, "priority", p),
        priority_class_name=_priority_class_name(spec, p),
        workload_class=_string(spec, "workloadClass", p, "default") or "default",
        preemptible=_boolean(spec, "preemptible", p, False),
        gpu_watts_hint=None
        if hint is None
        else _number(spec, "gpuWattsHint", p, minimum=0, exclusive_min=True),
        expected_duration_s=(
            None
            if spec.get("expectedDuration") is None
            else parse_duration(spec["expectedDuration"], f"{p}.expectedDuration")
        ),
        max_delay_s=(
            None
            if spec.get("maxDelay") is None
            else parse_duration(spec["maxDelay"], f"{p}.maxDelay")
        ),
        template=_mapping(spec.get("template"), f"{p}.template"),
        site=_string(spec, "site", p, "") or None,
    )
