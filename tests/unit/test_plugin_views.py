"""`kubectl wattcap` records and text, from API JSON shaped as the operator writes it."""

from __future__ import annotations

from typing import Any

from wattcap.model import format_time
from wattcap.plugin.cli import FLAG_DEFAULTS, _status_text, build_parser
from wattcap.plugin.render import chart, table
from wattcap.plugin.views import explain_record, queue_records, status_records, top_records

NOW = 1_782_864_000.0  # 2026-07-01T00:00:00Z


def tj(
    name: str,
    ns: str = "ml",
    phase: str = "Queued",
    prio: int = 0,
    created: float = NOW - 600,
    gpus: int = 8,
    **status: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "wattcap.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": format_time(created)},
        "spec": {
            "replicas": 1,
            "gpusPerReplica": gpus,
            "workloadClass": status.pop("cls", "default"),
            "template": {"spec": {"containers": [{"name": "c", "image": "x"}]}},
        },
        # the priority the operator resolved from the job's PriorityClass
        "status": {"phase": phase, "totalGPUs": gpus, "priority": prio, **status},
    }


def policy(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "wattcap.io/v1alpha1",
        "kind": "PowerPolicy",
        "metadata": {"name": "site", "creationTimestamp": "2026-06-01T00:00:00Z"},
        "spec": {"capWatts": 20_000, "pue": 1.0, "gpuIdleWatts": 100, "maxWait": "1h"},
        "status": status,
    }


def step(dt: float, cap: float, planned: float) -> dict[str, Any]:
    return {"at": format_time(NOW + dt), "capWatts": cap, "plannedWatts": planned}


def test_queue_is_in_the_cores_order_past_max_wait_first_then_priority_then_fifo() -> None:
    tjs = [
        tj("late-low", created=NOW - 60),
        tj("early-low", created=NOW - 120),
        tj("high", prio=5, created=NOW - 30),
        tj("starving", created=NOW - 7200),  # past the policy's 1h maxWait
        tj("runs", phase="Running"),
    ]
    recs = queue_records(policy(), tjs, NOW)
    assert [r["name"] for r in recs] == ["starving", "high", "early-low", "late-low"]
    assert [r["position"] for r in recs] == [1, 2, 3, 4]
    assert recs[0]["pastMaxWait"] and not recs[1]["pastMaxWait"]


def test_status_counts_jobs_and_lists_cap_changes_from_the_published_outlook() -> None:
    outlook = {"steps": [step(0, 20_000, 9_000), step(600, 12_000, 9_000), step(900, 20_000, 0)]}
    pol = policy(capWatts=20_000, headroomWatts=11_000, outlook=outlook, lastCycle=format_time(NOW))
    tjs = [
        tj("a", phase="Running", forecast={"jobWatts": 4000}, measuredWatts=3000),
        tj("b", phase="Preempted"),
        tj("c"),
    ]
    (rec,) = status_records([pol], tjs)
    assert rec["jobs"]["running"] == 1 and rec["jobs"]["preempted"] == 1
    assert rec["jobs"]["queued"] == 1
    assert rec["nextCapChanges"] == [
        {"at": format_time(NOW + 600), "capWatts": 12_000},
        {"at": format_time(NOW + 900), "capWatts": 20_000},
    ]
    assert rec["runningForecastWatts"] == 4000 and rec["runningMeasuredWatts"] == 3000


def test_waits_by_reason_count_the_jobs_not_a_lingering_policy_field() -> None:
    pol = policy(waitingByReason={"SheddingLoad": 2, "WaitingForPower": 1})
    tjs = [tj("a", reason="WaitingForPower"), tj("b", phase="Preempted", reason="CapDrop")]
    (rec,) = status_records([pol], tjs)
    assert rec["waitingByReason"] == {"WaitingForPower": 1, "CapDrop": 1}


def test_explain_says_how_many_gpus_fit_the_published_headroom() -> None:
    # PUE 1, idle 100 W: a 400 W/GPU forecast adds 300 W per GPU; 1,000 W fit 3 GPUs
    pol = policy(headroomWatts=1_000)
    job = tj(
        "big",
        reason="WaitingForPower",
        message="site projected ...",
        forecast={"gpuWatts": 400, "jobWatts": 3200},
    )
    rec = explain_record(job, pol, queue_records(pol, [job], NOW))
    assert rec["siteWatts"] == 2_400 and rec["position"] == 1
    assert any("fits 3 GPUs" in s and "asks for 8" in s for s in rec["sooner"])


def test_explain_a_window_wait_names_the_drop_and_the_preemptible_way() -> None:
    outlook = {
        "steps": [step(0, 20_000, 0), step(600, 5_000, 0), step(1200, 20_000, 0)],
        "nextCapDrop": {
            "at": format_time(NOW + 600),
            "capWatts": 5_000,
            "window": "dr",
            "headroomWatts": 5_000,
        },
    }
    pol = policy(headroomWatts=18_000, outlook=outlook)
    job = tj("long", reason="WaitingForCapWindow", forecast={"gpuWatts": 400})
    rec = explain_record(job, pol, [])
    text = " ".join(rec["sooner"])
    assert "(dr)" in text and f"ends {format_time(NOW + 1200)}" in text
    assert "preemptible: true" in text


def test_top_groups_measured_against_forecast() -> None:
    tjs = [
        tj(
            "a", ns="x", phase="Running", cls="llm", forecast={"jobWatts": 4000}, measuredWatts=3600
        ),
        tj("b", ns="x", phase="Running", cls="cv", forecast={"jobWatts": 2000}),
        tj("c", ns="y", phase="Running", cls="llm", forecast={"jobWatts": 1000}, measuredWatts=900),
        tj("d", ns="y"),
    ]
    by_ns = {r["namespace"]: r for r in top_records(tjs, "namespace")}
    assert by_ns["x"]["jobs"] == 2 and by_ns["x"]["forecastWatts"] == 6000
    assert by_ns["x"]["measuredWatts"] == 3600
    by_cls = {r["class"]: r for r in top_records(tjs, "class")}
    assert by_cls["llm"]["measuredOverForecast"] == round(4500 / 5000, 3)
    assert by_cls["cv"]["measuredWatts"] is None


def test_chart_marks_planned_draw_above_the_cap() -> None:
    steps = [step(0, 20_000, 10_000), step(3600, 8_000, 10_000), step(7200, 20_000, 0)]
    text = chart(steps, NOW, width=24, height=6)
    rows = text.splitlines()
    assert len(rows) == 6 + 4  # bars, axis, ticks, two lines of legend
    body = [r.split("|", 1)[1] for r in rows[:6]]
    assert all(len(b) == 24 for b in body)
    assert any("!" in b[1:3] for b in body)  # hour 1-2: 10 kW planned under an 8 kW cap
    assert not any("!" in b[:1] + b[3:] for b in body)
    assert "00:00" in rows[7]


def test_table_aligns_columns_and_prints_none_as_kubectl_does() -> None:
    out = table(["NAME", "KW"], [["a", None], ["long-name", "1.0"]]).splitlines()
    assert out[0].index("KW") == out[2].index("1.0") == len("long-name") + 3
    assert out[1].endswith("<none>")


def test_flags_go_before_or_after_the_command() -> None:
    for argv in (["-n", "ml", "-o", "json", "queue"], ["queue", "-n", "ml", "-o", "json"]):
        args = build_parser().parse_args(argv)
        assert (args.namespace, args.output, args.command) == ("ml", "json", "queue")
    args = build_parser().parse_args(["status"])
    assert not hasattr(args, "namespace") and "namespace" in FLAG_DEFAULTS


def test_an_outlook_older_than_the_last_cycle_is_not_shown() -> None:
    stale = {"steps": [step(0, 20_000, 9_000)], "nextCapDrop": None}
    (rec,) = status_records([policy(outlook=stale, lastCycle=format_time(NOW + 15))], [])
    assert not rec["outlookCurrent"] and rec["outlook"] == [] and rec["nextCapDrop"] is None


def test_chart_marks_only_committed_draw_above_the_cap() -> None:
    # in a window, preemptible work (planned, not committed) is shed: it shows as `+`
    steps = [
        {**step(0, 20_000, 15_000), "committedWatts": 5_000},
        {**step(3600, 8_000, 15_000), "committedWatts": 5_000},
        {**step(7200, 20_000, 15_000), "committedWatts": 9_000},
        {**step(10800, 20_000, 0), "committedWatts": 0},
    ]
    body = [r.split("|", 1)[1] for r in chart(steps, NOW, 4 * 3600, width=4).splitlines()[:8]]
    assert not any("!" in b for b in body)
    assert any(b[1] == "+" for b in body) and any(b[1] == "#" for b in body)
    steps[2]["capWatts"] = 8_000  # committed 9 kW under an 8 kW cap
    body = [r.split("|", 1)[1] for r in chart(steps, NOW, 4 * 3600, width=4).splitlines()[:8]]
    assert any(b[2] == "!" for b in body) and not any("!" in b[:2] + b[3:] for b in body)


def test_status_shows_the_gpu_work_wattcap_does_not_manage() -> None:
    """Unmanaged GPU pods take power wattcap must plan around; a platform team
    asking why jobs wait must see them (and whether measured or reserved)."""
    unmanaged = {"watts": 5600.0, "gpus": 8, "pods": 2, "source": "Measured"}
    pol = policy(lastCycle=format_time(NOW), unmanaged=unmanaged)
    (rec,) = status_records([pol], [])
    assert rec["unmanaged"] == unmanaged
    text = _status_text(rec, NOW, wide=False)
    assert "unmanaged      5.6 kW: 8 GPUs in 2 pods (Measured)" in text
    (quiet,) = status_records([policy(lastCycle=format_time(NOW))], [])
    assert "unmanaged" not in _status_text(quiet, NOW, wide=False)


def test_status_lists_each_throttled_jobs_gpu_limit_its_state_and_why() -> None:
    """With GPU power limits on, status says whether they hold (the policy's
    PowerLimitsApplied condition) and shows each throttled job's limit and state."""
    why = "throttled to 390 W by demand-response window evening-peak; confirmed by the agent"
    cond = {"type": "PowerLimitsApplied", "status": "True", "reason": "Confirmed"}
    pol = policy(lastCycle=format_time(NOW), conditions=[{**cond, "message": "1 job(s)"}])
    throttled = {"type": "Throttled", "status": "True", "message": why}
    tjs = [
        tj(
            "low",
            phase="Running",
            gpuPowerLimitWatts=390,
            gpuPowerLimitState="Confirmed",
            conditions=[throttled],
        ),
        tj("mid", phase="Running", gpuPowerLimitWatts=450, gpuPowerLimitState="Pending"),
        tj("high", phase="Running"),
    ]
    (rec,) = status_records([pol], tjs)
    assert rec["powerLimits"] == {"status": "True", "reason": "Confirmed", "message": "1 job(s)"}
    assert rec["throttled"] == [
        {"namespace": "ml", "name": "low", "gpuPowerLimitWatts": 390,
         "gpuPowerLimitState": "Confirmed", "message": why},
        {"namespace": "ml", "name": "mid", "gpuPowerLimitWatts": 450,
         "gpuPowerLimitState": "Pending", "message": None},
    ]  # fmt: skip
    text = _status_text(rec, NOW, wide=False)
    assert "power limits   Confirmed: 1 job(s)" in text
    lines = text.splitlines()
    (low,) = [x for x in lines if "ml/low" in x]
    assert "390 W" in low and "Confirmed" in low and why in low
    (mid,) = [x for x in lines if "ml/mid" in x]
    assert "450 W" in mid and "Pending" in mid
    assert not any("ml/high" in x for x in lines)
    (quiet,) = status_records([policy(lastCycle=format_time(NOW))], [tj("high", phase="Running")])
    assert quiet["throttled"] == [] and quiet["powerLimits"] is None
    assert "power limits" not in _status_text(quiet, NOW, wide=False)
