"""Kubernetes reads and writes: the only module that talks to the API server.

Lists come back as the API's JSON (dicts), not client model objects: the
controller reads them like manifests, and skipping model deserialisation is
several times faster for a few thousand objects.

Every write is idempotent: Job names are deterministic, a create that meets
AlreadyExists is a no-op, and status patches are merge patches.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from .controller import LABEL_TJ, Plan, SiteState, status_changed
from .model import API_GROUP, API_VERSION, PowerPolicy

log = logging.getLogger("wattcap.cluster")


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

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    # ------------------------------------------------------------------ reads

    @staticmethod
    def _json(resp: Any) -> dict[str, Any]:
        return json.loads(resp.data)

    def list_policies(self) -> list[dict[str, Any]]:
        resp = self.custom.list_cluster_custom_object(
            API_GROUP, API_VERSION, "powerpolicies", _preload_content=False
        )
        return self._json(resp).get("items", [])

    def read_site(self, policy: PowerPolicy) -> SiteState:
        """Nodes of the site, bound pods, TrainingJobs and their owned Jobs."""
        selector = ",".join(f"{k}={v}" for k, v in policy.node_selector.items()) or None
        nodes = self._json(
            self.core.list_node(label_selector=selector, _preload_content=False)
        ).get("items", [])
        pods = self._json(
            self.core.list_pod_for_all_namespaces(
                field_selector="status.phase!=Succeeded,status.phase!=Failed",
                _preload_content=False,
            )
        ).get("items", [])
        pods = [p for p in pods if (p.get("spec") or {}).get("nodeName")]
        tjs = self._json(
            self.custom.list_cluster_custom_object(
                API_GROUP, API_VERSION, "trainingjobs", _preload_content=False
            )
        ).get("items", [])
        raw = self._json(
            self.batch.list_job_for_all_namespaces(label_selector=LABEL_TJ, _preload_content=False)
        )
        jobs, pods = match_owned(tjs, raw.get("items", []), pods)
        return SiteState(policy, nodes, pods, tjs, jobs)

    # ------------------------------------------------------------------ writes

    def apply(self, plan: Plan, state: SiteState, policy_name: str) -> int:
        """Apply a plan: Jobs first, then status, so a crash in between loses nothing
        (a Job without status is adopted on the next cycle).

        Each write stands alone: one refused write (a namespace being deleted,
        an object gone since the list) must not stop the others, or a cycle
        would suspend Jobs without saying so. Returns how many writes failed.
        """
        failed = 0

        def attempt(what: str, call: Any, *args: Any) -> bool:
            nonlocal failed
            try:
                call(*args)
                return True
            except ApiException as err:
                if err.status == 409 and what == "create Job":
                    log.info("%s %s: already exists; adopting it", what, args[0])
                    return True
                if err.status != 404:  # gone since we listed it: nothing to report on
                    failed += 1
                    log.warning("%s %s failed: %s %s", what, args[:1], err.status, err.reason)
                return False

        for ns, name in plan.suspend_jobs:
            attempt(
                "suspend Job",
                self.batch.patch_namespaced_job,
                name,
                ns,
                {"spec": {"suspend": True}},
            )
        for job in plan.create_jobs:
            attempt(
                "create Job", self.batch.create_namespaced_job, job["metadata"]["namespace"], job
            )
        for ns, name, patch in plan.resume_jobs:
            attempt("resume Job", self.batch.patch_namespaced_job, name, ns, patch)
        current = {
            (t["metadata"].get("namespace", "default"), t["metadata"]["name"]): t.get("status")
            or {}
            for t in state.trainingjobs
        }
        for (ns, name), status in plan.tj_status.items():
            if status_changed(current.get((ns, name), {}), status):
                attempt(
                    "patch status of",
                    self.custom.patch_namespaced_custom_object_status,
                    API_GROUP,
                    API_VERSION,
                    ns,
                    "trainingjobs",
                    name,
                    {"status": status},
                )
        for obj, kind, reason, message in plan.events:
            self.event(obj, kind, reason, message)
        if plan.policy_status:
            attempt(
                "patch status of PowerPolicy",
                self.patch_policy_status,
                policy_name,
                plan.policy_status,
            )
        return failed

    def patch_policy_status(self, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_cluster_custom_object_status(
            API_GROUP, API_VERSION, "powerpolicies", name, {"status": status}
        )

    def event(self, obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """A Kubernetes Event on the object, as `kubectl describe` shows it."""
        meta = obj["metadata"]
        ns = meta.get("namespace", "default")
        now = datetime.now(UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=ns),
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
            self.core.create_namespaced_event(ns, body)
        except ApiException as err:  # events are best effort; never fail a cycle on them
            log.warning("could not post event %s on %s: %s", reason, meta["name"], err.reason)
