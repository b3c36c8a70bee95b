"""One deciding replica: a `coordination.k8s.io` Lease per site.

The chart runs two operator replicas so a lost node does not stop the site's
loop, but two loops deciding at once could each admit into the same last
kilowatt. Each site loop therefore decides only while it holds the site's
Lease, as Kubernetes' own controllers do:

- the holder renews it when it asks for it (`holds`, `fresh`: three times a
  cycle) unless its last renewal is under a quarter lease old, and then
  answers without a request: no other replica can take the Lease over until
  a whole lease after that renewal (the three quarters left absorb clock skew
  between replicas), so a fast site costs one GET and one PUT of the Lease
  per quarter lease, not per ask; a replica takes it over only once the
  holder has not renewed it for `leaseDurationSeconds`;
- every write to the Lease carries the `resourceVersion` it read, so of two
  replicas racing for it exactly one wins (the other gets 409 Conflict);
- fencing: a replica asks for the Lease right before applying a cycle's writes
  (renewing it unless its last renewal is under a quarter lease old) and
  applies them only if it has held the Lease without a gap since it read the
  cluster: every renewal since came less than half a lease after the one
  before. So no write goes out more than a quarter lease after a renewal. A
  replica that was paused (SIGSTOP, a frozen node) past half its lease writes
  nothing of what it decided before the pause; a big site whose cycle takes
  longer than half a lease still decides, as long as the loop renews in
  between. A cycle with many writes (a burst of thousands of jobs) checks
  again between chunks of them in the same way (`fresh`); the first
  failed check drops the rest.

Time is the API server's clock as seen through `renewTime`, compared with
this replica's clock: a skew of a few seconds only delays a takeover.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from datetime import UTC, datetime

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger("wattcap.lease")

DEFAULT_DURATION_S = 15


def default_identity() -> str:
    """The pod's name (HOSTNAME in a pod) plus a random suffix, so a
    restarted container never mistakes its predecessor's lease for its own."""
    host = os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{host}-{uuid.uuid4().hex[:6]}"


def default_namespace() -> str:
    """Where the Lease lives: the operator's own namespace in a pod."""
    env = os.environ.get("WATTCAP_NAMESPACE") or os.environ.get("POD_NAMESPACE")
    if env:
        return env
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as fh:
            return fh.read().strip() or "default"
    except OSError:
        return "default"


class SiteLease:
    """The Lease of one site (one PowerPolicy), held by at most one replica."""

    def __init__(
        self,
        api: client.CoordinationV1Api,
        site: str,
        *,
        namespace: str | None = None,
        identity: str | None = None,
        duration_s: int = DEFAULT_DURATION_S,
        request_timeout_s: float = 5.0,
    ) -> None:
        self.api = api
        self.name = f"wattcap-site-{site}"[:253]
        self.namespace = namespace or default_namespace()
        self.identity = identity or default_identity()
        self.duration_s = duration_s
        self.timeout = request_timeout_s
        self.renewed_at: float | None = None  # time.monotonic() of our last successful write
        # time.monotonic() of the first renewal of the current unbroken run of them
        self.held_since: float | None = None

    def holds(self) -> bool:
        """Acquire or renew; True while this replica is the site's one decider.

        Any error reading or writing the Lease is 'not the leader': a replica
        that cannot reach the API server must not decide. While the last
        renewal, in an unbroken run of them, is under a quarter lease old the
        answer is True without a request (`_recent`).
        """
        if self._recent():
            return True
        try:
            return self._acquire_or_renew()
        except ApiException as err:
            if err.status != 409:
                log.warning("lease %s/%s: %s %s", self.namespace, self.name, err.status, err.reason)
            self.renewed_at = self.held_since = None
            return False
        except Exception as err:  # urllib3 timeouts and the like: not leader
            log.warning("lease %s/%s: %s", self.namespace, self.name, err)
            self.renewed_at = self.held_since = None
            return False

    def fresh(self, read_at: float) -> bool:
        """Whether writes decided from what was read at `read_at`
        (time.monotonic(), after a renewal) may go out: renewed under a
        quarter lease ago (just now if the last renewal was older), and held
        without a gap since `read_at`, so no other replica can have written
        in between. A gap is half a lease without a renewal (the other half
        absorbs clock skew between replicas). Checked again between chunks of
        a long run of writes: they never go out more than a quarter lease after
        this replica last held the Lease, however many there are."""
        return self.holds() and self.held_since is not None and self.held_since <= read_at

    def _recent(self) -> bool:
        """Whether this replica renewed the Lease under a quarter lease ago, in an
        unbroken run of renewals: no other replica can take it over for at least
        three quarters of a lease yet, so asking the API server again tells
        nothing. A failed ask or a release clears `renewed_at`, so after one the
        next ask goes to the API server."""
        return (
            self.renewed_at is not None
            and self.held_since is not None
            and time.monotonic() - self.renewed_at < self.duration_s / 4
        )

    def release(self) -> None:
        """Give the Lease up at shutdown so a peer takes over at once."""
        try:
            lease = self.api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.timeout
            )
            if lease.spec and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self.api.replace_namespaced_lease(
                    self.name, self.namespace, lease, _request_timeout=self.timeout
                )
        except Exception as err:  # best effort: the lease expires anyway
            log.info("lease %s/%s not released: %s", self.namespace, self.name, err)
        self.renewed_at = self.held_since = None

    def _acquire_or_renew(self) -> bool:
        now = datetime.now(UTC)
        try:
            lease = self.api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.timeout
            )
        except ApiException as err:
            if err.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=client.V1LeaseSpec(
                    holder_identity=self.identity,
                    lease_duration_seconds=self.duration_s,
                    acquire_time=now,
                    renew_time=now,
                    lease_transitions=0,
                ),
            )
            self.api.create_namespaced_lease(self.namespace, body, _request_timeout=self.timeout)
            self._renewed(time.monotonic())
            log.info("lease %s/%s acquired by %s", self.namespace, self.name, self.identity)
            return True
        spec = lease.spec or client.V1LeaseSpec()
        mine = spec.holder_identity == self.identity
        if not mine and spec.holder_identity and spec.renew_time is not None:
            duration = spec.lease_duration_seconds or self.duration_s
            if (now - spec.renew_time).total_seconds() < duration:
                self.renewed_at = self.held_since = None
                return False  # someone else holds it and renews it
        if not mine:
            spec.holder_identity = self.identity
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
            log.info("lease %s/%s taken over by %s", self.namespace, self.name, self.identity)
        spec.renew_time = now
        spec.lease_duration_seconds = self.duration_s
        lease.spec = spec
        # replace carries metadata.resourceVersion: a concurrent writer makes this 409
        self.api.replace_namespaced_lease(
            self.name, self.namespace, lease, _request_timeout=self.timeout
        )
        if not mine:
            self.held_since = None  # a new term starts with this write
        self._renewed(time.monotonic())
        return True

    def _renewed(self, at: float) -> None:
        """A successful write of the Lease at `at`: it extends the unbroken run
        of renewals if it came within half a lease of the last one."""
        if (
            self.held_since is None
            or self.renewed_at is None
            or at - self.renewed_at >= self.duration_s / 2
        ):
            self.held_since = at
        self.renewed_at = at
