"""A cycle's writes for a burst of jobs, on the real API server.

A burst of 5,000 TrainingJobs is thousands of writes in one cycle (a Job per
admitted job, a status per job, an Event per admission). One at a time they
took longer than the control period (about 9 s a cycle for 500 jobs), and the
whole run of them went out after one Lease check at its start: a replica
could go on writing long after another had taken the site over.

Counted here, not timed: how many status writes are in flight at once (a spy
around the real client call, which still goes to the API server), and how many
went out when the Lease was taken over in the middle of the run.
"""

from __future__ import annotations

import functools
import math
import threading
import time
import uuid
from typing import Any

import pytest
from conftest import kubectl, priority_fields
from kubernetes import client, config
from test_operator import apply

from wattcap.cluster import CHUNK, WRITERS, Cluster, LeaseLost
from wattcap.controller import Plan, SiteState
from wattcap.lease import SiteLease
from wattcap.model import parse_power_policy

pytestmark = pytest.mark.integration


def burst(kc: str, ns: str, n: int) -> list[dict[str, Any]]:
    """n TrainingJobs in `ns`, as the API server stores them (no status yet)."""
    items = [
        {
            "apiVersion": "wattcap.io/v1alpha1",
            "kind": "TrainingJob",
            "metadata": {"name": f"w-{i:03d}", "namespace": ns},
            "spec": {
                "gpusPerReplica": 1,
                **priority_fields(0),
                "workloadClass": "w",
                "expectedDuration": "1h",
                "template": {"spec": {"containers": [{"name": "t", "image": "t:1"}]}},
            },
        }
        for i in range(n)
    ]
    apply(kc, items)
    api = client.CustomObjectsApi(config.new_client_from_config(config_file=kc))
    return api.list_namespaced_custom_object("wattcap.io", "v1alpha1", ns, "trainingjobs")["items"]


def queued(ns: str, tjs: list[dict[str, Any]]) -> Plan:
    """A plan that writes a Queued status on every one of them."""
    plan = Plan()
    for t in tjs:
        plan.tj_status[(ns, t["metadata"]["name"])] = {
            "phase": "Queued",
            "reason": "InsufficientPowerBudget",
            "message": "written by test_write_burst",
        }
    return plan


def state_of(tjs: list[dict[str, Any]]) -> SiteState:
    policy = parse_power_policy(
        {"metadata": {"name": "burst"}, "spec": {"capWatts": 1000, "nodeSelector": {}}}
    )
    return SiteState(policy, [], [], tjs, {})


class InFlight:
    """Wraps a real client call: counts the calls and the most at once."""

    def __init__(self, call: Any, before: Any = None) -> None:
        self.call, self.before = call, before
        self.now = self.peak = self.made = 0
        self.lock = threading.Lock()
        functools.update_wrapper(self, call)

    def __call__(self, *args: Any, **kw: Any) -> Any:
        with self.lock:
            self.made += 1
            self.now += 1
            self.peak = max(self.peak, self.now)
            made = self.made
        try:
            if self.before is not None:
                self.before(made)
            return self.call(*args, **kw)
        finally:
            with self.lock:
                self.now -= 1


def statuses(kc: str, ns: str) -> int:
    out = kubectl(
        kc, "get", "trainingjobs.wattcap.io", "-n", ns, "-o", "jsonpath={.items[*].status.phase}"
    ).stdout
    return len(out.split())


def test_a_burst_of_status_writes_goes_out_concurrently_and_bounded(
    crds: str, namespace: str
) -> None:
    tjs = burst(crds, namespace, 3 * WRITERS)
    cluster = Cluster(config.new_client_from_config(config_file=crds))
    spy = InFlight(cluster.custom.patch_namespaced_custom_object_status)
    cluster.custom.patch_namespaced_custom_object_status = spy  # type: ignore[method-assign]
    assert cluster.apply_status(queued(namespace, tjs), state_of(tjs), "burst") == 0
    assert spy.made == len(tjs)
    print(f"{len(tjs)} status writes, at most {spy.peak} at once")
    # one at a time, a burst of 5,000 jobs took longer than the control period
    assert spy.peak > 1, "the status writes went out one at a time"
    assert spy.peak <= WRITERS
    assert statuses(crds, namespace) == len(tjs)
    # statuses the jobs already have are not written again
    again = client.CustomObjectsApi(cluster.api_client).list_namespaced_custom_object(
        "wattcap.io", "v1alpha1", namespace, "trainingjobs"
    )["items"]
    assert cluster.apply_status(queued(namespace, again), state_of(again), "burst") == 0
    assert spy.made == len(tjs), "unchanged statuses were written again"


def test_writes_stop_at_the_first_lease_check_that_fails(crds: str, namespace: str) -> None:
    """The Lease is taken over while the first chunk of writes is in flight
    (its first write stalls past the lease): the next chunk is not written."""
    api = config.new_client_from_config(config_file=crds)
    coordination = client.CoordinationV1Api(api)
    site = f"burst-{uuid.uuid4().hex[:8]}"
    duration = 2
    mine, other = (
        SiteLease(coordination, site, namespace="default", identity=i, duration_s=duration)
        for i in ("mine", "other")
    )
    tjs = burst(crds, namespace, 2 * CHUNK)
    cluster = Cluster(api)
    assert mine.holds()
    read_at = time.monotonic()

    def stall(made: int) -> None:
        if made == 1:  # a write that hangs past the lease; meanwhile the other replica takes over
            time.sleep(duration + 0.5)
            assert other.holds()

    spy = InFlight(cluster.custom.patch_namespaced_custom_object_status, stall)
    cluster.custom.patch_namespaced_custom_object_status = spy  # type: ignore[method-assign]
    with pytest.raises(LeaseLost):
        cluster.apply_status(
            queued(namespace, tjs), state_of(tjs), "burst", lambda: mine.fresh(read_at)
        )
    assert spy.made == CHUNK, f"{spy.made} writes went out; the first chunk is {CHUNK}"
    assert statuses(crds, namespace) == CHUNK


def test_refreshes_of_waiting_jobs_get_a_bounded_share_of_each_cycle(
    crds: str, namespace: str
) -> None:
    """Waiting jobs whose message alone moves every cycle (a measured site's
    free power does) are refreshed `refreshes_per_cycle` at a time, least
    recently written first, so each one's message is at most
    ceil(n / budget) cycles old; a job whose reason changed is written in the
    cycle that saw it. Before: a message-only change was never written (the
    job kept its first message until its reason changed), and anything else
    that moved (an estimated start) was rewritten for every job every cycle."""
    from wattcap.statuswrites import StatusWrites

    n, budget = 3 * CHUNK, CHUNK
    api = config.new_client_from_config(config_file=crds)
    custom = client.CustomObjectsApi(api)
    tjs = burst(crds, namespace, n)
    cluster = Cluster(api)
    cluster.status_writes = StatusWrites(refreshes_per_cycle=budget, refresh_after_s=0)
    assert cluster.apply_status(queued(namespace, tjs), state_of(tjs), "burst") == 0
    spy = InFlight(cluster.custom.patch_namespaced_custom_object_status)
    cluster.custom.patch_namespaced_custom_object_status = spy  # type: ignore[method-assign]
    cycles = math.ceil(n / budget)
    for c in range(cycles):
        now = custom.list_namespaced_custom_object(
            "wattcap.io", "v1alpha1", namespace, "trainingjobs"
        )
        plan = queued(namespace, now["items"])
        for status in plan.tj_status.values():
            status["message"] = f"cycle {c}: short of {2 + c} kW"
        moved = (namespace, "w-000") if c == cycles - 1 else None
        if moved:  # the last cycle's budget is taken by others: a new reason still goes out
            plan.tj_status[moved]["reason"] = "WaitingForGPUs"
        made = spy.made
        assert cluster.apply_status(plan, state_of(now["items"]), "burst") == 0
        assert spy.made - made <= budget + (1 if moved else 0), "more refreshes than the budget"
    after = custom.list_namespaced_custom_object(
        "wattcap.io", "v1alpha1", namespace, "trainingjobs"
    )
    messages = {t["metadata"]["name"]: t["status"]["message"] for t in after["items"]}
    stale = sorted(k for k, m in messages.items() if not m.startswith("cycle "))
    assert not stale, f"{len(stale)} of {n} never refreshed in {cycles} cycles: {stale[:5]}"
    w000 = next(t for t in after["items"] if t["metadata"]["name"] == "w-000")
    assert w000["status"]["reason"] == "WaitingForGPUs"
