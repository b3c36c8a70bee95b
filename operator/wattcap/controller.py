"""One operator cycle as a pure function: cluster objects in, a plan of writes out.

The cluster is the only state: a batch Job owned by a TrainingJob means the
job was admitted (suspended: preempted), and its `wattcap.io/placement`
annotation says where. Status fields are a report for users, never an input
the cycle relies on, so an operator killed between two writes rebuilds the
same picture on restart and never admits a job twice.

Kubernetes I/O lives in `cluster.py`; this module only reads plain dicts (the
API's JSON) and returns what to write, so it is tested without a cluster.
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from .admission import (
    HORIZON_S,
    PREEMPT_MEASURED,
    SHEDDING_LOAD,
    UNSCHEDULABLE,
    WAITING_FOR_CAP_WINDOW,
    WAITING_FOR_GPUS,
    WAITING_FOR_HIGHER_PRIORITY,
    WAITING_FOR_POWER,
    Decision,
    NodeState,
    QueuedJob,
    RunningJob,
    Snapshot,
    Wait,
    decide,
    fmt_watts,
    over_cap_since,
    overdraws,
)
from .chance import SITE_CHANCE
from .enforcement import CONFIRMED, PENDING, UNCONFIRMED, Verdict, expired, judge
from .forecast import (
    WARMUP_S,
    Forecaster,
    PowerForecast,
    steady_samples,
    working_samples,
)
from .jobs import (
    ANN_ADMITTED,
    ANN_FORECAST,
    ANN_GPU_LIMIT,
    ANN_PLACEMENT,
    GPU,
    LABEL_TJ,
    build_job,
    job_name,
    resume_patch,
)
from .jobs import get_path as _get
from .model import (
    ADMITTED,
    API,
    FAILED,
    PREEMPTED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    ManifestError,
    PowerPolicy,
    TrainingJobSpec,
    format_time,
    parse_time,
    parse_training_job,
    ref_of,
)
from .outlook import outlook
from .podtemplate import validate_template
from .priorities import PriorityClass, fallback_priority, job_priority
from .telemetry import Reading
from .throttling import (
    annotation_patches,
    grace_period_condition,
    job_limit_report,
    pod_limits,
    policy_limits_condition,
    running_pods,
)
from .unmanaged import unmanaged_load


@dataclass(slots=True)
class SiteState:
    """What one cycle reads from the cluster (API JSON as dicts)."""

    policy: PowerPolicy
    nodes: list[dict[str, Any]]
    pods: list[dict[str, Any]]  # non-terminal pods bound to nodes
    trainingjobs: list[dict[str, Any]]
    jobs: dict[tuple[str, str], dict[str, Any]]  # (namespace, TrainingJob name) -> owned Job
    reading: Reading | None = None  # None: no Prometheus configured
    # the cluster's PriorityClasses by name (`priorities.parse_priority_classes`)
    priority_classes: Mapping[str, PriorityClass] = field(default_factory=dict)


MAX_SAMPLES = 720
# How many admissions a cycle writes (`_pace`) follows how fast the API server
# took the last cycles' writes (`next_admit_pace`): a site loop starts at
# ADMITS_PER_CYCLE, then aims a cycle's admissions at ADMIT_WRITES_S of writes,
# each WRITES_PER_ADMISSION writes (the Job, its status and Event, and its status
# again once it runs). A fixed 32 kept a 2-core control plane's burst cycles
# at 1.6 to 2.2 s (bench/load.py, issue 15), where a faster one could take more;
# 0.8 s still left a tenth of them near 2 s, beside the reads and the decision.
ADMITS_PER_CYCLE = 32
ADMIT_PACE_MIN, ADMIT_PACE_MAX = 4, 512
ADMIT_WRITES_S = 0.6
WRITES_PER_ADMISSION = 4
# a cycle with fewer writes says little about the API server's rate (one slow
# write is its latency, not its throughput): the pace stays
PACE_MIN_WRITES = 16
PACED = "AdmissionPaced"  # the wait reason of an admission left for the next cycle
MAX_FINISHED = 100  # finished jobs' (class, measured, forecast) awaiting the metrics step


@dataclass(slots=True)
class Plan:
    """The writes one cycle wants, in the order they are safe to apply."""

    suspend_jobs: list[tuple[str, str]] = field(default_factory=list)
    delete_jobs: list[tuple[str, str, str | None]] = field(default_factory=list)  # ns, name, uid
    create_jobs: list[dict[str, Any]] = field(default_factory=list)
    resume_jobs: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    # (namespace, Job name) -> the TrainingJob each Job write is for, and that object
    job_refs: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    job_tjs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    tj_status: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    policy_status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[dict[str, Any], str, str, str]] = field(default_factory=list)
    paced: int = 0  # admissions the decision made that the next cycle writes (`_pace`)
    decision: Decision | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)  # (step, error kind)
    # (namespace, pod, annotations merge patch): GPU power limits asked or released
    pod_patches: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    # per waiting job's status (`_plan_wait`): a key equal across cycles only while the
    # status (but for its conditions' transition times) and the TrainingJob it is
    # compared with (uid, resourceVersion) are; StatusWrites keeps its verdict under it.
    # A step that replaces such a status drops its key.
    status_keys: dict[tuple[str, str], Hashable] = field(default_factory=dict)


@dataclass(slots=True)
class ControllerMemory:
    """What the operator keeps between cycles; all of it can be lost safely."""

    forecaster: Forecaster
    over_cap_since_s: float | None = None
    observed: set[str] = field(default_factory=set)  # uids of finished jobs already learned
    # per TrainingJob: (time, mean per-GPU watts) from each good reading
    samples: dict[tuple[str, str], list[tuple[float, float]]] = field(default_factory=dict)
    believed: dict[tuple[str, str], float] = field(default_factory=dict)
    finished: list[tuple[str, float, float]] = field(default_factory=list)  # class, measured, fc
    measuring: bool | None = None  # last cycle's reading was good (None: not configured)
    # per TrainingJob whose Job write failed: (failures in a row, retry not before)
    backoff: dict[tuple[str, str], tuple[int, float]] = field(default_factory=dict)
    period_s: float = 15.0
    # how long the last cycle took from its start to its last write (the loop measures
    # it): the next cycle's writes land that much after its start, so a limit's
    # fallback looks that much further ahead (`_fallback_lead`)
    cycle_s: float = 0.0
    # admissions written a cycle at most (`_pace`), learned from the writes' rate
    admit_pace: int = ADMITS_PER_CYCLE
    # per TrainingJob: (uid, generation) whose pod template passed validation
    valid_templates: dict[tuple[str, str], tuple[Any, Any]] = field(default_factory=dict)
    # per TrainingJob: (uid, generation) and the spec parsed from that version (`_parsed`);
    # an unchanged spec is not parsed again (a big site's cycle spent a fifth of its
    # bookkeeping there: bench/bench_cycle.py)
    parsed: dict[tuple[str, str], tuple[tuple[Any, Any], TrainingJobSpec]] = field(
        default_factory=dict
    )
    # per TrainingJob: that parsed spec and its copy at the priority resolved from its
    # class (`_resolved`); and per TrainingJob and time field, the text and the time
    # parsed from it (`_time_of`): an unchanged job is not copied or parsed again
    resolved: dict[tuple[str, str], tuple[TrainingJobSpec, TrainingJobSpec]] = field(
        default_factory=dict
    )
    times: dict[tuple[tuple[str, str], str], tuple[str, float | None]] = field(default_factory=dict)
    # per running TrainingJob: since when its GPU power limit is due and not confirmed;
    # those not confirmed within the grace period (the nodes), and of those the ones
    # whose nodes' agents had gone silent (lifted once those report again)
    limit_pending: dict[tuple[str, str], float] = field(default_factory=dict)
    limit_failed: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    limit_lost: set[tuple[str, str]] = field(default_factory=set)
    # per running TrainingJob: when a limit was last asked of its pods (the cycle), and
    # the last sample of the gauge that showed its ask in force: its grace counts from
    # the later of the two (enforcement.py)
    limit_asked: dict[tuple[str, str], float] = field(default_factory=dict)
    limit_seen: dict[tuple[str, str], float] = field(default_factory=dict)
    # per GPU node: since when it reports no enforced limit for all its GPUs (no agent),
    # counted from the last sample in which it did
    node_silent: dict[str, float] = field(default_factory=dict)
    node_seen: dict[str, float] = field(default_factory=dict)


def _ts(obj: Mapping[str, Any], *path: str) -> float | None:
    cur: Any = obj
    for p in path:
        if not isinstance(cur, Mapping) or p not in cur:
            return None
        cur = cur[p]
    if not cur:
        return None
    try:
        return parse_time(cur, ".".join(path))
    except ManifestError:
        return None


def _time_of(
    mem: ControllerMemory, ref: tuple[str, str], name: str, obj: Mapping[str, Any], *path: str
) -> float | None:
    """`_ts(obj, *path)`, parsed again only when its text changed: kept per TrainingJob
    and `name`, with the text it was parsed from (compared every time: never stale)."""
    raw = _get(obj, *path)
    if not isinstance(raw, str):
        return _ts(obj, *path)
    key = (ref, name)
    kept = mem.times.get(key)
    if kept is not None and kept[0] == raw:
        return kept[1]
    value = _ts(obj, *path)
    mem.times[key] = (raw, value)
    return value


def _quantity_int(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _job_condition(job: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def node_states(state: SiteState, held: Mapping[str, int]) -> list[NodeState]:
    """GPU nodes of the site with what is free: allocatable less bound pods less
    GPUs held by admitted wattcap jobs (whose pods may not be bound yet)."""
    used: dict[str, int] = {}
    for pod in state.pods:
        if LABEL_TJ in ((pod.get("metadata") or {}).get("labels") or {}):
            continue  # counted through its TrainingJob's placement
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            continue
        for c in (pod.get("spec") or {}).get("containers") or []:
            req = ((c.get("resources") or {}).get("requests") or {}).get(GPU)
            used[node] = used.get(node, 0) + _quantity_int(req or 0)
    out = []
    for node in state.nodes:
        name = node["metadata"]["name"]
        total = _quantity_int(((node.get("status") or {}).get("allocatable") or {}).get(GPU, 0))
        if total <= 0:
            continue
        schedulable = not (node.get("spec") or {}).get("unschedulable") and _ready(node)
        free = total - used.get(name, 0) - held.get(name, 0)
        out.append(NodeState(name, total, max(0, free) if schedulable else 0))
    return out


def _ready(node: Mapping[str, Any]) -> bool:
    for c in (node.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def _forecast_status(fc: PowerForecast, gpus: int, duration_s: float) -> dict[str, Any]:
    """The forecast a job is admitted with, as its Job's annotation and its
    status show it: `gpuWatts` is the per-job bound (what overdraw and the
    calibration compare the measured draw with); a distribution (siteChance)
    adds its mean and spread, which the plan of the running job starts from."""
    job_w = fc.calibrated_gpu_watts * gpus
    out = {
        "gpuWatts": round(fc.calibrated_gpu_watts, 1),
        "jobWatts": round(job_w, 1),
        "kilowatts": f"{job_w / 1000:.1f}",
        "quantile": round(fc.quantile, 4),
        "source": fc.source,
        "durationSeconds": int(duration_s),
    }
    if fc.spread_gpu_watts > 0.0:
        out["meanGpuWatts"] = round(fc.gpu_watts, 3)
        out["spreadGpuWatts"] = round(fc.spread_gpu_watts, 3)
    return out


def _admitted_forecast(raw: Mapping[str, Any], pol: PowerPolicy) -> PowerForecast:
    """The forecast a running job was admitted with, from its Job's annotation:
    under siteChance its mean and spread where it has them (planned as the
    simulator plans it), else its bound."""
    bound = _num(raw, "gpuWatts", pol.gpu_tdp_watts)
    quantile, source = _num(raw, "quantile", 1.0), str(raw.get("source", "prior"))
    spread = _num(raw, "spreadGpuWatts", 0.0)
    if pol.admission_model != SITE_CHANCE or not 0.0 < spread < bound:
        return PowerForecast(bound, quantile, source, 0)
    mean = min(bound, max(0.0, _num(raw, "meanGpuWatts", bound)))
    return PowerForecast(mean, quantile, source, 0, spread, bound)


def _int(value: Any) -> int:
    """A count from API JSON; anything else reads as 0 (never raises)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return 0


def _num(raw: Mapping[str, Any], key: str, default: float) -> float:
    """A finite number from an annotation's JSON, else the default (never raises)."""
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return float(default)
    value = float(value)
    return value if math.isfinite(value) else float(default)


# the annotations parsed, by their text (a pure function of it, so never stale): a
# running Job's are read every cycle and change only when it is admitted again
ANNOTATIONS_KEPT = 1 << 15
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _stored_forecast(job: Mapping[str, Any]) -> Mapping[str, Any]:
    """The forecast a Job was admitted with; {} if the annotation is missing or garbled.
    Read-only: the same mapping is returned for the same text."""
    raw = _get(job, "metadata", "annotations", ANN_FORECAST)
    return _forecast_of(raw) if isinstance(raw, str) and raw else _EMPTY


@lru_cache(maxsize=ANNOTATIONS_KEPT)
def _forecast_of(raw: str) -> Mapping[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return _EMPTY
    return MappingProxyType(value) if isinstance(value, dict) else _EMPTY


def _placement(job: Mapping[str, Any]) -> tuple[str, ...]:
    """The nodes a Job was pinned to; () if the annotation is missing or garbled."""
    raw = _get(job, "metadata", "annotations", ANN_PLACEMENT)
    return _placement_of(raw) if isinstance(raw, str) and raw else ()


@lru_cache(maxsize=ANNOTATIONS_KEPT)
def _placement_of(raw: str) -> tuple[str, ...]:
    try:
        nodes = json.loads(raw)
    except ValueError:
        return ()
    if not isinstance(nodes, list):
        return ()
    return tuple(str(n) for n in nodes)


def sync_forecaster(mem: ControllerMemory, policy: PowerPolicy) -> None:
    """Apply PowerPolicy edits to the forecaster's priors and target, keeping history.

    A changed coverage target restarts the calibration from the new target.
    """
    fc = mem.forecaster
    fc.tdp, fc.idle = policy.gpu_tdp_watts, policy.gpu_idle_watts
    if fc.coverage != policy.coverage:
        fc.coverage = policy.coverage
        fc.level = policy.coverage


@dataclass(slots=True)
class _Picture:
    """What the per-object step builds for `decide`; only whole entries are added."""

    specs: dict[tuple[str, str], TrainingJobSpec] = field(default_factory=dict)
    running: list[RunningJob] = field(default_factory=list)
    queued: list[QueuedJob] = field(default_factory=list)
    held: dict[str, int] = field(default_factory=dict)
    forecasts: dict[tuple[str, str], tuple[PowerForecast, float]] = field(default_factory=dict)
    by_ref: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class _Entry:
    """One TrainingJob's contribution to the picture, built before any of it is kept."""

    spec: TrainingJobSpec | None = None
    running: RunningJob | None = None
    held_nodes: tuple[str, ...] = ()
    queued: QueuedJob | None = None
    forecast: tuple[PowerForecast, float] | None = None
    status: dict[str, Any] | None = None
    events: list[tuple[dict[str, Any], str, str, str]] = field(default_factory=list)
    suspend: bool = False  # its Job is to be suspended (requeued), not shed by decide


def cycle(state: SiteState, mem: ControllerMemory, now_s: float) -> Plan:
    """Decide one cycle and turn the decision into writes.

    The cycle runs in steps, and every step that handles one object handles
    it alone: an exception while reading a TrainingJob, or while building its
    Job, is reported on that TrainingJob (and counted in `Plan.errors`) and
    the cycle goes on for everyone else. Shedding is planned before any
    admission is materialised, so a job that cannot be built never keeps
    another from being suspended ahead of a cap drop.
    """
    plan = Plan()
    sync_forecaster(mem, state.policy)
    mem.period_s = state.policy.control_period_s
    reading = state.reading
    # None: no measurement this cycle; else the site's nodes without fresh data
    unmeasured = set(reading.unmeasured) if reading is not None and reading.ok else None
    if unmeasured is not None:
        _sample(state, mem, now_s)
    pic = _Picture()
    for tj in state.trainingjobs:
        _read_one(tj, state, mem, now_s, unmeasured, pic, plan)
    _forget_gone(mem, pic, state.trainingjobs)

    pol = state.policy
    # limits are used only where they can be confirmed: with Prometheus configured
    limits_on = pol.power_limits.enabled and reading is not None
    verdicts = _judge_limits(state, mem, pic, now_s) if limits_on else {}
    nodes = node_states(state, pic.held)
    cap_now = pol.cap_at(now_s)
    site_w = _site_watts(state, pic, unmeasured)
    mem.over_cap_since_s = over_cap_since(mem.over_cap_since_s, site_w, cap_now, now_s)
    foreign = unmanaged_load(pol, {n.name for n in nodes}, state.pods, reading)
    snap = Snapshot(
        now_s,
        _reaction(pol if limits_on else _one_lever(pol), now_s),
        nodes,
        pic.running,
        pic.queued,
        site_w,
        mem.over_cap_since_s,
        unmanaged_watts=foreign.watts,
    )
    dec = decide(snap)
    plan.paced = _pace(dec, now_s, mem.admit_pace)
    plan.decision = dec
    if any(p.reason == PREEMPT_MEASURED for p in dec.preempts):
        # pods take a while to stop and Prometheus to see it: judge the effect of
        # this shedding only after another grace period, never shed twice for one excess
        mem.over_cap_since_s = now_s

    _learn_overdraws(mem, pic, dec, pol)
    now_iso = format_time(now_s)
    for p in dec.preempts:
        _isolated(plan, pic, _ref_of(p.key), now_iso, "preempt", _plan_preempt, p, state)
    for a in dec.admits:
        _isolated(plan, pic, _ref_of(a.key), now_iso, "admit", _plan_admit, a, dec, state)
    for w in dec.waits:
        _isolated(plan, pic, _ref_of(w.key), now_iso, "wait", _plan_wait, w)
    limited = _plan_limits(plan, pic, dec, verdicts, pol.grace_period_s, now_iso)
    for ref in _asked(plan, verdicts):
        mem.limit_asked[ref] = now_s

    for ref, st in plan.tj_status.items():
        if ref in pic.specs and st.get("phase") is not None:
            st["priority"] = pic.specs[ref].priority  # as resolved from its class
    plan.policy_status = _policy_status(dec, pol, now_s, len(pic.queued), len(pic.running))
    plan.policy_status["unmanaged"] = foreign.status()
    # the plan ahead, published for users (kubectl wattcap) and alerts
    plan.policy_status["outlook"] = outlook(dec, pol, pic.running, pic.queued, now_s)
    plan.policy_status["conditions"] = _measurement_conditions(
        state, mem, site_w, cap_now, now_s, plan
    )
    if pol.power_limits.enabled:
        plan.policy_status["conditions"].append(_limits_condition(state, mem, limited, now_s))
        plan.policy_status["conditions"].append(_grace_condition(pol, now_s))
    return plan


def _pace(dec: Decision, now_s: float, limit: int) -> int:
    """Keep the decision's first `limit` admissions; the rest wait for the next
    cycle (how many did). Why: each admission is several writes, and a burst
    admitted at once made one cycle of thousands of writes, tens of seconds
    long, with the site undecided meanwhile. Leaving an admission out is safe
    for the cap (it draws nothing); the core orders admissions by its queue,
    so the first are the ones it would start first."""
    late = dec.admits[limit:]
    if not late:
        return 0
    del dec.admits[limit:]
    dec.projected_site_watts -= sum(a.site_watts for a in late)
    msg = (
        f"admitted by this cycle's plan, written by the next cycle's: at most "
        f"{limit} admissions go out a cycle, as many as the API server writes in "
        f"about {ADMIT_WRITES_S:g} s"
    )
    dec.waits[:0] = [Wait(a.key, PACED, msg, now_s) for a in late]
    return len(late)


def next_admit_pace(pace: int, writes: int, seconds: float) -> int:
    """The next cycle's admission pace, from this cycle's `writes` that took
    `seconds`: halfway from `pace` to the admissions whose writes take
    ADMIT_WRITES_S at that rate, within [ADMIT_PACE_MIN, ADMIT_PACE_MAX].
    Why halfway: one cycle's rate is noisy (a chunk waits on its slowest
    write), and a pace that swings makes cycles that swing. Why learned: a
    fixed pace is too much for a small control plane and too little for a big
    one, and the site loop sees the API server's speed on every cycle."""
    if writes < PACE_MIN_WRITES or seconds <= 0.0:
        return pace
    aim = min(ADMIT_PACE_MAX, writes / seconds * ADMIT_WRITES_S / WRITES_PER_ADMISSION)
    return max(ADMIT_PACE_MIN, min(ADMIT_PACE_MAX, round((pace + aim) / 2)))


def _site_watts(state: SiteState, pic: _Picture, unmeasured: set[str] | None) -> float | None:
    """Measured site power, with nodes that have no fresh data at what is planned there.

    Without a site meter the reading sums measured nodes only; each unmeasured
    node adds its running jobs' GPUs at their planned watts (the admission
    forecast) and its other GPUs at idle, so measured-overdraw enforcement
    keeps working for the measured part of the site.
    """
    reading = state.reading
    if reading is None or unmeasured is None or reading.site_watts is None:
        return None
    if reading.metered or not unmeasured:
        return reading.site_watts
    pol = state.policy
    gpu_w = 0.0
    for n in state.nodes:
        name = _get(n, "metadata", "name")
        if name not in unmeasured:
            continue
        total = _quantity_int(_get(n, "status", "allocatable", GPU) or 0)
        busy, busy_w = 0, 0.0
        for r in pic.running:
            if name in r.nodes:
                busy += r.gpus_per_replica
                busy_w += r.gpus_per_replica * r.gpu_watts
        gpu_w += busy_w + max(0, total - busy) * pol.gpu_idle_watts
    return reading.site_watts + pol.pue * gpu_w


def _reaction(pol: PowerPolicy, now_s: float) -> PowerPolicy:
    """The policy as `decide` should see it ahead of a scheduled cap drop.

    A job shed now still draws power for up to its pods' termination grace,
    so the site needs a control period plus `maxTerminationGracePeriod`
    (which wattcap enforces on the pods it creates) to react to a drop.
    `decide` looks one control period ahead when it sheds and plans
    preemptible work; while a drop is that reaction time away, it is handed
    the reaction time as its period, so it sheds early enough. Otherwise the
    policy is unchanged: the period also sets when the next cycle can start
    anything, which the grace has nothing to do with.
    """
    lead = pol.control_period_s + pol.max_termination_grace_s
    if pol.max_termination_grace_s <= 0:
        return pol
    cap_now = pol.cap_at(now_s)
    if all(pol.cap_at(t) >= cap_now for t in pol.cap_changes(now_s, now_s + lead + 1e-6)):
        return pol
    return replace(pol, control_period_s=lead)


def _ref_of(key: str) -> tuple[str, str]:
    ns, _, name = key.partition("/")
    return ns, name


def _read_one(
    tj: dict[str, Any],
    state: SiteState,
    mem: ControllerMemory,
    now_s: float,
    unmeasured: set[str] | None,
    pic: _Picture,
    plan: Plan,
) -> None:
    """Add one TrainingJob to the picture; an error stays with it (see `_fallback`)."""
    try:
        ref = ref_of(tj)
    except (KeyError, TypeError, AttributeError):
        plan.errors.append(("read", "MalformedObject"))
        return
    try:
        entry = _entry(tj, ref, state, mem, now_s, unmeasured)
    except Exception as err:  # one object's surprise must not stop the site's loop
        plan.errors.append(("read", type(err).__name__))
        entry = _fallback(ref, state, err, now_s)
    if entry is None:
        return
    pic.by_ref[ref] = tj
    if entry.spec is not None:
        pic.specs[ref] = entry.spec
    if entry.running is not None:
        pic.running.append(entry.running)
        gpn = entry.running.gpus_per_replica
        for n in entry.held_nodes:
            pic.held[n] = pic.held.get(n, 0) + gpn
    if entry.queued is not None and entry.forecast is not None:
        pic.queued.append(entry.queued)
        pic.forecasts[ref] = entry.forecast
    if entry.status is not None:
        plan.tj_status[ref] = entry.status
    plan.events.extend(entry.events)
    if entry.suspend:
        job = state.jobs[ref]
        plan.suspend_jobs.append((ref[0], job["metadata"]["name"]))


def _parsed(tj: dict[str, Any], ref: tuple[str, str], mem: ControllerMemory) -> TrainingJobSpec:
    """The TrainingJob's spec, parsed again only when its spec may have changed.

    The API server moves `generation` with every edit of the spec and only then (status
    is a subresource), a re-created object has a new uid, and the rest that is parsed
    (kind, name, namespace) is fixed for a uid. Keyed by resourceVersion, every status
    write made the next cycle parse its job again: thousands after a busy cycle. An
    object without a resourceVersion (not from an API server) is always parsed; one
    without a generation is keyed by its resourceVersion."""
    meta = tj.get("metadata") or {}
    rv, gen = meta.get("resourceVersion"), meta.get("generation")
    if rv is None:
        return parse_training_job(tj)
    version = (meta.get("uid"), gen if gen is not None else ("resourceVersion", rv))
    cached = mem.parsed.get(ref)
    if cached is not None and cached[0] == version:
        return cached[1]
    spec = parse_training_job(tj)
    mem.parsed[ref] = (version, spec)
    return spec


def _resolved(
    ref: tuple[str, str], spec: TrainingJobSpec, priority: int, mem: ControllerMemory
) -> TrainingJobSpec:
    """`spec` at its resolved `priority`: the copy the last cycle made while the parsed
    spec is the same object and the priority the same number (a class's value can move
    under an unchanged job), else a new one. Copying every job's spec each cycle was a
    fifth of a big site's reading (bench/bench_cycle.py)."""
    if spec.priority == priority:
        return spec
    kept = mem.resolved.get(ref)
    if kept is not None and kept[0] is spec and kept[1].priority == priority:
        return kept[1]
    out = replace(spec, priority=priority)
    mem.resolved[ref] = (spec, out)
    return out


def _invalid(tj: Mapping[str, Any], err: ManifestError, now_iso: str) -> _Entry:
    return _Entry(
        status={
            "phase": FAILED,
            "reason": "InvalidSpec",
            "message": str(err),
            "observedGeneration": (tj.get("metadata") or {}).get("generation"),
            "conditions": [condition("Admitted", "False", "InvalidSpec", str(err), now_iso)],
        }
    )


def _judged_again(tj: Mapping[str, Any]) -> bool:
    """An InvalidSpec failure is final only for the generation it judged."""
    status = tj.get("status") or {}
    gen = (tj.get("metadata") or {}).get("generation")
    return (
        status.get("phase") == FAILED
        and status.get("reason") == "InvalidSpec"
        and gen is not None
        and status.get("observedGeneration") != gen
    )


def _entry(
    tj: dict[str, Any],
    ref: tuple[str, str],
    state: SiteState,
    mem: ControllerMemory,
    now_s: float,
    unmeasured: set[str] | None,
) -> _Entry | None:
    """What one TrainingJob adds to the picture (None: nothing, it is leaving)."""
    pol = state.policy
    meta = tj["metadata"]
    job = state.jobs.get(ref)
    if meta.get("deletionTimestamp") and job is None:
        return None  # leaving: never admit it (its Job, if any, still holds power)
    status = tj.get("status") or {}
    try:
        spec = _parsed(tj, ref, mem)
    except ManifestError as err:
        return _invalid(tj, err, format_time(now_s))
    try:
        spec = _resolved(ref, spec, job_priority(spec, state.priority_classes), mem)
        class_error = None
    except ManifestError as err:
        # work already running keeps running, at the priority of a job without a class
        spec, class_error = _resolved(ref, spec, fallback_priority(spec), mem), err
    if job is None and status.get("phase") in TERMINAL and not _judged_again(tj):
        # finished before this operator saw it: never learned from its status,
        # which anyone with trainingjobs/status could have written
        return _Entry(spec=spec)
    if job is not None and (job.get("metadata") or {}).get("deletionTimestamp"):
        return _replacing(tj, spec, job, mem, now_s)
    suspended = job is not None and bool((job.get("spec") or {}).get("suspend"))
    if job is not None and suspended and _int(_get(job, "status", "active")) > 0:
        # Preempted, pods still stopping: their power and GPUs are not free
        # until they are gone, and the job cannot start again before then.
        nodes = _placement(job)
        w = mem.believed.get(ref, _num(_stored_forecast(job), "gpuWatts", pol.gpu_tdp_watts))
        key = f"{ref[0]}/{ref[1]}"
        run = RunningJob(
            key, spec.replicas, spec.gpus_per_replica, w, spec.priority, False,
            now_s, now_s + pol.control_period_s, nodes, None, w,
        )  # fmt: skip
        return _Entry(spec=spec, running=run, held_nodes=nodes)
    if job is not None and not suspended:
        return _admitted(tj, ref, spec, job, mem, now_s, unmeasured, pol)
    if class_error is not None:
        return _class_refused(tj, spec, class_error, now_s)
    return _waiting(tj, ref, spec, mem, now_s, pol)


def _overrun_bound(spec: TrainingJobSpec, pol: PowerPolicy) -> float | None:
    """How far past its planned end a job admitted now can run: a declared
    expectedDuration under overrunAction Stop gets a Job deadline overrunGrace
    later. Other ends are forecasts, unbounded (`QueuedJob.overrun_bound_s`)."""
    if pol.overrun_action == "Stop" and spec.expected_duration_s is not None:
        return pol.overrun_grace_s
    return None


def _deadline_after_plan(job: Mapping[str, Any], planned_s: float) -> float | None:
    """How far past its planned end a running Job can run: its own
    activeDeadlineSeconds, as created, whatever the policy says now."""
    deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
    if isinstance(deadline, bool) or not isinstance(deadline, int | float):
        return None
    return max(0.0, float(deadline) - planned_s)


def _class_refused(
    tj: Mapping[str, Any], spec: TrainingJobSpec, err: ManifestError, now_s: float
) -> _Entry:
    """A job whose PriorityClass is missing, a system class or not marked for
    wattcap waits outside the queue, holding nothing, and says which field to
    fix; it is judged again every cycle, so an admin who creates or marks the
    class lets it in without the tenant doing anything."""
    msg = f"{err}; not queued until this is fixed"
    prev = (tj.get("status") or {}).get("phase")
    return _Entry(
        spec=spec,
        status={
            "phase": PREEMPTED if prev == PREEMPTED else QUEUED,
            "reason": "InvalidPriorityClass",
            "message": msg,
            "placement": [],
            "estimatedStart": None,
            "conditions": [
                condition("Admitted", "False", "InvalidPriorityClass", msg, format_time(now_s))
            ],
        },
    )


def _replacing(
    tj: Mapping[str, Any],
    spec: TrainingJobSpec,
    job: Mapping[str, Any],
    mem: ControllerMemory,
    now_s: float,
) -> _Entry:
    """Its old Job is being deleted (a move to other nodes): hold its power while
    its pods run, then wait for the name to be free before creating the new one."""
    ref = (spec.namespace, spec.name)
    nodes = _placement(job)
    active = _int(_get(job, "status", "active"))
    if active > 0:
        pol_w = _num(_stored_forecast(job), "gpuWatts", mem.forecaster.tdp)
        w = mem.believed.get(ref, pol_w)
        run = RunningJob(
            spec.key, spec.replicas, spec.gpus_per_replica, w, spec.priority, False,
            now_s, now_s + 1.0, nodes, None, w,
        )  # fmt: skip
        return _Entry(spec=spec, running=run, held_nodes=nodes)
    return _Entry(spec=spec)


def _admitted(
    tj: dict[str, Any],
    ref: tuple[str, str],
    spec: TrainingJobSpec,
    job: Mapping[str, Any],
    mem: ControllerMemory,
    now_s: float,
    unmeasured: set[str] | None,
    pol: PowerPolicy,
) -> _Entry:
    """A TrainingJob whose Job runs (or has finished).

    It is measured only if every node it runs on is: a job on a node
    without fresh data is planned at its admission forecast."""
    now_iso = format_time(now_s)
    status = tj.get("status") or {}
    done = _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet")
    failed = _job_condition(job, "Failed")
    if done or failed:
        entry = _Entry(spec=spec, status=_finished(tj, spec, job, mem, ref, bool(done), now_iso))
        if status.get("phase") not in TERMINAL:
            phase = SUCCEEDED if done else FAILED
            msg = f"batch Job {job_name(spec.name)} {phase.lower()}"
            entry.events.append((tj, "Normal" if done else "Warning", phase, msg))
        return entry
    nodes = _placement(job)
    measuring = unmeasured is not None and not unmeasured.intersection(nodes)
    fc_raw = _stored_forecast(job)
    # planned from its last admission: a Job resumed in place keeps its creation time
    admitted_at = _admitted_at(job, ref, mem)
    started = admitted_at or now_s
    dur = _num(fc_raw, "durationSeconds", pol.default_duration_s)
    fc = _admitted_forecast(fc_raw, pol)
    samples = mem.samples.get(ref, [])
    measured = sum(v for _, v in samples) / len(samples) if samples else None
    if measuring:
        steady = working_samples(samples, mem.forecaster.idle, mem.forecaster.tdp)
        if pol.admission_model == SITE_CHANCE:
            # planned at what it measures, even above its admission: the
            # plan follows the draw, which makes admitting at a mean safe
            planned = mem.forecaster.measured_from(fc, steady)
        else:
            planned = mem.forecaster.running(fc, steady)
        believed = planned.gpu_watts
    else:
        # no trustworthy measurement: plan at the admission forecast, but
        # keep believing the last measured figure so nothing is shed for it
        planned = fc
        believed = mem.believed.get(ref, fc.gpu_watts)
    declared = spec.expected_duration_s
    overrun = (
        pol.overrun_action == "Replan"
        and declared is not None
        and now_s > started + declared + pol.overrun_grace_s
    )
    # past its declared duration and the grace (Replan): open-ended, shed first if preemptible
    end = now_s + HORIZON_S if overrun else started + dur
    run = RunningJob(
        spec.key, spec.replicas, spec.gpus_per_replica, planned.gpu_watts, spec.priority,
        spec.preemptible, started, end, nodes, measured, believed,
        fc.calibrated_gpu_watts,  # as admitted: measured above it, the job over-draws
        overrunning=overrun, spread_gpu_watts=planned.spread_gpu_watts,
        overrun_bound_s=_deadline_after_plan(job, dur),
    )  # fmt: skip
    if _pods_not_ready(job, spec, now_s, pol, admitted_at):
        return _requeue(tj, ref, spec, job, mem, now_s, run, nodes)
    active = _int(_get(job, "status", "active"))
    phase = RUNNING if active > 0 else ADMITTED
    st: dict[str, Any] = {
        "phase": phase,
        "placement": list(nodes),
        "jobName": job_name(spec.name),
        "totalGPUs": spec.gpus,
        "estimatedStart": None,
        "forecast": _forecast_status(fc, spec.gpus, dur),  # as admitted
        "plannedGpuWatts": round(planned.gpu_watts, 1),
    }
    if phase == RUNNING and not status.get("startedAt"):
        st["startedAt"] = now_iso
    if measured is not None:
        st["measuredWatts"] = round(measured * spec.gpus, -1)
    if overrun:
        st["reason"] = "OverranExpectedDuration"
        st["message"] = (
            f"running past expectedDuration ({declared:.0f}s) and the policy's overrunGrace "
            f"({pol.overrun_grace_s:.0f}s): planned open-ended"
            + ("; first to be shed" if spec.preemptible else "")
        )
    if measuring:
        mem.believed[ref] = believed  # kept only once the whole entry is built
    return _Entry(spec=spec, running=run, held_nodes=nodes, status=st)


def _admitted_at(
    job: Mapping[str, Any], ref: tuple[str, str], mem: ControllerMemory
) -> float | None:
    """When a Job was last admitted: created, or resumed in place."""
    return _time_of(mem, ref, "job admitted", job, "metadata", "annotations", ANN_ADMITTED) or (
        _time_of(mem, ref, "job created", job, "metadata", "creationTimestamp")
    )


def _pods_not_ready(
    job: Mapping[str, Any],
    spec: TrainingJobSpec,
    now_s: float,
    pol: PowerPolicy,
    admitted: float | None,
) -> bool:
    """Whether admitted work (`admitted`: when) is still not all ready (or done) after
    podsReadyTimeout."""
    if admitted is None or now_s - admitted <= pol.pods_ready_timeout_s:
        return False
    started = _int(_get(job, "status", "ready")) + _int(_get(job, "status", "succeeded"))
    return started < spec.replicas


def _requeue(
    tj: dict[str, Any],
    ref: tuple[str, str],
    spec: TrainingJobSpec,
    job: Mapping[str, Any],
    mem: ControllerMemory,
    now_s: float,
    run: RunningJob,
    nodes: tuple[str, ...],
) -> _Entry:
    """Suspend admitted work whose pods never got ready (pinned GPUs taken, a
    quota, an image that never pulls), so it stops holding power and GPUs it
    does not use; it waits out a back-off before it is admitted again. Its
    pods may still draw power this cycle, so they are still counted."""
    ready = _int(_get(job, "status", "ready")) + _int(_get(job, "status", "succeeded"))
    attempts = mem.backoff.get(ref, (0, 0.0))[0] + 1
    delay = min(MAX_BACKOFF_S, mem.period_s * 2 ** (attempts - 1))
    mem.backoff[ref] = (attempts, now_s + delay)
    msg = (
        f"{ready} of {spec.replicas} pods ready, past podsReadyTimeout "
        f"after admission): suspended and queued again, not before {delay:.0f}s"
    )
    status = {
        "phase": QUEUED,
        "reason": "PodsNotReady",
        "message": msg,
        "placement": [],
        "estimatedStart": None,
        "conditions": [condition("Admitted", "False", "PodsNotReady", msg, format_time(now_s))],
    }
    entry = _Entry(spec=spec, running=run, held_nodes=nodes, status=status)
    entry.events.append((tj, "Warning", "PodsNotReady", msg))
    entry.suspend = True
    return entry


def _waiting(
    tj: dict[str, Any],
    ref: tuple[str, str],
    spec: TrainingJobSpec,
    mem: ControllerMemory,
    now_s: float,
    pol: PowerPolicy,
) -> _Entry:
    """Queued: never admitted, or preempted (its Job is suspended)."""
    meta = tj.get("metadata") or {}
    seen = (meta.get("uid"), meta.get("generation"))
    if seen[1] is None or mem.valid_templates.get(ref) != seen:
        try:
            validate_template(spec.template, spec.gpus_per_replica)
        except ManifestError as err:
            return _invalid(tj, err, format_time(now_s))
        if seen[1] is not None:  # a template changes only with the generation
            mem.valid_templates[ref] = seen
    backoff = mem.backoff.get(ref)
    if backoff is not None and now_s < backoff[1]:
        return _Entry(spec=spec)  # its last write failed: it says so, and holds nothing
    # siteChance plans a job at its forecast's mean and spread (chance.py)
    chance = pol.admission_model == SITE_CHANCE
    fc = (mem.forecaster.distribution if chance else mem.forecaster.forecast)(
        spec.workload_class,
        spec.gpu_watts_hint,
        namespace=spec.namespace,
        hint_floor_fraction=pol.hint_floor_fraction,
    )
    own = [v for _, v in mem.samples.get(ref, [])]
    if len(own) >= 3:
        # preempted after running: what it drew beats what its class or hint says
        seen = mem.forecaster.running(PowerForecast(pol.gpu_tdp_watts, 1.0, "prior", 0), own)
        if seen.gpu_watts > fc.gpu_watts:
            fc = seen
    dur = mem.forecaster.duration(
        spec.workload_class,
        spec.expected_duration_s,
        pol.default_duration_s,
        namespace=spec.namespace,
        preemptible=spec.preemptible and pol.preemption,
    )
    submitted = _time_of(mem, ref, "created", tj, "metadata", "creationTimestamp") or now_s
    queued = QueuedJob(
        spec.key, spec.replicas, spec.gpus_per_replica, fc.gpu_watts, spec.priority,
        submitted, dur, spec.preemptible, pol.max_delay_for(spec.max_delay_s),
        fc.spread_gpu_watts, _overrun_bound(spec, pol),
    )  # fmt: skip
    return _Entry(spec=spec, queued=queued, forecast=(fc, dur))


def _fallback(ref: tuple[str, str], state: SiteState, err: Exception, now_s: float) -> _Entry:
    """What is planned for a TrainingJob whose handling raised.

    It is never admitted, and a Job of it that may be running is planned at
    TDP on every GPU of its nodes, not preemptible: wattcap does not shed or
    start what it cannot read, but it never forgets power that may be drawn.
    """
    pol = state.policy
    job = state.jobs.get(ref)
    why = f"{type(err).__name__}: {err}"[:300]
    entry = _Entry()
    holds = ""
    if job is not None:
        nodes = _placement(job)
        per_node = {
            (n.get("metadata") or {}).get("name"): _quantity_int(
                ((n.get("status") or {}).get("allocatable") or {}).get(GPU, 0)
            )
            for n in state.nodes
        }
        gpn = max([per_node.get(n, 0) for n in nodes] + [1])
        key = f"{ref[0]}/{ref[1]}"
        w = pol.gpu_tdp_watts
        end = now_s + pol.default_duration_s
        entry.running = RunningJob(
            key, max(1, len(nodes)), gpn, w, 0, False, now_s, end, nodes, None, w
        )
        entry.held_nodes = nodes
        holds = "; its Job is planned at TDP on all GPUs of its nodes until this is fixed"
    entry.status = {
        "reason": "CycleError",
        "message": f"wattcap could not handle this TrainingJob ({why}); retried every cycle"
        + holds,
    }
    return entry


def _isolated(
    plan: Plan,
    pic: _Picture,
    ref: tuple[str, str],
    now_iso: str,
    step: str,
    fn: Any,
    *args: Any,
) -> None:
    """Run one object's step of the plan; an error goes to its status, not the cycle."""
    try:
        fn(plan, pic, ref, now_iso, *args)
    except ManifestError as err:
        plan.status_keys.pop(ref, None)
        plan.errors.append((step, "InvalidSpec"))
        tj = pic.by_ref.get(ref)
        if tj is not None:
            plan.tj_status[ref] = _invalid(tj, err, now_iso).status or {}
    except Exception as err:  # see _read_one
        plan.errors.append((step, type(err).__name__))
        why = f"{type(err).__name__}: {err}"[:300]
        plan.status_keys.pop(ref, None)
        plan.tj_status[ref] = {
            "reason": "CycleError",
            "message": f"wattcap could not {step} this TrainingJob ({why}); retried every cycle",
        }


def _plan_preempt(
    plan: Plan, pic: _Picture, ref: tuple[str, str], now_iso: str, p: Any, state: SiteState
) -> None:
    job = state.jobs[ref]
    tj = pic.by_ref[ref]
    plan.suspend_jobs.append((ref[0], job["metadata"]["name"]))
    count = _int((tj.get("status") or {}).get("preemptions")) + 1
    plan.tj_status[ref] = {
        "phase": PREEMPTED,
        "reason": p.reason,
        "message": p.message,
        "placement": [],
        "preemptions": count,
        "estimatedStart": None,
        "conditions": [condition("Admitted", "False", p.reason, p.message, now_iso)],
    }
    plan.events.append((tj, "Warning", "Preempted", p.message))


def _plan_admit(
    plan: Plan,
    pic: _Picture,
    ref: tuple[str, str],
    now_iso: str,
    a: Any,
    dec: Decision,
    state: SiteState,
) -> None:
    """The Job write for one admission: create, resume in place, or move.

    A Job that ran cannot have its pod template's node affinity changed
    (`spec.template` is immutable once a Job has started), so a preempted job
    resumes in place when it gets its old nodes back, and is otherwise moved:
    its suspended Job (no pods left) is deleted, with a uid precondition, and a
    fresh one of the same deterministic name is created on the new nodes.
    """
    spec = pic.specs[ref]
    tj = pic.by_ref[ref]
    fc, dur = pic.forecasts[ref]
    fstatus = _forecast_status(fc, spec.gpus, dur)
    existing = state.jobs.get(ref)
    name = job_name(spec.name)
    if existing is not None and set(_placement(existing)) == set(a.nodes):
        name = existing["metadata"]["name"]
        plan.resume_jobs.append((ref[0], name, resume_patch(spec, a.nodes, fstatus, now_iso)))
    else:
        pol = state.policy
        bound = _overrun_bound(spec, pol)
        deadline = None if bound is None else spec.expected_duration_s + bound
        body = build_job(tj, spec, a.nodes, fstatus, now_iso, pol.max_termination_grace_s, deadline)
        if existing is not None:
            old = existing["metadata"]
            plan.delete_jobs.append((ref[0], old["name"], old.get("uid")))
        plan.create_jobs.append(body)
    plan.job_refs[(ref[0], name)] = ref
    plan.job_tjs[ref] = tj
    msg = (
        f"admitted on {', '.join(a.nodes)}: +{fmt_watts(a.site_watts)} keeps the site "
        f"projection under the usable cap {fmt_watts(dec.effective_cap_watts)}"
    )
    plan.tj_status[ref] = {
        "phase": ADMITTED,
        "reason": "Admitted",
        "message": msg,
        "placement": list(a.nodes),
        "admittedAt": now_iso,
        "estimatedStart": None,
        "jobName": job_name(spec.name),
        "totalGPUs": spec.gpus,
        "forecast": fstatus,
        "conditions": [condition("Admitted", "True", "Admitted", msg, now_iso)],
    }
    plan.events.append((tj, "Normal", "Admitted", msg))


def _plan_wait(plan: Plan, pic: _Picture, ref: tuple[str, str], now_iso: str, w: Any) -> None:
    """A waiting job's status, and its key for StatusWrites (`Plan.status_keys`): most
    of a big site's jobs wait and their statuses do not move from one cycle to the
    next, so what decides whether one is written is kept while its key stands. The
    key is everything the status is built from, and the TrainingJob as stored
    (uid, resourceVersion), which the status is compared with."""
    spec = pic.specs[ref]
    tj = pic.by_ref[ref]
    fc, dur = pic.forecasts[ref]
    stored = tj.get("status") or {}
    phase = PREEMPTED if stored.get("phase") == PREEMPTED else QUEUED
    msg = w.message  # rendered once, not once per field
    plan.tj_status[ref] = {
        "phase": phase,
        "reason": w.reason,
        "message": msg,
        "estimatedStart": format_time(w.est_start_s) if w.est_start_s else None,
        "totalGPUs": spec.gpus,
        "forecast": _forecast_status(fc, spec.gpus, dur),
        "placement": [],
        "conditions": [condition("Admitted", "False", w.reason, msg, now_iso)],
    }
    meta = tj.get("metadata") or {}
    uid, version = meta.get("uid"), meta.get("resourceVersion")
    if uid is not None and version is not None:  # as an API server serves it
        inputs = (phase, w.reason, msg, w.est_start_s, spec.gpus, spec.priority, fc, dur)
        plan.status_keys[ref] = (uid, version, inputs)
    if w.reason == UNSCHEDULABLE and stored.get("reason") != UNSCHEDULABLE:
        plan.events.append((tj, "Warning", UNSCHEDULABLE, msg))


def _forget_gone(mem: ControllerMemory, pic: _Picture, tjs: Iterable[Mapping[str, Any]]) -> None:
    """Forget what is kept per TrainingJob once it is gone: memory stays bounded
    by the TrainingJobs that exist, however many come and go over months.

    A learned uid is needed only while its TrainingJob exists (a re-created
    one has a new uid); measurements of a job deleted while running are never
    used again."""
    for ref in [r for r in mem.backoff if r not in pic.by_ref]:
        del mem.backoff[ref]
    for memo in (mem.valid_templates, mem.parsed, mem.resolved):
        for ref in [r for r in memo if r not in pic.by_ref]:
            del memo[ref]
    for key in [k for k in mem.times if k[0] not in pic.by_ref]:
        del mem.times[key]
    refs, uids = set(), set()
    for t in tjs:
        meta = t.get("metadata") if isinstance(t, Mapping) else None
        if isinstance(meta, Mapping):
            refs.add((meta.get("namespace", "default"), meta.get("name")))
            uids.add(meta.get("uid"))
    for ref in [r for r in mem.samples if r not in refs]:
        del mem.samples[ref]
    for ref in [r for r in mem.believed if r not in refs]:
        del mem.believed[ref]
    mem.observed &= uids


MAX_BACKOFF_S = 600.0


@dataclass(frozen=True, slots=True)
class WriteFailure:
    """A Job write the API server refused, for the TrainingJob it was for."""

    ref: tuple[str, str]
    what: str  # "create Job", "resume Job", "delete Job"
    code: int | None
    reason: str
    message: str


def note_write_failures(
    plan: Plan, mem: ControllerMemory, failures: Iterable[WriteFailure], now_s: float
) -> None:
    """Turn refused Job writes into what users see, before statuses are written.

    A job is Admitted only once its Job write succeeded: a refused write puts
    it back in the queue with a `WriteFailed` condition and a Warning Event,
    and it sits out a back-off (one period, doubling to MAX_BACKOFF_S) during
    which it holds no power and no GPUs. Jobs whose writes went through forget
    their back-off.
    """
    now_iso = format_time(now_s)
    failed = {}
    for f in failures:
        failed[f.ref] = f
    for ref in set(plan.job_refs.values()) - set(failed):
        mem.backoff.pop(ref, None)
    for ref, f in failed.items():
        attempts = mem.backoff.get(ref, (0, 0.0))[0] + 1
        delay = min(MAX_BACKOFF_S, mem.period_s * 2 ** (attempts - 1))
        mem.backoff[ref] = (attempts, now_s + delay)
        reason = {"create Job": "CreateFailed", "resume Job": "ResumeFailed"}.get(
            f.what, "WriteFailed"
        )
        code = f"{f.code} " if f.code is not None else ""
        msg = (
            f"{f.what} {job_name(ref[1])} failed ({attempts} in a row): {code}{f.reason}: "
            f"{f.message}"[:700]
            + f"; not admitted, retried after {delay:.0f}s"
        )
        tj = plan.job_tjs.get(ref)
        prev = ((tj or {}).get("status") or {}).get("phase")
        plan.status_keys.pop(ref, None)
        plan.tj_status[ref] = {
            "phase": PREEMPTED if prev == PREEMPTED else QUEUED,
            "reason": reason,
            "message": msg,
            "placement": [],
            "estimatedStart": None,
            "conditions": [condition("Admitted", "False", reason, msg, now_iso)],
        }
        plan.events = [e for e in plan.events if not (e[0] is tj and e[2] == "Admitted")]
        if tj is not None:
            plan.events.append((tj, "Warning", reason, msg))


def _one_lever(pol: PowerPolicy) -> PowerPolicy:
    """The policy without power limits: what the operator decides with where it cannot
    confirm them (no Prometheus configured). Deciding with limits nobody can confirm
    would throttle on paper where the cluster needs a preemption."""
    if not pol.power_limits.enabled:
        return pol
    return replace(pol, power_limits=replace(pol.power_limits, enabled=False))


def _judge_limits(
    state: SiteState, mem: ControllerMemory, pic: _Picture, now_s: float
) -> dict[tuple[str, str], tuple[Verdict, list[dict[str, Any]]]]:
    """Judge each running job's GPU power limits (`enforcement.judge`) and hand the
    verdict to the core: `gpu_limit_watts` (what its pods are asked) and `throttleable`.
    Returns the verdict and running pods per job whose Job runs. Without a reading
    nothing is judged (no clock runs): a silent Prometheus must not preempt anyone."""
    reading = state.reading
    ok = reading is not None and reading.ok
    enforced = reading.enforced_by_pod if reading is not None and ok else None
    reporting = reading.enforced_nodes if reading is not None and ok else frozenset()
    pod_at = reading.enforced_pod_at if reading is not None else {}
    grace, period = state.policy.grace_period_s, _fallback_lead(state.policy, mem)
    pods_of = running_pods(state.pods)
    agentless = _agentless_nodes(state, mem, now_s) if enforced is not None else set()
    out: dict[tuple[str, str], tuple[Verdict, list[dict[str, Any]]]] = {}
    for i, r in enumerate(pic.running):
        ref = _ref_of(r.key)
        job, spec = state.jobs.get(ref), pic.specs.get(ref)
        if job is None or spec is None or _stopping(job):
            continue
        pods = pods_of.get((ref[0], job_name(ref[1])), [])
        limits = pod_limits(pods, spec.gpus_per_replica, enforced or {})
        if ref in mem.limit_lost and reporting.issuperset(mem.limit_failed.get(ref, ())):
            # the agent that died is back: it may hold this job's limits again
            mem.limit_lost.discard(ref)
            mem.limit_failed.pop(ref, None)
        failed = ref in mem.limit_failed
        if enforced is None:
            v = judge(limits, None, failed, now_s, math.inf)
            mem.limit_pending.pop(ref, None)
        else:
            asked_at, seen_at = mem.limit_asked.get(ref), mem.limit_seen.get(ref)
            since = mem.limit_pending.get(ref, _latest(asked_at, seen_at))
            # a limit seen in force and then lost may have left the site over its cap
            # since: give up on it at the last cycle within the grace. A new ask is
            # on its way: it gets the whole grace
            lost = seen_at is not None and (asked_at is None or seen_at >= asked_at)
            v = judge(limits, since, failed, now_s, grace, period if lost else 0.0)
            if v.state == CONFIRMED:
                at = [pod_at.get(ref_of(p), now_s) for p in pods]
                mem.limit_seen[ref] = min(at, default=now_s)
            if v.state == PENDING and v.since_s is not None:
                mem.limit_pending[ref] = v.since_s
            else:
                mem.limit_pending.pop(ref, None)
            if v.state == UNCONFIRMED and not failed:
                mem.limit_failed[ref] = v.nodes
                if not reporting.intersection(v.nodes):
                    mem.limit_lost.add(ref)
        asked = None if v.asked_w is None else float(v.asked_w)
        # a job on a node without an agent is not throttled at all: asking would only
        # cost another grace period over the cap before the same preemption
        ok = v.state != UNCONFIRMED and not agentless.intersection(r.nodes)
        pic.running[i] = replace(r, gpu_limit_watts=asked, throttleable=ok)
        out[ref] = (v, pods)
    for memo in (mem.limit_pending, mem.limit_failed, mem.limit_asked, mem.limit_seen):
        for ref in [k for k in memo if k not in out]:
            del memo[ref]
    mem.limit_lost &= set(mem.limit_failed)
    return out


def _latest(*times: float | None) -> float | None:
    """The latest of the times given, None if none is."""
    known = [t for t in times if t is not None]
    return max(known) if known else None


def _agentless_nodes(state: SiteState, mem: ControllerMemory, now_s: float) -> set[str]:
    """GPU nodes whose last report of an enforced limit for all their GPUs is a grace
    period old by the next cycle: no node agent runs there (it died, or was never
    installed). Silence counts from that last sample, not from the cycle that noticed."""
    assert state.reading is not None
    reporting = state.reading.enforced_nodes
    at = state.reading.enforced_node_at
    seen = set()
    for n in state.nodes:
        name = _get(n, "metadata", "name")
        if not name or _quantity_int(_get(n, "status", "allocatable", GPU) or 0) <= 0:
            continue
        seen.add(name)
        if name in reporting:
            mem.node_silent.pop(name, None)
            mem.node_seen[name] = at.get(name, now_s)
        else:
            mem.node_silent.setdefault(name, mem.node_seen.get(name, now_s))
    for memo in (mem.node_silent, mem.node_seen):
        for name in [k for k in memo if k not in seen]:
            del memo[name]
    return _silent_nodes(state.policy, mem, now_s)


def _silent_nodes(pol: PowerPolicy, mem: ControllerMemory, now_s: float) -> set[str]:
    """The nodes whose silence outlasts the grace period by the next cycle."""
    g, p = pol.grace_period_s, _fallback_lead(pol, mem)
    return {n for n, t in mem.node_silent.items() if expired(t, now_s, g, p)}


def _fallback_lead(pol: PowerPolicy, mem: ControllerMemory) -> float:
    """How far ahead a grace's end is looked for: the next cycle starts a control
    period after this one, and its writes land the last cycle's duration after its
    start. Without this, a slow cycle (a loaded host, a slow API server) issues the
    fallback after the grace. Bounded by the period: a cycle that took longer is an
    outlier, and looking further would give up on limits that were only late."""
    return pol.control_period_s + min(max(mem.cycle_s, 0.0), pol.control_period_s)


def _stopping(job: Mapping[str, Any]) -> bool:
    """A Job suspended (preempted) or being deleted: its pods are on their way out."""
    return bool(_get(job, "spec", "suspend")) or bool(_get(job, "metadata", "deletionTimestamp"))


def _plan_limits(
    plan: Plan,
    pic: _Picture,
    dec: Decision,
    verdicts: Mapping[tuple[str, str], tuple[Verdict, list[dict[str, Any]]]],
    grace: float,
    now_iso: str,
) -> dict[str, str]:
    """The core's limits as pod annotations (asked, changed, released), and each running
    job's limit and why in its status. Returns the state of each limited job's limit
    (PENDING where it is asked or changed this cycle)."""
    gone = {p.key for p in dec.preempts}
    limited: dict[str, str] = {}
    for ref, (v, pods) in verdicts.items():
        key = f"{ref[0]}/{ref[1]}"
        if key in gone:
            continue
        patches, shown = annotation_patches(pods, dec.gpu_limits.get(key))
        plan.pod_patches.extend(patches)
        st = plan.tj_status.get(ref)
        if st is None or st.get("phase") not in (RUNNING, ADMITTED):
            continue
        cause = dec.limit_cause
        fields, cond = job_limit_report(
            v, shown, bool(patches), cause, dec.limit_kind, grace, v.nodes
        )
        if fields["gpuPowerLimitWatts"] is not None:
            limited[key] = fields["gpuPowerLimitState"]
        st.update(fields)
        current = (pic.by_ref.get(ref) or {}).get("status") or {}
        kept = [c for c in current.get("conditions") or [] if c.get("type") != "Throttled"]
        if cond is not None:
            kept.append(condition(*cond, now_iso))
        if cond is not None or len(kept) != len(current.get("conditions") or []):
            st["conditions"] = kept
    for ref, st in plan.tj_status.items():
        current = (pic.by_ref.get(ref) or {}).get("status") or {}
        if "gpuPowerLimitWatts" not in st and current.get("gpuPowerLimitState") is not None:
            st["gpuPowerLimitWatts"] = None  # preempted or finished: no limit any more
            st["gpuPowerLimitState"] = None
    return limited


def _asked(
    plan: Plan, verdicts: Mapping[tuple[str, str], tuple[Verdict, list[dict[str, Any]]]]
) -> set[tuple[str, str]]:
    """The jobs whose pods this plan asks for a limit (a new or changed one)."""
    asking = {(ns, name) for ns, name, patch in plan.pod_patches if patch.get(ANN_GPU_LIMIT)}
    return {ref for ref, (_, pods) in verdicts.items() if asking.intersection(map(ref_of, pods))}


def _limits_condition(
    state: SiteState,
    mem: ControllerMemory,
    limited: Mapping[str, str],
    now_s: float,
) -> dict[str, Any]:
    now_iso = format_time(now_s)
    reading = state.reading
    measured = None if reading is None else reading.ok
    grace = state.policy.grace_period_s
    silent = sorted(_silent_nodes(state.policy, mem, now_s))
    failed = mem.limit_failed
    status, reason, msg = policy_limits_condition(measured, limited, failed, silent, grace)
    return condition("PowerLimitsApplied", status, reason, msg, now_iso)


def _grace_condition(pol: PowerPolicy, now_s: float) -> dict[str, Any]:
    """Whether `gracePeriod` covers a lost limit (docs/node-agent.md); a warning only."""
    status, reason, msg = grace_period_condition(
        pol.grace_period_s, pol.control_period_s, pol.max_termination_grace_s
    )
    return condition("GracePeriodTooShort", status, reason, msg, format_time(now_s))


def _measurement_conditions(
    state: SiteState,
    mem: ControllerMemory,
    site_w: float | None,
    cap_now: float,
    now_s: float,
    plan: Plan,
) -> list[dict[str, Any]]:
    """Conditions and events that say whether the site is measured and within its cap."""
    now_iso = format_time(now_s)
    pol = state.policy
    policy_ref = {
        "apiVersion": API,
        "kind": "PowerPolicy",
        "metadata": {"name": pol.name, "namespace": "default"},
    }
    reading = state.reading
    if reading is None:
        measured = condition(
            "Measured",
            "False",
            "NotConfigured",
            "spec.prometheus.url is not set: planning on forecasts alone",
            now_iso,
        )
        ok = None
    elif reading.ok:
        msg = f"measured site power {fmt_watts(site_w or 0.0)}"
        if reading.unmeasured:
            gaps = sorted(reading.unmeasured.items())
            msg += (
                f"; {len(gaps)} node(s) without fresh data are planned at forecast: "
                + ", ".join(f"{n} ({why})" for n, why in gaps[:5])
                + (" ..." if len(gaps) > 5 else "")
            )
        measured = condition("Measured", "True", "Measuring", msg, now_iso)
        ok = True
    else:
        measured = condition(
            "Measured",
            "False",
            reading.reason,
            f"{reading.error}; conservative mode: running jobs are planned at their "
            "admission forecasts and new classes at TDP",
            now_iso,
        )
        ok = False
    if ok is False and mem.measuring is not False:
        plan.events.append((policy_ref, "Warning", reading.reason, measured["message"]))
    if ok is True and mem.measuring is False:
        plan.events.append(
            (
                policy_ref,
                "Normal",
                "PrometheusRecovered",
                "measurements are back; planning on measured power again",
            )
        )
    mem.measuring = ok
    if site_w is None:
        within = condition(
            "WithinCap", "Unknown", "NotMeasured", "no trustworthy measurement", now_iso
        )
    elif mem.over_cap_since_s is not None:
        msg = (
            f"measured {fmt_watts(site_w)} > cap {fmt_watts(cap_now)} since "
            f"{format_time(mem.over_cap_since_s)}: admissions stopped; preemptible jobs are "
            f"shed after the {pol.grace_period_s:.0f}s grace period"
        )
        within = condition("WithinCap", "False", "MeasuredOverCap", msg, now_iso)
        if mem.over_cap_since_s == now_s:
            plan.events.append((policy_ref, "Warning", "MeasuredOverCap", msg))
    else:
        within = condition(
            "WithinCap",
            "True",
            "UnderCap",
            f"measured {fmt_watts(site_w)} <= cap {fmt_watts(cap_now)}",
            now_iso,
        )
    return [measured, within]


def _sample(state: SiteState, mem: ControllerMemory, now_s: float) -> None:
    """Record each running TrainingJob's mean per-GPU power from this reading."""
    assert state.reading is not None
    by_pod = state.reading.gpu_watts_by_pod
    # pods carry job_name(TrainingJob name), which differs for long names
    names = {}
    for t in state.trainingjobs:
        meta = t.get("metadata") or {}
        if isinstance(meta.get("name"), str):
            names[(meta.get("namespace", "default"), job_name(meta["name"]))] = meta["name"]
    per_job: dict[tuple[str, str], list[float]] = {}
    for pod in state.pods:
        meta = pod.get("metadata") or {}
        ns = meta.get("namespace", "default")
        owner = names.get((ns, (meta.get("labels") or {}).get(LABEL_TJ)))
        if ANN_GPU_LIMIT in (meta.get("annotations") or {}):
            continue  # drawing at its limit says nothing about its natural draw
        values = by_pod.get((ns, meta.get("name", "")))
        if owner and values:
            per_job.setdefault((ns, owner), []).extend(values)
    for ref, values in per_job.items():
        series = mem.samples.setdefault(ref, [])
        series.append((now_s, sum(values) / len(values)))
        del series[:-MAX_SAMPLES]


def _finished(
    tj: Mapping[str, Any],
    spec: TrainingJobSpec,
    job: Mapping[str, Any],
    mem: ControllerMemory,
    ref: tuple[str, str],
    done: bool,
    now_iso: str,
) -> dict[str, Any]:
    """Status of a finished job; a success also teaches the forecaster its class."""
    status = tj.get("status") or {}
    cond = (
        _job_condition(job, "Complete" if done else "Failed")
        or _job_condition(job, "SuccessCriteriaMet")
        or {}
    )
    phase = SUCCEEDED if done else FAILED
    jstatus = job.get("status") or {}
    finished = jstatus.get("completionTime") or cond.get("lastTransitionTime") or now_iso
    # its draw at work: not its idle wait, ramp or tail (forecast.steady_samples)
    steady = steady_samples(
        mem.samples.pop(ref, []), mem.forecaster.idle, mem.forecaster.tdp, WARMUP_S
    )
    mem.believed.pop(ref, None)
    own = sum(steady) / len(steady) * spec.gpus if steady else None
    measured = round(own, 1) if own is not None else status.get("measuredWatts")
    start, end = _ts(job, "status", "startTime"), _ts(job, "status", "completionTime")
    if done and own is not None:  # only what the operator measured itself teaches the class
        fc = _stored_forecast(job).get("gpuWatts")
        _learn(mem, tj, spec, own, end - start if start and end else None, fc)
    out: dict[str, Any] = {
        "phase": phase,
        "reason": cond.get("reason") or phase,
        "message": cond.get("message") or f"batch Job {job_name(spec.name)} {phase.lower()}",
        "finishedAt": finished,
        "estimatedStart": None,
        "conditions": [condition("Finished", "True", phase, cond.get("message") or phase, now_iso)],
    }
    if measured is not None:
        out["measuredWatts"] = measured
    return out


def _learn(
    mem: ControllerMemory,
    tj: Mapping[str, Any],
    spec: TrainingJobSpec,
    measured_job_watts: float,
    duration_s: float | None,
    forecast_gpu_watts: Any,
) -> None:
    """Feed a succeeded job's measured power to its (namespace, class), once per job.

    Only the operator's own samples and the forecast on the Job it wrote are
    used, never TrainingJob status: a tenant could write `measuredWatts` or
    `forecast` there. History is therefore lost on restart and relearned.
    """
    uid = (tj.get("metadata") or {}).get("uid", spec.key)
    if uid in mem.observed:
        return
    mem.observed.add(uid)
    try:
        fc = float(forecast_gpu_watts) if forecast_gpu_watts is not None else None
    except (TypeError, ValueError):
        fc = None
    per_gpu = float(measured_job_watts) / spec.gpus
    mem.forecaster.observe(
        spec.workload_class,
        per_gpu,
        duration_s,
        fc,
        namespace=spec.namespace,
        hint_gpu_watts=spec.gpu_watts_hint,
    )
    if fc:
        mem.finished.append((spec.workload_class, per_gpu, fc))
        del mem.finished[:-MAX_FINISHED]  # drained each cycle; bounded if that step fails


def _learn_overdraws(mem: ControllerMemory, pic: _Picture, dec: Decision, pol: PowerPolicy) -> None:
    """A job shed while it over-draws its forecast may never finish, so its
    class history learns what it drew now: the class's next forecast rises.
    Once per job (its uid): a later success of the same job is not counted again."""
    by_key = {r.key: r for r in pic.running}
    for p in dec.preempts:
        r = by_key.get(p.key)
        if r is None or not overdraws(r, pol.overdraw_tolerance):
            continue
        ref = _ref_of(p.key)
        spec, tj = pic.specs.get(ref), pic.by_ref.get(ref)
        uid = ((tj or {}).get("metadata") or {}).get("uid")
        if spec is None or uid is None or uid in mem.observed:
            continue
        mem.observed.add(uid)
        assert r.measured_gpu_watts is not None
        mem.forecaster.observe(
            spec.workload_class,
            r.measured_gpu_watts,
            None,
            r.forecast_gpu_watts,
            namespace=spec.namespace,
            hint_gpu_watts=spec.gpu_watts_hint,
        )


def condition(kind: str, status: str, reason: str, message: str, now_iso: str) -> dict[str, Any]:
    """A status condition in the metav1.Condition shape."""
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": now_iso,
    }


WAIT_REASONS = (
    PACED,
    WAITING_FOR_POWER,
    WAITING_FOR_CAP_WINDOW,
    WAITING_FOR_GPUS,
    WAITING_FOR_HIGHER_PRIORITY,
    SHEDDING_LOAD,
    UNSCHEDULABLE,
)


def _policy_status(
    dec: Decision, pol: PowerPolicy, now_s: float, queued: int, running: int
) -> dict[str, Any]:
    measured = dec.measured_site_watts
    window = pol.active_window(now_s)
    # every reason the core gives, at 0 when nobody waits for it: the status is
    # merge-patched, and a key left out would keep its last count for ever
    reasons: dict[str, int] = dict.fromkeys(WAIT_REASONS, 0)
    for w in dec.waits:
        reasons[w.reason] = reasons.get(w.reason, 0) + 1
    return {
        "capWatts": dec.cap_watts,
        "capKilowatts": f"{dec.cap_watts / 1000:.1f}",
        "projectedWatts": round(dec.projected_site_watts, 1),
        "projectedKilowatts": f"{dec.projected_site_watts / 1000:.1f}",
        "measuredWatts": None if measured is None else round(measured, 1),
        "measuredKilowatts": None if measured is None else f"{measured / 1000:.1f}",
        "headroomWatts": round(dec.effective_cap_watts - dec.projected_site_watts, 1),
        "headroomKilowatts": f"{(dec.effective_cap_watts - dec.projected_site_watts) / 1000:.1f}",
        "queuedJobs": queued - len(dec.admits) + len(dec.preempts),
        "runningJobs": running + len(dec.admits) - len(dec.preempts),
        "waitingByReason": reasons,
        "activeWindow": window.name if window else None,
        "lastCycle": format_time(now_s),
    }
