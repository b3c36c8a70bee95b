"""The site Lease on the real API server: one decider at a time, takeover
only after the holder stops renewing, and no writes from a replica that was
paused past its lease."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from kubernetes import client, config

from wattcap.lease import SiteLease

pytestmark = pytest.mark.integration
DURATION = 3


@pytest.fixture
def coordination(kubeconfig: str) -> client.CoordinationV1Api:
    return client.CoordinationV1Api(config.new_client_from_config(config_file=kubeconfig))


def pair(api: client.CoordinationV1Api) -> tuple[SiteLease, SiteLease]:
    site = f"lease-{uuid.uuid4().hex[:8]}"
    a, b = (
        SiteLease(api, site, namespace="default", identity=i, duration_s=DURATION) for i in "ab"
    )
    return a, b


def test_one_holder_and_takeover_only_after_it_stops_renewing(coordination) -> None:
    a, b = pair(coordination)
    assert a.holds()
    for _ in range(3):  # a keeps renewing: b never gets it, however often it asks
        time.sleep(DURATION / 3)
        assert a.holds()
        assert not b.holds()
    time.sleep(DURATION + 0.5)  # a is silent for longer than the lease
    assert b.holds()
    assert not a.holds(), "the old holder must see the takeover, not renew over it"
    lease = coordination.read_namespaced_lease(a.name, "default")
    assert lease.spec.holder_identity == "b"
    assert lease.spec.lease_transitions == 1


def _race(lease: SiteLease, barrier: threading.Barrier, results: dict[str, bool]) -> None:
    barrier.wait()
    results[lease.identity] = lease.holds()


def test_racing_for_a_new_or_expired_lease_exactly_one_wins(coordination) -> None:
    for expired in (False, True, True):
        a, b = pair(coordination)
        if expired:  # a third replica held it and went silent
            gone = SiteLease(
                coordination,
                a.name.removeprefix("wattcap-site-"),
                namespace="default",
                identity="z",
                duration_s=DURATION,
            )
            assert gone.holds()
            time.sleep(DURATION + 0.5)
        results: dict[str, bool] = {}
        barrier = threading.Barrier(2)

        threads = [threading.Thread(target=_race, args=(x, barrier, results)) for x in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(results.values()) == [False, True], results


def test_a_replica_paused_past_its_lease_writes_nothing(coordination) -> None:
    a, b = pair(coordination)
    assert a.holds()
    started = time.monotonic()  # a cycle reads the cluster after renewing
    assert a.fresh(started), "a quick cycle of the holder may write"
    time.sleep(DURATION + 0.5)  # a is 'paused' mid-cycle; b takes over meanwhile
    assert b.holds()
    assert not a.fresh(started), "the paused replica's writes must be dropped"
    # even alone, a cycle that went half a lease without renewing is not written
    c, _ = pair(coordination)
    assert c.holds()
    slow = time.monotonic()
    time.sleep(DURATION / 2 + 0.2)
    assert not c.fresh(slow)


def test_a_slow_cycle_that_renews_throughout_may_write(coordination) -> None:
    """A cycle longer than half a lease (a big site's read and decision) is
    written when its replica renewed at least every half lease meanwhile: no
    other replica can have held the Lease in between. Under the old rule (the
    whole cycle under half a lease) a site too big to read in half a lease had
    every cycle's writes dropped, for ever, and no cycle in the histogram."""
    a, b = pair(coordination)
    assert a.holds()
    read = time.monotonic()  # the cycle reads the cluster after renewing
    for _ in range(4):  # then takes 4/3 of a lease, renewing every third of one
        time.sleep(DURATION / 3)
        assert a.holds()
        assert not b.holds()
    assert a.fresh(read), "held without a gap since the read: its writes may go out"
    # a renewal that came too late breaks the run: what was read before it is stale
    time.sleep(DURATION / 2 + 0.2)
    assert not a.fresh(read)


def test_release_hands_over_at_once(coordination) -> None:
    a, b = pair(coordination)
    assert a.holds()
    assert not b.holds()
    a.release()
    assert b.holds()


def test_renewals_are_skipped_while_the_last_is_under_a_quarter_lease_old(coordination) -> None:
    """A cycle asks for the Lease three times (before its read, before its
    decision, before its writes) and a fast site cycles every second: each ask
    was a GET and a PUT. Within a quarter lease of the last renewal no other
    replica can take the Lease (it waits a whole lease), so the asks are
    answered without a request; counted here by the Lease's own
    resourceVersion, which every renewal moves."""
    site = f"lease-{uuid.uuid4().hex[:8]}"
    a, b = (
        SiteLease(coordination, site, namespace="default", identity=i, duration_s=8) for i in "ab"
    )

    def version() -> str:
        return coordination.read_namespaced_lease(a.name, "default").metadata.resource_version

    assert a.holds()
    read = time.monotonic()
    renewed = version()
    for _ in range(5):  # a cycle's three asks, and the fence between chunks, well within 2 s
        assert a.holds()
        assert a.fresh(read)  # the ask before writes, and the fence between chunks
    assert time.monotonic() - read < 2, "too slow to tell: the asks took a quarter lease"
    assert version() == renewed, "renewed again within a quarter lease of the last renewal"
    assert not b.holds()
    time.sleep(2.2)  # past a quarter lease: the next ask renews, and the run stays unbroken
    assert a.holds()
    assert version() != renewed
    assert a.fresh(read)
