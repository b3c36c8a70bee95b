"""Whether the GPU power limits wattcap asked for are in force: the confirmation rule.

Pure, no I/O. The operator writes a throttled job's limit on each of its running pods
(annotation `wattcap.io/gpu-power-limit-watts`, watts per GPU); a node agent applies it
and reports the limit in force per GPU as the gauge DCGM_FI_DEV_ENFORCED_POWER_LIMIT.
A limit on paper that no GPU enforces is worse than none: the core would throttle where
the site needs a preemption, and the site would stay over its cap. So a job counts as
throttled (planned at its limit) only while that gauge, fresh, shows every GPU of each
of its pods at or below the limit asked of the pod. Within the policy's grace period an
ask may still be on its way (the agent applies it, Prometheus scrapes it); unconfirmed
past it (an agent that died, never ran, or holds another value), the job is no longer
throttleable: the core plans it at its natural draw and preempts instead. The verdict
enters the core as `RunningJob.throttleable`.

The grace counts from when the limit was due and unseen: the cycle that asked for it,
or the last sample of the gauge that showed it in force, whichever is later; not from
the cycle that first found it missing, which comes a scrape and a cycle after an agent's
death. The operator acts only at cycles, so it gives up on a limit at the last cycle
before the grace ends (`expired`): the fallback preemption is issued within the grace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

NONE = "None"  # nothing asked of its GPUs
CONFIRMED = "Confirmed"  # every GPU shows the limit (or a lower one) in force
PENDING = "Pending"  # asked, not confirmed yet, within the grace period
UNCONFIRMED = "Unconfirmed"  # not confirmed within the grace period: preempt, never throttle

TOLERANCE_W = 0.5  # the annotation is whole watts; NVML reports milliwatts

# What the grace must cover besides the policy's own periods (docs/node-agent.md,
# "When the fallback goes out"); the operator cannot see either, so they are taken as:
AGENT_INTERVAL_S = 10.0  # the agent's pass: `wattcap agent --interval`, the chart's agent.interval
# Prometheus' scrape of the agent's gauge: set by whoever runs Prometheus; 15 s is
# dcgm-exporter's Helm chart ServiceMonitor default, the gauge scraped beside it
SCRAPE_INTERVAL_S = 15.0


def min_limits_grace_s(control_period_s: float, max_termination_grace_s: float) -> float:
    """The shortest `gracePeriod` that covers a lost limit (docs/node-agent.md): the
    operator sees the loss only after an agent pass, a scrape and a control period,
    and the fallback's pods then take up to `maxTerminationGracePeriod` to stop;
    with a shorter grace the site can stay over its cap past the grace."""
    return AGENT_INTERVAL_S + SCRAPE_INTERVAL_S + control_period_s + max_termination_grace_s


@dataclass(frozen=True, slots=True)
class PodLimit:
    """One running pod of a job, as the confirmation rule sees it."""

    name: str
    node: str
    gpus: int
    asked_w: int | None  # its annotation; None: no limit asked of it
    enforced_w: tuple[float, ...] = ()  # fresh enforced limits of its GPUs (one per GPU)


@dataclass(frozen=True, slots=True)
class Verdict:
    state: str
    since_s: float | None = None  # when the ask went unconfirmed (PENDING, UNCONFIRMED)
    asked_w: int | None = None  # the loosest limit asked of its pods
    nodes: tuple[str, ...] = ()  # nodes whose GPUs did not confirm it


def pod_confirmed(p: PodLimit) -> bool:
    """Every GPU of the pod shows, fresh, a limit at or below the one asked of it."""
    if p.asked_w is None:
        return False
    return len(p.enforced_w) >= p.gpus and all(e <= p.asked_w + TOLERANCE_W for e in p.enforced_w)


def expired(since_s: float, now_s: float, grace_s: float, period_s: float = 0.0) -> bool:
    """Whether a grace that started at `since_s` ends before the next cycle (`period_s`
    from now): the last cycle that can act within it is this one."""
    return now_s + period_s - since_s >= grace_s


def judge(
    pods: Sequence[PodLimit],
    pending_since_s: float | None,
    failed: bool,
    now_s: float,
    grace_s: float,
    period_s: float = 0.0,
) -> Verdict:
    """The state of one running job's limits this cycle.

    `pending_since_s`: since when its ask is due and unconfirmed (None: now); `failed`:
    an earlier cycle found it UNCONFIRMED, which holds until the controller lifts it (an
    agent that held another value is not trusted with the next limit; one that died is,
    once it reports again). `period_s`: the control period (see `expired`).
    A job with some pods asked and others not is not confirmed: the plan counts on all.
    """
    if failed:
        return Verdict(UNCONFIRMED, pending_since_s)
    asked = [p.asked_w for p in pods if p.asked_w is not None]
    if not asked:
        return Verdict(NONE)
    bad = tuple(sorted({p.node for p in pods if not pod_confirmed(p)}))
    if not bad:
        return Verdict(CONFIRMED, None, max(asked))
    since = now_s if pending_since_s is None else pending_since_s
    state = UNCONFIRMED if expired(since, now_s, grace_s, period_s) else PENDING
    return Verdict(state, since, max(asked), bad)
