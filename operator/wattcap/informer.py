"""The cluster as the site loop reads it, kept from watches instead of listed each cycle.

Each kind the loop reads (nodes; pods that are bound and not finished;
TrainingJobs; batch Jobs labelled `wattcap.io/trainingjob`; PriorityClasses)
is listed once, paginated, and then watched from the list's resourceVersion.
The selectors are the API server's own (a field selector on pods, a label
selector on Jobs), so pods that finished or are not yet bound never reach the
operator. A 410 Gone, an error event or a broken watch ends in a fresh list;
a watch the server closed on its timeout is resumed from the last version
seen (bookmarks keep that version current). Every call carries a request
timeout, so a hung connection fails and is replaced rather than freezing the
picture.

Conservative by construction: `synced` is False until every kind has been
listed once, and `ready()` is False while any kind is being relisted after a
failure; `Cluster.read_site` waits for it and otherwise fails the cycle,
which then decides nothing.

A cycle may see the previous cycle's writes a little late (the watch's lag,
normally milliseconds against the loop's one-second debounce). That costs a
repeated write, never a second Job: Job names are deterministic, a create
that meets its own Job adopts it, and status patches are merge patches.

Memory: only the fields the decision core reads are kept (`_KEEP`):
`managedFields` and last-applied annotations go everywhere; node images and
pod container commands, env and volumes are dropped. Deleted objects are
removed, so the picture is bounded by what exists.

Why this and not kopf indexes: kopf filters by labels and fields on the
client, so every pod and every Job in the cluster would still be streamed to
the operator; an index can only be built and tested by running kopf's
reactor; and the loop is a thread that needs a consistent copy of five
kinds at once. This is one small class over the kubernetes client that the
tests drive directly against a real API server.

One picture serves every site loop in the process (`shared()`); the objects
in it are shared and must not be changed by readers.
"""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

from .jobs import LABEL_TJ
from .model import API_GROUP, API_VERSION

log = logging.getLogger("wattcap.informer")

KINDS = ("nodes", "pods", "trainingjobs", "jobs", "priorityclasses")
# server-side: only pods that hold a node's resources now
POD_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed,spec.nodeName!="
PAGE = 500
WATCH_S = 300  # the server ends each watch after about this long; it is resumed


class NotSynced(RuntimeError):
    """The picture is not complete (first lists not done, or a kind relisting)."""


@dataclass(frozen=True, slots=True)
class Picture:
    """One consistent copy of what the loop reads; lists of API JSON dicts."""

    nodes: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    trainingjobs: list[dict[str, Any]]
    jobs: list[dict[str, Any]]
    priorityclasses: list[dict[str, Any]]


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    ann = meta.get("annotations")
    if ann and "kubectl.kubernetes.io/last-applied-configuration" in ann:
        meta["annotations"] = {
            k: v for k, v in ann.items() if k != "kubectl.kubernetes.io/last-applied-configuration"
        }
    return meta


def _container(c: dict[str, Any]) -> dict[str, Any]:
    return {k: c[k] for k in ("name", "resources", "restartPolicy") if k in c}


def _keep_pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    kept = {k: spec[k] for k in ("nodeName", "priority", "priorityClassName") if k in spec}
    for k in ("containers", "initContainers"):
        if isinstance(spec.get(k), list):
            kept[k] = [_container(c) for c in spec[k] if isinstance(c, dict)]
    return {
        "metadata": _meta(obj),
        "spec": kept,
        "status": {k: status[k] for k in ("phase", "conditions", "startTime") if k in status},
    }


def _keep_node(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status") or {}
    return {
        "metadata": _meta(obj),
        "spec": obj.get("spec") or {},
        "status": {k: status[k] for k in ("allocatable", "capacity", "conditions") if k in status},
    }


def _keep_all(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "metadata": _meta(obj)}


# per kind: what of each object is kept (the fields the decision core reads)
_KEEP: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "nodes": _keep_node,
    "pods": _keep_pod,
    "trainingjobs": _keep_all,
    "jobs": _keep_all,
    "priorityclasses": _keep_all,
}


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


class _Gone(Exception):
    """The watch cannot resume (410, or an error event): list again."""


class Informer:
    """A watch-fed, thread-safe picture of nodes, pods, TrainingJobs, owned Jobs
    and PriorityClasses (see the module docstring)."""

    def __init__(
        self,
        api_client: client.ApiClient,
        timeout: tuple[float, float] = (5.0, 30.0),
        watch_s: int = WATCH_S,
    ) -> None:
        self.timeout = timeout
        self.watch_s = watch_s
        core = client.CoreV1Api(api_client)
        custom = client.CustomObjectsApi(api_client)
        self._calls: dict[str, Callable[..., Any]] = {
            "nodes": core.list_node,
            "pods": partial(core.list_pod_for_all_namespaces, field_selector=POD_SELECTOR),
            "trainingjobs": partial(
                custom.list_cluster_custom_object, API_GROUP, API_VERSION, "trainingjobs"
            ),
            "jobs": partial(
                client.BatchV1Api(api_client).list_job_for_all_namespaces, label_selector=LABEL_TJ
            ),
            "priorityclasses": client.SchedulingV1Api(api_client).list_priority_class,
        }
        self._items: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in KINDS}
        self._listed: set[str] = set()  # listed at least once
        self._live: set[str] = set()  # listed and watching, no failure since
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._responses: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []
        self.lists: dict[str, int] = dict.fromkeys(KINDS, 0)  # LIST calls made, per kind

    # ------------------------------------------------------------------ state

    @property
    def synced(self) -> bool:
        """Every kind has been listed at least once."""
        with self._changed:
            return len(self._listed) == len(KINDS)

    def ready(self) -> bool:
        """Synced, and no kind is being relisted after a failure."""
        with self._changed:
            return len(self._live) == len(KINDS)

    def wait_ready(self, timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self._live) == len(KINDS), timeout_s)

    def snapshot(self) -> Picture:
        """A copy of the picture now; raises NotSynced until every kind is listed."""
        with self._changed:
            if len(self._listed) != len(KINDS):
                missing = sorted(set(KINDS) - self._listed)
                raise NotSynced(f"not yet listed: {', '.join(missing)}")
            return Picture(*(list(self._items[k].values()) for k in KINDS))

    def replace(self, kind: str, items: list[dict[str, Any]]) -> None:
        """A fresh list of `kind`: it replaces whatever was kept."""
        keep = _KEEP[kind]
        fresh = {_key(o): keep(o) for o in items}
        with self._changed:
            self._items[kind] = fresh
            self._listed.add(kind)
            self._live.add(kind)
            self._changed.notify_all()

    def handle(self, kind: str, event: dict[str, Any]) -> str | None:
        """Apply one watch event; returns the resourceVersion it carries (None: none).
        Raises _Gone for an error event (a 410 among them): the caller lists again."""
        kind_of = event.get("type")
        obj = event.get("object") or {}
        if kind_of == "ERROR":
            raise _Gone(f"{obj.get('code')} {obj.get('reason')}: {obj.get('message')}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if kind_of in ("ADDED", "MODIFIED"):
            kept = _KEEP[kind](obj)
            with self._changed:
                self._items[kind][_key(obj)] = kept
        elif kind_of == "DELETED":
            with self._changed:
                self._items[kind].pop(_key(obj), None)
        return rv

    # ------------------------------------------------------------------ threads

    def start(self) -> None:
        """One thread per kind, listing and watching until `stop()`."""
        for kind in KINDS:
            t = threading.Thread(
                target=self._run, args=(kind,), name=f"informer-{kind}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for resp in list(self._responses.values()):
            try:
                resp.close()
            except Exception as err:  # closing a dead connection: nothing to do
                log.debug("closing a watch: %r", err)
        for t in self._threads:
            t.join(timeout=5)

    def _run(self, kind: str) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                rv = self._list(kind)
                failures = 0
                while not self._stop.is_set():
                    rv = self._watch(kind, rv)
            except Exception as err:  # 410, error event, broken or hung connection
                with self._changed:
                    self._live.discard(kind)
                if self._stop.is_set():
                    return
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures - 1, 6)) * random.uniform(0.8, 1.2)
                log.info("watch of %s ended (%r); listing again in %.1fs", kind, err, delay)
                self._stop.wait(0 if isinstance(err, _Gone) and failures == 1 else delay)

    def _list(self, kind: str) -> str:
        """List `kind` in pages; the resourceVersion to watch from."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            self.lists[kind] += 1
            resp = self._calls[kind](
                limit=PAGE,
                _continue=token,
                _preload_content=False,
                _request_timeout=self.timeout,
            )
            body = json.loads(resp.data)
            items.extend(body.get("items") or [])
            meta = body.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                break
        self.replace(kind, items)
        return str(meta.get("resourceVersion", ""))

    def _watch(self, kind: str, rv: str) -> str:
        """Watch `kind` from `rv` until the server ends the watch; the last version seen."""
        resp = self._calls[kind](
            watch=True,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=int(self.watch_s * random.uniform(0.8, 1.0)),
            _preload_content=False,
            # a silent connection fails a little after the server's own timeout
            _request_timeout=(self.timeout[0], self.watch_s + self.timeout[1]),
        )
        self._responses[kind] = resp
        try:
            for event in _events(resp):
                rv = self.handle(kind, event) or rv
        finally:
            self._responses.pop(kind, None)
            resp.release_conn()
        return rv


def _events(resp: Any) -> Iterator[dict[str, Any]]:
    for line in iter_resp_lines(resp):
        if line:
            yield json.loads(line)


_SHARED: Informer | None = None
_SHARED_LOCK = threading.Lock()


def shared(api_client: client.ApiClient, timeout: tuple[float, float]) -> Informer:
    """The process's one picture, started on first use: every site loop reads it."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = Informer(api_client, timeout)
            _SHARED.start()
        return _SHARED
