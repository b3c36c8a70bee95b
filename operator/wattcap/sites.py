"""Several sites in one cluster: which nodes and which TrainingJobs each PowerPolicy governs.

Pure functions over the API's JSON (no I/O), applied to the cluster picture
after it is read, so each site's loop decides on its own nodes and jobs only.

Nodes. A PowerPolicy governs the nodes its `nodeSelector` selects (an empty
selector: every node). A node two policies select belongs to the older one
(`creationTimestamp`, then name); the younger reports `NodeConflict` naming
it and decides without it. So every node is governed by at most one site.

TrainingJobs. A job names its site in the optional, immutable `spec.site`
(a PowerPolicy name); without it, it goes to the default site: the oldest
PowerPolicy with `spec.defaultSite: true`, else the oldest PowerPolicy.
Power follows the nodes, not the request: a Job that holds nodes (running,
or suspended with pods still stopping) belongs to the site that governs most
of the nodes it was placed on, and its pods count only toward the site of
the node they run on (on another site's node they are that site's foreign
GPU use). A job whose site does not exist, or whose Job runs on nodes no
policy governs, is decided by no site: it waits with a reason naming the
field, reported by the default site (`orphan_status`), and is picked up
again as soon as its site exists.

Naming another team's site gains a tenant nothing against any cap: the job
queues under that site's cap and priorities like every other job there.
Which namespaces may use which nodes at all is access control (taints,
quota, or a ValidatingAdmissionPolicy on `spec.site`), not wattcap's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .controller import (
    Plan,
    SiteState,
    _placement,
    condition,
)
from .jobs import LABEL_TJ, job_name
from .model import FAILED, PREEMPTED, QUEUED, SUCCEEDED, PowerPolicy

SITE_NOT_FOUND = "SiteNotFound"
NODES_UNGOVERNED = "NodesUngoverned"
NO_SITE = "NoPowerPolicy"
NODE_CONFLICT = "NodeConflict"
POLICY_INVALID = "PolicyInvalid"
# reasons a job's status carries while no valid site decides it; cleared once one does
ORPHAN_REASONS = (SITE_NOT_FOUND, NODES_UNGOVERNED, NO_SITE, POLICY_INVALID)


@dataclass(frozen=True, slots=True)
class Site:
    """What one PowerPolicy says about which nodes and jobs are its."""

    name: str
    created: str
    selector: Mapping[str, str]
    default: bool = False


def parse_sites(policies: Iterable[Mapping[str, Any]]) -> list[Site]:
    """The sites, oldest first; a policy being deleted governs nothing any more.

    Read from the raw objects (never raises): a policy whose other fields are
    invalid still claims its nodes, so its jobs wait rather than move."""
    out: list[Site] = []
    for p in policies:
        meta = p.get("metadata") or {}
        spec = p.get("spec") or {}
        name = meta.get("name")
        if not isinstance(name, str) or not name or meta.get("deletionTimestamp"):
            continue
        sel = spec.get("nodeSelector") if isinstance(spec, Mapping) else None
        selector = {str(k): str(v) for k, v in sel.items()} if isinstance(sel, Mapping) else {}
        default = isinstance(spec, Mapping) and spec.get("defaultSite") is True
        out.append(Site(name, str(meta.get("creationTimestamp") or ""), selector, default))
    out.sort(key=lambda s: (s.created, s.name))
    return out


def default_site(sites: Sequence[Site]) -> str | None:
    """The site of jobs that name none: the oldest flagged default, else the oldest."""
    for s in sites:
        if s.default:
            return s.name
    return sites[0].name if sites else None


def _labels(node: Mapping[str, Any]) -> Mapping[str, Any]:
    return (node.get("metadata") or {}).get("labels") or {}


def _selects(selector: Mapping[str, str], labels: Mapping[str, Any]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def node_owners(
    sites: Sequence[Site], nodes: Iterable[Mapping[str, Any]]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(node name -> its governing site, site -> its nodes that an older site governs)."""
    owners: dict[str, str] = {}
    conflicts: dict[str, list[str]] = {}
    for node in nodes:
        name = (node.get("metadata") or {}).get("name")
        if not isinstance(name, str):
            continue
        labels = _labels(node)
        for s in sites:  # oldest first
            if not _selects(s.selector, labels):
                continue
            if name in owners:
                conflicts.setdefault(s.name, []).append(name)
            else:
                owners[name] = s.name
    return owners, conflicts


@dataclass(frozen=True, slots=True)
class Assignment:
    """Which site decides a TrainingJob; `site` None: none, it waits for `reason`."""

    site: str | None
    reason: str | None = None
    message: str = ""


def _holds_nodes(job: Mapping[str, Any]) -> bool:
    """Whether a Job's pods may be on its nodes now (running, or suspended and still stopping)."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if (
            c.get("type") in ("Complete", "Failed", "SuccessCriteriaMet")
            and c.get("status") == "True"
        ):
            return False
    suspended = bool((job.get("spec") or {}).get("suspend"))
    active = (job.get("status") or {}).get("active")
    return not suspended or (isinstance(active, int) and active > 0)


def _names(nodes: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(nodes[:limit])
    return shown + (f" and {len(nodes) - limit} more" if len(nodes) > limit else "")


def assign(
    tj: Mapping[str, Any],
    job: Mapping[str, Any] | None,
    sites: Sequence[Site],
    owners: Mapping[str, str],
) -> Assignment:
    """The site that decides one TrainingJob (see the module docstring)."""
    order = {s.name: i for i, s in enumerate(sites)}
    if job is not None and _holds_nodes(job):
        placed = _placement(job)
        if placed:
            counts: dict[str, int] = {}
            for n in placed:
                if n in owners:
                    counts[owners[n]] = counts.get(owners[n], 0) + 1
            if counts:
                # most of its nodes; a tie goes to the older site
                return Assignment(min(counts, key=lambda s: (-counts[s], order[s])))
            return Assignment(
                None,
                NODES_UNGOVERNED,
                f"its Job runs on nodes no PowerPolicy's nodeSelector governs "
                f"({_names(list(placed))}): its site's PowerPolicy was deleted or the "
                "nodes relabelled; no site counts its power until it finishes or a "
                "PowerPolicy selects those nodes",
            )
    spec = tj.get("spec") or {}
    named = spec.get("site") if isinstance(spec, Mapping) else None
    if named is not None:
        if isinstance(named, str) and named in order:
            return Assignment(named)
        return Assignment(
            None,
            SITE_NOT_FOUND,
            f"spec.site names PowerPolicy {named!r}, which does not exist; waiting until it does",
        )
    dflt = default_site(sites)
    if dflt is None:
        return Assignment(None, NO_SITE, "no PowerPolicy exists; waiting until one does")
    return Assignment(dflt)


@dataclass(slots=True)
class SiteView:
    """One site's part of the cluster picture, and what it reports beyond its own jobs."""

    state: SiteState
    conflicts: list[str] = field(default_factory=list)  # nodes it selects that older sites govern
    older: list[str] = field(default_factory=list)  # the sites that govern them
    # TrainingJobs no site decides, for the default site to report: (tj, job, assignment)
    orphans: list[tuple[dict[str, Any], dict[str, Any] | None, Assignment]] = field(
        default_factory=list
    )
    exists: bool = True  # False: this policy is being deleted, it governs nothing


def _ref(tj: Mapping[str, Any]) -> tuple[str, str] | None:
    meta = tj.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str):
        return None
    return str(meta.get("namespace", "default")), name


def site_view(
    state: SiteState, policies: Iterable[Mapping[str, Any]], policy: PowerPolicy
) -> SiteView:
    """The picture as site `policy.name` decides it.

    `state` is the whole cluster's picture (every node, every bound pod, every
    TrainingJob and owned Job); the view keeps this site's nodes, the pods on
    them, and this site's TrainingJobs and their Jobs. A pod of another site's
    job on one of these nodes loses its TrainingJob label, so its GPUs count
    here as foreign use (they are not in this site's picture otherwise).
    """
    sites = parse_sites(policies)
    me = policy.name
    owners, conflicts = node_owners(sites, state.nodes)
    nodes = [n for n in state.nodes if owners.get((n.get("metadata") or {}).get("name")) == me]
    here = {(n.get("metadata") or {}).get("name") for n in nodes}
    reporter = default_site(sites) == me
    tjs: list[dict[str, Any]] = []
    jobs: dict[tuple[str, str], dict[str, Any]] = {}
    orphans: list[tuple[dict[str, Any], dict[str, Any] | None, Assignment]] = []
    mine: set[tuple[str, str]] = set()  # (namespace, pod label value) of this site's jobs
    for tj, ref, job, got in _assigned(state, sites, owners):
        if got.site == me:
            tjs.append(tj)
            if job is not None:
                jobs[ref] = job
            mine.add((ref[0], job_name(ref[1])))
        elif got.site is None and reporter:
            orphans.append((tj, job, got))
    pods = []
    for pod in state.pods:
        meta = pod.get("metadata") or {}
        if (pod.get("spec") or {}).get("nodeName") not in here:
            continue
        labels = meta.get("labels") or {}
        if LABEL_TJ in labels and (meta.get("namespace", "default"), labels[LABEL_TJ]) not in mine:
            rest = {k: v for k, v in labels.items() if k != LABEL_TJ}
            pod = {**pod, "metadata": {**meta, "labels": rest}}
        pods.append(pod)
    view = replace(state, policy=policy, nodes=nodes, pods=pods, trainingjobs=tjs, jobs=jobs)
    lost = conflicts.get(me, [])
    older = sorted({owners[n] for n in lost})
    return SiteView(view, lost, older, orphans, any(s.name == me for s in sites))


def _assigned(
    state: SiteState, sites: Sequence[Site], owners: Mapping[str, str]
) -> Iterator[tuple[dict[str, Any], tuple[str, str], dict[str, Any] | None, Assignment]]:
    """Each TrainingJob with a name, its Job, and the site it belongs to: what
    a site's view and a refused site's statuses both walk."""
    for tj in state.trainingjobs:
        ref = _ref(tj)
        if ref is None:
            continue
        job = state.jobs.get(ref)
        yield tj, ref, job, assign(tj, job, sites, owners)


def orphan_status(
    tj: Mapping[str, Any], job: Mapping[str, Any] | None, got: Assignment, now_iso: str
) -> dict[str, Any] | None:
    """The status of a job no site decides (None: leave it, it has finished).

    A job without a running Job waits (`Queued`, or still `Preempted`); one
    whose Job runs on ungoverned nodes keeps its phase and says so."""
    assert got.reason is not None
    status = tj.get("status") or {}
    prev = status.get("phase")
    if prev in (SUCCEEDED, FAILED):
        return None
    if got.reason == NODES_UNGOVERNED:
        return {
            "reason": got.reason,
            "message": got.message,
            "conditions": [condition("Governed", "False", got.reason, got.message, now_iso)],
        }
    return {
        "phase": PREEMPTED if prev == PREEMPTED else QUEUED,
        "reason": got.reason,
        "message": got.message,
        "placement": [],
        "estimatedStart": None,
        "conditions": [condition("Admitted", "False", got.reason, got.message, now_iso)],
    }


def invalid_policy_statuses(
    state: SiteState, policies: Iterable[Mapping[str, Any]], name: str, why: str, now_iso: str
) -> dict[tuple[str, str], dict[str, Any]]:
    """The status of each job of site `name` while the operator refuses its
    PowerPolicy (`why`: the field and what is wrong with it), so no job of the
    site sits without one: it waits (or, running, keeps its phase) saying which
    policy to fix and where. `state` is the whole cluster's picture."""
    sites = parse_sites(policies)
    owners, _ = node_owners(sites, state.nodes)
    msg = (
        f"PowerPolicy {name} is invalid ({why}); nothing is admitted under it "
        "until that field is fixed"
    )
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for tj, ref, job, got in _assigned(state, sites, owners):
        if got.site != name:
            continue
        holds = job is not None and _holds_nodes(job) and bool(_placement(job))
        status = orphan_status(
            tj, job, Assignment(None, NODES_UNGOVERNED if holds else POLICY_INVALID, msg), now_iso
        )
        if status is not None:
            status["reason"] = POLICY_INVALID
            for c in status["conditions"]:
                c["reason"] = POLICY_INVALID
            out[ref] = status
    return out


def conflict_condition(view: SiteView, now_iso: str) -> dict[str, Any]:
    """The PowerPolicy's `NodeConflict` condition: which nodes an older policy governs."""
    conflicts = view.conflicts
    if not conflicts:
        return condition(
            NODE_CONFLICT, "False", "NoConflict", "no other PowerPolicy governs its nodes", now_iso
        )
    return condition(
        NODE_CONFLICT,
        "True",
        "NodesGovernedByOlderPolicy",
        f"{len(conflicts)} nodes its nodeSelector selects are governed by the older "
        f"PowerPolicy {', '.join(view.older)} and are left out of this site: "
        f"{_names(sorted(conflicts))}",
        now_iso,
    )


def report_site(plan: Plan, view: SiteView, now_iso: str) -> SiteState:
    """Add what a site reports beyond its own decision to `plan`: its
    `NodeConflict` condition and (the default site) the status of each job
    no site decides. Returns the picture the status writes compare with."""
    plan.policy_status.setdefault("conditions", []).append(conflict_condition(view, now_iso))
    for tj, job, got in view.orphans:
        status = orphan_status(tj, job, got, now_iso)
        ref = _ref(tj)
        if status is not None and ref is not None:
            plan.tj_status[ref] = status
    for tj in view.state.trainingjobs:  # its own again: no stale "no site" on it
        ref = _ref(tj)
        desired = plan.tj_status.get(ref) if ref is not None else None
        was = (tj.get("status") or {}).get("reason")
        if desired is not None and was in ORPHAN_REASONS and "reason" not in desired:
            msg = f"governed again by site {view.state.policy.name}"
            desired.update(reason="Governed", message=msg)
            desired["conditions"] = [condition("Governed", "True", "Governed", msg, now_iso)]
    orphans = [o[0] for o in view.orphans]
    return replace(view.state, trainingjobs=[*view.state.trainingjobs, *orphans])
