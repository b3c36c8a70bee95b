"""The operator's side of GPU power limits, without a cluster: the core's limits become
pod annotations, a limit counts only once the node agent confirms it
(DCGM_FI_DEV_ENFORCED_POWER_LIMIT, fresh, at or below the ask), and unconfirmed past
the grace period the job is preempted instead (the agent-death fallback)."""

from __future__ import annotations

from typing import Any

from test_controller import job, mem, node, site, site_policy, tj

from wattcap.controller import ControllerMemory, cycle
from wattcap.enforcement import CONFIRMED, NONE, PENDING, UNCONFIRMED, PodLimit, judge
from wattcap.jobs import ANN_GPU_LIMIT, LABEL_TJ
from wattcap.model import CapWindow, PowerLimits
from wattcap.telemetry import Reading, enforced_limits

NOW = 1_782_864_000.0
GRACE = 10.0
PERIOD = 2.0  # the policy's control period: a fallback is issued at the last cycle in the grace
LIMITS = PowerLimits(enabled=True, min_fraction=0.5)
# two 8-GPU jobs at 700 W on 100 W idle: 1600 + 2 x 4800 = 11.2 kW; the window takes 0.6 kW
WINDOW = CapWindow(NOW - 1, NOW + 3600, 10_600, "evening-peak")


def pol(window: bool = True, **kw: Any):  # type: ignore[no-untyped-def]
    return site_policy(
        20_000,
        cap_schedule=(WINDOW,) if window else (),
        power_limits=LIMITS,
        grace_period_s=GRACE,
        control_period_s=PERIOD,
        **kw,
    )


def pod(owner: str, node_name: str, limit: int | None = None, i: int = 0) -> dict[str, Any]:
    ann = {} if limit is None else {ANN_GPU_LIMIT: str(limit)}
    return {
        "metadata": {
            "name": f"{owner}-{i}",
            "namespace": "ml",
            "labels": {LABEL_TJ: owner},
            "annotations": ann,
        },
        "spec": {"nodeName": node_name, "containers": [{"name": "main"}]},
        "status": {"phase": "Running"},
    }


def state(  # type: ignore[no-untyped-def]
    pods: list[dict[str, Any]],
    enforced: dict | None = None,
    window: bool = True,
    agents: tuple[str, ...] = ("a", "b"),
    seen: float | None = None,
    **kw,
):
    """The site; `agents`: the nodes whose agent reports enforced limits for all GPUs;
    `seen`: the time of those samples (None: the reading has no sample times)."""
    reading = Reading(True, 11_000.0, enforced_by_pod=enforced or {})
    reading.enforced_nodes = frozenset(agents)
    if seen is not None:
        reading.enforced_pod_at = dict.fromkeys(reading.enforced_by_pod, seen)
        reading.enforced_node_at = dict.fromkeys(agents, seen)
    tjs = [tj("low", pre=True, prio=0), tj("high", pre=True, prio=10)]
    jobs = {("ml", "low"): job("low", ["a"]), ("ml", "high"): job("high", ["b"])}
    return site(pol(window, **kw), [node("a"), node("b")], pods, tjs, jobs, reading)


def ask_low(m: ControllerMemory) -> tuple[int, list[dict[str, Any]]]:
    """The first cycle, `low` alone running, asks its pod for a limit: that limit, and
    both jobs' pods as the next cycles read them (`low`'s annotated with it)."""
    limit = int(cycle(state([pod("low", "a")]), m, NOW).pod_patches[0][2][ANN_GPU_LIMIT])
    return limit, [pod("low", "a", limit), pod("high", "b")]


def in_force(limit: int) -> dict[tuple[str, str], list[float]]:
    """The agents' gauge, per pod: `limit` on each of `low`'s GPUs, `high`'s at TDP."""
    return {("ml", "low-0"): [float(limit)] * 8, ("ml", "high-0"): [700.0] * 8}


def limit_cond(plan: Any) -> dict[str, Any]:
    (c,) = [c for c in plan.policy_status["conditions"] if c["type"] == "PowerLimitsApplied"]
    return c


def test_a_window_is_met_by_asking_the_pods_for_a_limit_not_by_preempting() -> None:
    plan = cycle(state([pod("low", "a"), pod("high", "b")]), mem(), NOW)
    assert plan.suspend_jobs == []
    assert set(plan.decision.gpu_limits) == {"ml/low"}
    ((ns, name, patch),) = plan.pod_patches
    assert (ns, name) == ("ml", "low-0")
    limit = int(patch[ANN_GPU_LIMIT])
    assert limit <= plan.decision.gpu_limits["ml/low"] < limit + 1  # whole watts, rounded down
    st = plan.tj_status[("ml", "low")]
    assert st["gpuPowerLimitWatts"] == limit and st["gpuPowerLimitState"] == PENDING
    (cond,) = [c for c in st["conditions"] if c["type"] == "Throttled"]
    assert cond["message"].startswith(
        f"throttled to {limit} W by demand-response window evening-peak"
    )
    assert cond["reason"] == "DemandResponseWindow" and cond["status"] == "Unknown"
    assert "gpuPowerLimitWatts" not in plan.tj_status[("ml", "high")] or (
        plan.tj_status[("ml", "high")]["gpuPowerLimitWatts"] is None
    )
    assert limit_cond(plan)["reason"] == "AwaitingConfirmation"


def test_a_limit_the_agent_confirms_counts_as_throttled() -> None:
    m = mem()
    limit, pods = ask_low(m)
    enforced = in_force(limit)
    plan = cycle(state(pods, enforced), m, NOW + 2)
    assert plan.pod_patches == [] and plan.suspend_jobs == []
    st = plan.tj_status[("ml", "low")]
    assert st["gpuPowerLimitState"] == CONFIRMED
    (cond,) = [c for c in st["conditions"] if c["type"] == "Throttled"]
    assert cond["status"] == "True" and "confirmed by the node agent" in cond["message"]
    assert limit_cond(plan)["status"] == "True" and limit_cond(plan)["reason"] == "Confirmed"


def test_an_unconfirmed_limit_falls_back_to_preemption_within_the_grace_period() -> None:
    """The node agents died before confirming (no enforced gauge at all): the ask stands
    while the grace period allows; the nodes' silence counts from their last report, and
    at the last cycle before its grace ends the job is planned at its natural draw and
    shed, so the fallback is issued within the grace period."""
    m = mem()
    _, pods = ask_low(m)
    within = cycle(state(pods, agents=()), m, NOW + 2)
    assert within.suspend_jobs == [] and "ml/low" in within.decision.gpu_limits
    assert cycle(state(pods, agents=()), m, NOW + GRACE - PERIOD - 0.5).suspend_jobs == []
    past = cycle(state(pods, agents=()), m, NOW + GRACE - PERIOD)
    assert past.suspend_jobs == [("ml", "low")], "shed instead of throttled"
    assert past.decision.gpu_limits == {}
    c = limit_cond(past)
    assert c["status"] == "False" and c["reason"] in ("LimitNotConfirmed", "NoNodeAgent")
    assert "a" in c["message"]
    st = past.tj_status[("ml", "low")]
    assert st["phase"] == "Preempted" and st.get("gpuPowerLimitWatts") is None


def test_the_grace_counts_from_the_gauges_last_fresh_sample() -> None:
    """A confirmed limit whose agent dies: the grace counts from the last sample of the
    gauge that showed it in force, not from the cycle that first found it missing (the
    operator sees it missing a scrape and a cycle late; counting from then left the site
    over its cap for that long past the grace), and the job is shed at the last cycle
    within it."""
    m = mem()
    limit, pods = ask_low(m)
    enforced = in_force(limit)
    last = NOW + 3.0  # the last scrape before the agent died
    ok = cycle(state(pods, enforced, seen=last), m, NOW + 4)
    assert ok.tj_status[("ml", "low")]["gpuPowerLimitState"] == CONFIRMED
    assert cycle(state(pods, agents=()), m, NOW + 6).suspend_jobs == []
    assert cycle(state(pods, agents=()), m, last + GRACE - PERIOD - 0.5).suspend_jobs == []
    past = cycle(state(pods, agents=()), m, last + GRACE - PERIOD)
    assert past.suspend_jobs == [("ml", "low")]


def test_a_slow_cycle_gives_up_a_lost_limit_that_much_earlier() -> None:
    """The next cycle's writes land the last cycle's duration after its start: a loop
    whose cycles take a second issues the fallback a second earlier, or a loaded host
    preempts after the grace (CI saw it: suspended 5.6 s after the agents died, grace 5 s).
    The extra look-ahead is bounded by one control period."""
    m = mem()
    limit, pods = ask_low(m)
    enforced = in_force(limit)
    last = NOW + 3.0
    cycle(state(pods, enforced, seen=last), m, NOW + 4)
    m.cycle_s = 1.0
    assert cycle(state(pods, agents=()), m, last + GRACE - PERIOD - 1.5).suspend_jobs == []
    past = cycle(state(pods, agents=()), m, last + GRACE - PERIOD - 1.0)
    assert past.suspend_jobs == [("ml", "low")]
    m2 = mem()
    cycle(state([pod("low", "a")]), m2, NOW)
    cycle(state(pods, enforced, seen=last), m2, NOW + 4)
    m2.cycle_s = 60.0  # an outlier: no more than one period further
    assert cycle(state(pods, agents=()), m2, last + GRACE - 2 * PERIOD - 0.5).suspend_jobs == []


def test_a_limit_lost_while_the_agent_reports_counts_from_its_last_sample_too() -> None:
    """The agent runs but the GPUs went back to their default limit (a GPU reset): the
    job's own clock, not the node's, gives up at the last cycle within the grace."""
    m = mem()
    limit, pods = ask_low(m)
    enforced = in_force(limit)
    last = NOW + 3.0
    cycle(state(pods, enforced, seen=last), m, NOW + 4)
    reset = {("ml", "low-0"): [700.0] * 8, ("ml", "high-0"): [700.0] * 8}
    cycle(state(pods, reset, seen=NOW + 5), m, NOW + 6)
    cycle(state(pods, reset, seen=NOW + 9), m, last + GRACE - PERIOD - 0.5)
    assert ("ml", "low") not in m.limit_failed
    cycle(state(pods, reset, seen=NOW + 9), m, last + GRACE - PERIOD)
    assert ("ml", "low") in m.limit_failed


def test_a_new_ask_counts_its_grace_from_the_cycle_that_asked() -> None:
    """The agent runs but leaves the GPUs at their default limit: the ask's grace counts
    from the cycle that wrote it, not from the next one that found it unconfirmed; an ask
    on its way gets the whole grace."""
    m = mem()
    _, pods = ask_low(m)
    default = {("ml", "low-0"): [700.0] * 8, ("ml", "high-0"): [700.0] * 8}
    cycle(state(pods, default, seen=NOW + 1), m, NOW + 2)
    cycle(state(pods, default, seen=NOW + 7), m, NOW + GRACE - 0.5)
    assert ("ml", "low") not in m.limit_failed
    cycle(state(pods, default, seen=NOW + 9), m, NOW + GRACE)
    assert ("ml", "low") in m.limit_failed


def test_where_one_nodes_agent_died_another_job_is_throttled_instead() -> None:
    """Only node a's agent died: its job is released (planned at its natural draw) and
    the cut moves to the job whose agent confirms, the cheaper lever."""
    m = mem()
    _, pods = ask_low(m)
    cycle(state(pods, agents=("b",)), m, NOW + 2)
    past = cycle(state(pods, agents=("b",)), m, NOW + 2 + GRACE)
    assert "ml/low" not in past.decision.gpu_limits and "ml/high" in past.decision.gpu_limits
    assert ("ml", "low-0", {ANN_GPU_LIMIT: None}) in past.pod_patches
    st = past.tj_status[("ml", "low")]
    assert st["gpuPowerLimitState"] == UNCONFIRMED
    (cond,) = [c for c in st["conditions"] if c["type"] == "Throttled"]
    assert cond["status"] == "False" and cond["reason"] == "LimitNotConfirmed"


def test_a_node_without_an_agent_is_never_asked() -> None:
    """No enforced gauge from a node for the grace period: nothing there is throttled."""
    m = mem()
    cycle(state([pod("low", "a"), pod("high", "b")], agents=("b",)), m, NOW - GRACE)
    plan = cycle(state([pod("low", "a"), pod("high", "b")], agents=("b",)), m, NOW)
    assert "ml/low" not in plan.decision.gpu_limits
    c = limit_cond(plan)
    assert c["status"] == "False" and c["reason"] == "NoNodeAgent" and "a" in c["message"]


def test_a_nodes_silence_counts_from_its_last_sample() -> None:
    """Node a reported enforced limits until its agent died: it counts as a node without
    an agent once its last sample is a grace period old (less the cycle to come)."""
    m = mem()
    last = NOW - GRACE
    both = [pod("low", "a"), pod("high", "b")]
    cycle(state(both, window=False, seen=last), m, last + 1)
    cycle(state(both, window=False, agents=("b",)), m, last + 3)
    plan = cycle(state(both, agents=("b",)), m, last + GRACE - PERIOD)
    assert "ml/low" not in plan.decision.gpu_limits
    c = limit_cond(plan)
    assert c["status"] == "False" and c["reason"] == "NoNodeAgent" and "a" in c["message"]


def test_a_job_released_when_its_agent_died_is_throttled_again_once_it_is_back() -> None:
    """Node a's agent dies: its job is released and the cut moves to node b's. Once a's
    gauge is fresh again (the agent restarted), a's job may be throttled again."""
    m = mem()
    _, pods = ask_low(m)
    cycle(state(pods, agents=("b",)), m, NOW + 2)
    past = cycle(state(pods, agents=("b",)), m, NOW + 2 + GRACE)
    assert ("ml", "low") in m.limit_failed and "ml/high" in past.decision.gpu_limits
    high = int(next(p[ANN_GPU_LIMIT] for ns, n, p in past.pod_patches if n == "high-0"))
    pods = [pod("low", "a"), pod("high", "b", high)]
    back = {("ml", "low-0"): [700.0] * 8, ("ml", "high-0"): [float(high)] * 8}
    again = cycle(state(pods, back), m, NOW + 4 + GRACE)
    assert ("ml", "low") not in m.limit_failed
    assert "ml/low" in again.decision.gpu_limits and again.suspend_jobs == []
    assert ("ml", "low-0") in {(ns, n) for ns, n, _ in again.pod_patches}


def test_a_limit_enforced_above_the_ask_is_not_confirmed() -> None:
    m = mem()
    limit, _ = ask_low(m)
    pods = [pod("low", "a", limit)]
    over = {("ml", "low-0"): [700.0] * 8}  # the GPUs still at their default limit
    cycle(state(pods, over), m, NOW + 1)
    past = cycle(state(pods, over), m, NOW + 1 + GRACE)
    assert ("ml", "low") in m.limit_failed and "ml/low" not in past.decision.gpu_limits
    # an agent that runs and holds another value is not trusted again for this run
    cycle(state([pod("low", "a")], {("ml", "low-0"): [700.0] * 8}), m, NOW + 3 + GRACE)
    assert ("ml", "low") in m.limit_failed


def test_limits_are_released_when_the_window_ends() -> None:
    pods = [pod("low", "a", 550), pod("high", "b")]
    enforced = {("ml", "low-0"): [550.0] * 8}
    low = {"gpuPowerLimitWatts": 550, "gpuPowerLimitState": CONFIRMED, "phase": "Running"}
    st = state(pods, enforced, window=False)
    st.trainingjobs[0]["status"] = low
    plan = cycle(st, mem(), NOW)
    assert plan.pod_patches == [("ml", "low-0", {ANN_GPU_LIMIT: None})]
    assert plan.tj_status[("ml", "low")]["gpuPowerLimitWatts"] is None
    assert limit_cond(plan)["reason"] == "NoneNeeded"


def test_without_prometheus_limits_cannot_be_confirmed_so_the_operator_preempts() -> None:
    s = state([pod("low", "a"), pod("high", "b")])
    s.reading = None
    plan = cycle(s, mem(), NOW)
    assert plan.suspend_jobs == [("ml", "low")] and plan.pod_patches == []
    c = limit_cond(plan)
    assert c["status"] == "False" and c["reason"] == "NotMeasured"


def test_a_prometheus_outage_starts_no_clock() -> None:
    """No reading: no verdict, and nobody is shed for a confirmation nobody could read."""
    m = mem()
    limit, _ = ask_low(m)
    s = state([pod("low", "a", limit)])
    s.reading = Reading(False, error="down")
    for t in (1, 5, 20, 40):
        assert cycle(s, m, NOW + t).suspend_jobs == []
    assert m.limit_failed == {}


def test_a_throttled_pods_samples_do_not_lower_its_natural_draw() -> None:
    m: ControllerMemory = mem()
    s = state([pod("low", "a", 550), pod("high", "b")])
    s.reading.gpu_watts_by_pod = {("ml", "low-0"): [550.0] * 8, ("ml", "high-0"): [600.0] * 8}
    cycle(s, m, NOW)
    assert ("ml", "low") not in m.samples and ("ml", "high") in m.samples


# ------------------------------------------------------------------ the rule itself


def p(asked: int | None, enforced: tuple[float, ...], node_name: str = "a") -> PodLimit:
    return PodLimit("p", node_name, 2, asked, enforced)


def test_judge_states() -> None:
    assert judge([p(None, ())], None, False, NOW, GRACE).state == NONE
    assert judge([p(500, (500.0, 480.0))], None, False, NOW, GRACE).state == CONFIRMED
    v = judge([p(500, (500.0,))], None, False, NOW, GRACE)  # one GPU of two reported
    assert v.state == PENDING and v.since_s == NOW and v.nodes == ("a",)
    assert judge([p(500, (510.0, 500.0))], NOW - GRACE, False, NOW, GRACE).state == UNCONFIRMED
    # a job with one pod asked and another not is not throttled yet
    v = judge([p(500, (500.0, 500.0)), p(None, (), "b")], None, False, NOW, GRACE)
    assert v.state == PENDING and v.nodes == ("b",)
    # once unconfirmed, for the rest of the run
    assert judge([p(500, (500.0, 500.0))], None, True, NOW, GRACE).state == UNCONFIRMED


def test_enforced_limits_are_fresh_and_per_pod() -> None:
    def s(host: str, gpu: int, pod_name: str, value: float, ts: float) -> dict[str, Any]:
        labels = {"Hostname": host, "gpu": str(gpu), "namespace": "ml", "pod": pod_name}
        return {"metric": labels, "value": [ts, str(value)]}

    series = [
        s("a", 0, "p", 500.0, NOW - 1),
        s("a", 1, "p", 500.0, NOW - 2),
        s("b", 0, "q", 450.0, NOW - 600),  # stale: confirms nothing
        s("elsewhere", 0, "r", 450.0, NOW),  # not the site's node
    ]
    e = enforced_limits(series, {"a": 2, "b": 1}, NOW)
    assert e.by_pod == {("ml", "p"): [500.0, 500.0]}
    assert e.nodes == {"a"}  # b's only GPU is stale
    # sampled when its oldest GPU was: as of then every GPU showed that limit
    assert e.pod_at == {("ml", "p"): NOW - 2} and e.node_at == {"a": NOW - 2}


def grace_cond(plan: Any) -> dict[str, Any]:
    (c,) = [c for c in plan.policy_status["conditions"] if c["type"] == "GracePeriodTooShort"]
    return c


def test_a_grace_too_short_for_the_agent_path_is_warned_of_and_the_policy_still_used() -> None:
    """docs/node-agent.md sizes `gracePeriod` for power limits: above the agent's
    --interval, Prometheus' scrape interval and the control period together, plus
    the pods' termination, or the site can stay over its cap past the grace. A
    shorter one is not refused (the site still decides under it), but the
    PowerPolicy says which field, and the least that fits."""
    from dataclasses import replace

    from wattcap.enforcement import AGENT_INTERVAL_S, SCRAPE_INTERVAL_S
    from wattcap.model import parse_power_policy

    term = 30.0
    least = AGENT_INTERVAL_S + SCRAPE_INTERVAL_S + PERIOD + term

    def run(**kw: Any) -> Any:
        st = state([pod("low", "a")], max_termination_grace_s=term)
        st.policy = replace(st.policy, **kw)
        return cycle(st, mem(), NOW)

    short = run()  # GRACE: 10 s
    c = grace_cond(short)
    assert (c["status"], c["reason"]) == ("True", "ShorterThanLimitFallback")
    assert "spec.gracePeriod 10s" in c["message"] and f"at least {least:g}s" in c["message"]
    assert short.pod_patches, "the policy is still used: the window is met by a limit"
    c = grace_cond(run(grace_period_s=least))
    assert (c["status"], c["reason"]) == ("False", "CoversLimitFallback")
    assert grace_cond(run(grace_period_s=least - 1))["status"] == "True"
    # a longer control period or termination needs a longer grace
    assert grace_cond(run(grace_period_s=least, control_period_s=PERIOD + 1))["status"] == "True"
    assert (
        grace_cond(run(grace_period_s=least, max_termination_grace_s=term + 1))["status"] == "True"
    )
    # without power limits nothing waits on an agent: no such condition
    off = run(power_limits=PowerLimits())
    assert all(c["type"] != "GracePeriodTooShort" for c in off.policy_status["conditions"])
    # and the parser takes such a policy: a warning, not a refusal
    spec = {"capWatts": 20_000, "gracePeriod": "5s", "powerLimits": {"enabled": True}}
    assert parse_power_policy(spec).grace_period_s == 5.0
