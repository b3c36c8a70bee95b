"""Kubernetes reads and writes for the site loop.

The cluster picture each cycle decides on comes from watches (`informer.py`,
the only other module that talks to the API server); what is read here
directly (PowerPolicies, a Job after a conflict) is small. Objects are the
API's JSON (dicts), not client model objects: the controller reads them like
manifests, and skipping model deserialisation is several times faster for a
few thousand objects.

Every write is idempotent: Job names are deterministic, a create that meets
AlreadyExists adopts the Job only if this TrainingJob's uid controls it, and
status patches are merge patches. Every call carries a request timeout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from . import informer
from .controller import (
    LABEL_TJ,
    ControllerMemory,
    Plan,
    SiteState,
    WriteFailure,
    note_write_failures,
)
from .jobs import adoptable, controller_uid
from .model import API_GROUP, API_VERSION, PowerPolicy, ref_of
from .priorities import parse_priority_classes
from .statuswrites import StatusWrites

log = logging.getLogger("wattcap.cluster")


# (connect, read) seconds for every API call: a hung apiserver connection must
# fail the call, not stall the site's loop silently
REQUEST_TIMEOUT = (5.0, 30.0)
WRITERS = 8  # writes in flight at once (the API server's own limit is 200 mutating)
CHUNK = 16  # writes between two checks of the Lease: 2 per writer, so a slow API server
# (a second a write, seen at 300 nodes x 1,500 jobs) still lets the loop renew in time
SUSPEND = {"spec": {"suspend": True}}

R = TypeVar("R")
Fence = Callable[[], bool]


class LeaseLost(Exception):
    """The Lease check between chunks of a cycle's writes failed: the rest were not made."""


def _describe(err: Exception) -> tuple[int | None, str, str]:
    """(HTTP status, reason, the API server's message) of a failed call."""
    if isinstance(err, ApiException):
        message = str(err.reason)
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(err.body or "{}").get("message") or message
        return err.status, str(err.reason), str(message)[:500]
    return None, type(err).__name__, str(err)[:300]


def match_owned(
    trainingjobs: list[dict[str, Any]],
    jobs: list[dict[str, Any]],
    pods: list[dict[str, Any]],
) -> tuple[dict[tuple[str, str], dict[str, Any]], list[dict[str, Any]]]:
    """Owned Jobs by (namespace, TrainingJob name), and the pods as the cycle should see them.

    A Job is a TrainingJob's only if its controller ownerReference carries the
    TrainingJob's uid: a TrainingJob re-created under an old name must not
    inherit the old Job (and "succeed" at once), and labels are anyone's to set.
    A pod labelled wattcap.io/trainingjob counts through its TrainingJob only
    if its controlling Job is one of those; any other (a forged label, a Job
    left by a deleted TrainingJob) is returned without the label, so its GPUs
    count as foreign use and its power is attributed to no TrainingJob.
    """
    uids = {
        (t["metadata"].get("namespace", "default"), t["metadata"].get("uid")): t["metadata"]["name"]
        for t in trainingjobs
    }
    owned: dict[tuple[str, str], dict[str, Any]] = {}
    job_uids: set[str] = set()
    for job in jobs:
        meta = job["metadata"]
        ns = meta.get("namespace", "default")
        for ref in meta.get("ownerReferences") or []:
            name = uids.get((ns, ref.get("uid")))
            if ref.get("kind") == "TrainingJob" and ref.get("controller") and name is not None:
                owned[(ns, name)] = job
                job_uids.add(meta.get("uid", ""))
                break
    seen: list[dict[str, Any]] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        if LABEL_TJ in labels and not any(
            ref.get("controller") and ref.get("uid") in job_uids
            for ref in meta.get("ownerReferences") or []
        ):
            rest = {k: v for k, v in labels.items() if k != LABEL_TJ}
            pod = {**pod, "metadata": {**meta, "labels": rest}}
        seen.append(pod)
    return owned, seen


class Cluster:
    """Thin wrapper over the kubernetes client for what the operator needs."""

    def __init__(
        self,
        api_client: client.ApiClient | None = None,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
        picture: informer.Informer | None = None,
    ) -> None:
        self.timeout = timeout
        self.write_errors = 0
        # which TrainingJob statuses each cycle writes (one Cluster per site loop)
        self.status_writes = StatusWrites()
        # the last apply_status's TrainingJob statuses sent: (of substance, that could wait)
        self.status_sent = (0, 0)
        self._pool: ThreadPoolExecutor | None = None  # the writers, started on first need
        # the watch-fed picture read_site reads; the process's shared one unless given
        self.picture = picture
        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            conf = client.Configuration.get_default_copy()
            # a connection per writer (the default pool is 5 per CPU), plus the reads
            conf.connection_pool_maxsize = max(conf.connection_pool_maxsize, WRITERS + 2)
            api_client = client.ApiClient(conf)
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.scheduling = client.SchedulingV1Api(api_client)

    # ------------------------------------------------------------------ reads

    @staticmethod
    def _json(resp: Any) -> dict[str, Any]:
        return json.loads(resp.data)

    def list_policies(self) -> list[dict[str, Any]]:
        resp = self.custom.list_cluster_custom_object(
            API_GROUP,
            API_VERSION,
            "powerpolicies",
            _preload_content=False,
            _request_timeout=self.timeout,
        )
        return self._json(resp).get("items", [])

    def read_site(self, policy: PowerPolicy) -> SiteState:
        """Nodes of the site, bound pods, TrainingJobs, their owned Jobs and the
        PriorityClasses their priorities come from, as the watch-fed picture
        (`informer.py`) holds them: no LIST in steady state.

        Conservative: until every kind has been listed (or while one is being
        listed again after a failed watch) it waits up to the read timeout and
        then raises `NotSynced`, so the cycle decides nothing."""
        if self.picture is None:
            self.picture = informer.shared(self.api_client, self.timeout)
        if not self.picture.wait_ready(self.timeout[1]):
            raise informer.NotSynced("the cluster picture is not complete; nothing is decided")
        pic = self.picture.snapshot()
        want = policy.node_selector.items()
        nodes = [
            n for n in pic.nodes if want <= ((n.get("metadata") or {}).get("labels") or {}).items()
        ]
        jobs, pods = match_owned(pic.trainingjobs, pic.jobs, pic.pods)
        return SiteState(
            policy,
            nodes,
            pods,
            pic.trainingjobs,
            jobs,
            priority_classes=parse_priority_classes(pic.priorityclasses),
        )

    # ------------------------------------------------------------------ writes

    def _each(
        self, calls: Sequence[Callable[[], R]], fence: Fence | None, until: float | None = None
    ) -> list[R]:
        """Run independent writes `WRITERS` at a time, in chunks of `CHUNK`, in order.

        A burst of thousands of jobs is thousands of writes in one cycle; one
        at a time they took longer than the cycle's period (about 9 s for 500
        jobs). Before each chunk `fence` must say the Lease is still held
        without a gap since the cycle's read (`SiteLease.fresh`), else
        `LeaseLost` is raised and the rest are not written. Writes that can
        wait stop at `until` (`time.monotonic()`), after their first chunk:
        the result is then shorter than `calls`."""
        out: list[R] = []
        for i in range(0, len(calls), CHUNK):
            if fence is not None and not fence():
                raise LeaseLost(f"{len(calls) - i} writes of this kind not made")
            if until is not None and i > 0 and time.monotonic() >= until:
                break
            chunk = calls[i : i + CHUNK]
            if len(chunk) == 1:
                out.append(chunk[0]())
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(WRITERS, thread_name_prefix="wattcap-write")
            out.extend(self._pool.map(lambda call: call(), chunk))
        return out

    def apply(
        self,
        plan: Plan,
        state: SiteState,
        policy_name: str,
        mem: ControllerMemory | None = None,
        now_s: float | None = None,
        fence: Fence | None = None,
    ) -> int:
        """Apply a plan: Jobs first, then status, so a crash in between loses nothing
        (a Job without status is adopted on the next cycle).

        Each write stands alone: one refused write (a namespace being deleted,
        an object gone since the list) must not stop the others, or a cycle
        would suspend Jobs without saying so. A refused Job write turns the
        TrainingJob's planned "Admitted" into a report of the failure
        (`note_write_failures`) before any status is written. Returns how many
        writes failed.
        """
        failures = self.apply_jobs(plan, fence)
        if mem is not None:
            note_write_failures(plan, mem, failures, time.time() if now_s is None else now_s)
        failed = self.apply_pod_limits(plan, fence)
        return len(failures) + failed + self.apply_status(plan, state, policy_name, fence)

    def apply_pod_limits(self, plan: Plan, fence: Fence | None = None) -> int:
        """Ask for, change or release GPU power limits on pods (their annotation);
        how many patches failed. A pod without its limit stays unconfirmed, and past
        the grace period its job is preempted instead (enforcement.py)."""
        calls = [
            partial(
                self._attempt,
                self.core.patch_namespaced_pod,
                name,
                ns,
                {"metadata": {"annotations": ann}},
            )
            for ns, name, ann in plan.pod_patches
        ]
        failed = 0
        for (ns, name, _), err in zip(plan.pod_patches, self._each(calls, fence), strict=True):
            if err is not None:
                failed += 1
                log.warning("GPU power limit on pod %s/%s failed: %s %s", ns, name, *err[:2])
        self.write_errors += failed
        return failed

    def apply_jobs(self, plan: Plan, fence: Fence | None = None) -> list[WriteFailure]:
        """Suspend, delete (moves), create and resume Jobs; what was refused, per TrainingJob.

        Each kind is written concurrently (`_each`), the kinds in this order:
        suspends first (they shed power), and a create only after the delete
        of the Job it replaces."""
        failures: list[WriteFailure] = []
        suspends = [
            partial(self._attempt, self.batch.patch_namespaced_job, name, ns, SUSPEND)
            for ns, name in plan.suspend_jobs
        ]
        for (ns, name), err in zip(plan.suspend_jobs, self._each(suspends, fence), strict=True):
            if err is not None:
                log.warning("suspend Job %s/%s failed: %s", ns, name, err[1])
                self.write_errors += 1
        deletes = [
            partial(
                self._attempt,
                self.batch.delete_namespaced_job,
                name,
                ns,
                body=client.V1DeleteOptions(
                    propagation_policy="Background",
                    preconditions=client.V1Preconditions(uid=uid) if uid else None,
                ),
            )
            for ns, name, uid in plan.delete_jobs
        ]
        not_deleted: set[tuple[str, str]] = set()
        for (ns, name, _), err in zip(plan.delete_jobs, self._each(deletes, fence), strict=True):
            if err is not None:
                not_deleted.add((ns, name))
                failures.append(self._failure(plan, ns, name, "delete Job", err))
        # while the old Job is still there, creating would only conflict
        creating = [job for job in plan.create_jobs if ref_of(job) not in not_deleted]
        creates = [partial(self._create_job, job) for job in creating]
        for job, err in zip(creating, self._each(creates, fence), strict=True):
            if err is not None:
                ns, name = ref_of(job)
                failures.append(self._failure(plan, ns, name, "create Job", err))
        resumes = [
            partial(self._attempt, self.batch.patch_namespaced_job, name, ns, patch)
            for ns, name, patch in plan.resume_jobs
        ]
        for (ns, name, _), err in zip(plan.resume_jobs, self._each(resumes, fence), strict=True):
            if err is not None:
                failures.append(self._failure(plan, ns, name, "resume Job", err))
        for f in failures:
            log.warning(
                "%s for %s/%s failed: %s %s: %s", f.what, *f.ref, f.code, f.reason, f.message
            )
        return failures

    def _create_job(self, job: dict[str, Any]) -> tuple[int | None, str, str] | None:
        """Create a Job; after a 409, adopt the one there if it is ours."""
        ns, name = ref_of(job)
        err = self._attempt(self.batch.create_namespaced_job, ns, job)
        if err is not None and err[0] == 409:
            err = self._adopt(ns, name, job)
        return err

    def _adopt(
        self, ns: str, name: str, desired: dict[str, Any]
    ) -> tuple[int | None, str, str] | None:
        """After a 409 on create: the Job of that name is ours only if its
        controller owner is this TrainingJob's uid (never matched by name)."""
        try:
            existing = self._json(
                self.batch.read_namespaced_job(
                    name, ns, _preload_content=False, _request_timeout=self.timeout
                )
            )
        except Exception as err:  # reported on the TrainingJob
            return _describe(err)
        if adoptable(existing, desired):
            log.info("create Job %s/%s: already exists and is ours; adopting it", ns, name)
            return None
        owner = controller_uid(existing) or "none"
        why = (
            f"a Job named {name} already exists and is not this TrainingJob's "
            f"(its controller uid: {owner}"
            + ("; being deleted" if existing["metadata"].get("deletionTimestamp") else "")
            + ")"
        )
        return 409, "JobNameConflict", why

    def _attempt(self, call: Any, *args: Any, **kw: Any) -> tuple[int | None, str, str] | None:
        """One write; None if it went through (or its object is already gone)."""
        try:
            call(*args, _request_timeout=self.timeout, **kw)
            return None
        except ApiException as err:
            if err.status == 404 and call.__name__ != "create_namespaced_job":
                return None  # gone since we listed it: nothing to report on
            return _describe(err)
        except Exception as err:  # timeouts, resets: this write failed
            return _describe(err)

    @staticmethod
    def _failure(
        plan: Plan, ns: str, name: str, what: str, err: tuple[int | None, str, str]
    ) -> WriteFailure:
        ref = plan.job_refs.get((ns, name), (ns, name))
        return WriteFailure(ref, what, err[0], err[1], err[2])

    def apply_status(
        self,
        plan: Plan,
        state: SiteState,
        policy_name: str,
        fence: Fence | None = None,
        until: float | None = None,
    ) -> int:
        """TrainingJob and PowerPolicy status, and Events; how many writes failed.

        Of the TrainingJob statuses, every change of substance is written and
        refreshes (newer text only) a bounded share a cycle, least recently
        written first (`statuswrites.py`); a status the TrainingJob already
        has is not written, and one whose key (`Plan.status_keys`) is last
        cycle's is not compared again. A condition whose status is unchanged
        keeps its stored `lastTransitionTime`. The writes that can wait (new
        waiting jobs' first answers, refreshes) go last and stop at `until`
        after their first chunk; the next cycle picks the rest again."""
        failed = 0
        current = {ref_of(t): t.get("status") or {} for t in state.trainingjobs}
        evented = {ref_of(obj) for obj, *_ in plan.events}
        picked = self.status_writes.to_write(
            current, plan.tj_status, time.time(), plan.status_keys, evented
        )
        changed = [(ns, name, status) for (ns, name), status in picked]
        patches = [
            partial(
                self._attempt,
                self.custom.patch_namespaced_custom_object_status,
                API_GROUP,
                API_VERSION,
                ns,
                "trainingjobs",
                name,
                {"status": status},
            )
            for ns, name, status in changed
        ]
        # what must go out first (statuses of substance, Events, the policy's
        # status), then what can wait, until `until`: the budget bounds the cycle
        k = self.status_writes.optional_at
        results = self._each(patches[:k], fence)
        self._each([partial(self.event, *e) for e in plan.events], fence)
        if plan.policy_status:
            err = self._attempt(self.patch_policy_status, policy_name, plan.policy_status)
            if err is not None:
                failed += 1
                log.warning("patch status of PowerPolicy %s failed: %s %s", policy_name, *err[:2])
        results += self._each(patches[k:], fence, until)
        went: list[tuple[str, str]] = []
        for (ns, name, _), err in zip(changed, results, strict=False):
            if err is not None:
                failed += 1
                log.warning("patch status of %s/%s failed: %s %s", ns, name, *err[:2])
            else:
                went.append((ns, name))
        self.status_writes.written(went)  # a refused one keeps its place in line
        self.status_writes.left(len(changed) - len(results))
        self.status_sent = (min(k, len(results)), max(len(results) - k, 0))
        self.write_errors += failed
        return failed

    def patch_policy_status(
        self, name: str, status: dict[str, Any], _request_timeout: Any = None
    ) -> None:
        self.custom.patch_cluster_custom_object_status(
            API_GROUP,
            API_VERSION,
            "powerpolicies",
            name,
            {"status": status},
            _request_timeout=_request_timeout or self.timeout,
        )

    def event(self, obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """A Kubernetes Event on the object, as `kubectl describe` shows it."""
        meta = obj["metadata"]
        ns = meta.get("namespace", "default")
        now = datetime.now(UTC)
        body = client.CoreV1Event(
            # generateName adds 5 characters; names may be 253 long
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name'][:200]}.", namespace=ns),
            involved_object=client.V1ObjectReference(
                api_version=obj.get("apiVersion"),
                kind=obj.get("kind"),
                name=meta["name"],
                namespace=meta.get("namespace"),
                uid=meta.get("uid"),
            ),
            reason=reason,
            message=message[:1024],
            type=kind,
            count=1,
            source=client.V1EventSource(component="wattcap"),
            first_timestamp=now,
            last_timestamp=now,
        )
        try:
            self.core.create_namespaced_event(ns, body, _request_timeout=self.timeout)
        except Exception as err:  # events are best effort; never fail a cycle
            log.warning("could not post event %s on %s: %s", reason, meta["name"], err)
