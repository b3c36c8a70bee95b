"""Several PowerPolicies in one cluster (sites.py): which nodes and jobs each one decides."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_controller import NOW, job, mem, node, site, site_policy, tj

from wattcap.controller import LABEL_TJ, cycle
from wattcap.sites import (
    NODES_UNGOVERNED,
    SITE_NOT_FOUND,
    assign,
    conflict_condition,
    default_site,
    node_owners,
    orphan_status,
    parse_sites,
    report_site,
    site_view,
)


def policy(name: str, created: str, default: bool = False, **selector: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"capWatts": 20_000, "nodeSelector": selector}
    if default:
        spec["defaultSite"] = True
    return {"metadata": {"name": name, "creationTimestamp": created}, "spec": spec}


def lnode(name: str, **labels: str) -> dict[str, Any]:
    n = node(name)
    n["metadata"]["labels"] = labels
    return n


def on_site(name: str, site_name: str | None = None, **kw: Any) -> dict[str, Any]:
    t = tj(name, **kw)
    if site_name is not None:
        t["spec"]["site"] = site_name
    return t


def pod(owner: str, node_name: str, gpus: int = 8, labelled: bool = True) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"{owner}-0",
            "namespace": "ml",
            "labels": {LABEL_TJ: owner} if labelled else {},
        },
        "spec": {
            "nodeName": node_name,
            "containers": [{"resources": {"requests": {"nvidia.com/gpu": str(gpus)}}}],
        },
    }


A = policy("a", "2026-07-01T00:00:00Z", zone="a")
B = policy("b", "2026-07-02T00:00:00Z", zone="b")
NODES = [lnode("a1", zone="a"), lnode("a2", zone="a"), lnode("b1", zone="b"), lnode("b2", zone="b")]


def test_each_policy_governs_the_nodes_its_selector_selects() -> None:
    owners, conflicts = node_owners(parse_sites([B, A]), NODES)
    assert owners == {"a1": "a", "a2": "a", "b1": "b", "b2": "b"}
    assert conflicts == {}


def test_a_node_two_policies_select_belongs_to_the_older_and_the_younger_reports_it() -> None:
    everything = policy("all", "2026-07-03T00:00:00Z")  # empty selector: every node
    owners, conflicts = node_owners(parse_sites([everything, B, A]), NODES)
    assert set(owners.values()) == {"a", "b"}
    assert sorted(conflicts["all"]) == ["a1", "a2", "b1", "b2"]
    view = site_view(
        site(site_policy(10_000, name="all"), NODES, [], [], {}),
        [A, B, everything],
        site_policy(10_000, name="all"),
    )
    assert view.state.nodes == []
    cond = conflict_condition(view, "now")
    assert cond["type"] == "NodeConflict" and cond["status"] == "True"
    assert "a1" in cond["message"] and "b2" in cond["message"] and "a, b" in cond["message"]
    assert (
        conflict_condition(
            site_view(
                site(site_policy(1, name="a"), NODES, [], [], {}), [A, B], site_policy(1, name="a")
            ),
            "now",
        )["status"]
        == "False"
    )


def test_a_policy_being_deleted_governs_nothing() -> None:
    leaving = {**A, "metadata": {**A["metadata"], "deletionTimestamp": "2026-07-04T00:00:00Z"}}
    owners, _ = node_owners(parse_sites([leaving, B]), NODES)
    assert owners == {"b1": "b", "b2": "b"}


def test_the_default_site_is_the_flagged_one_else_the_oldest() -> None:
    assert default_site(parse_sites([A, B])) == "a"
    flagged = policy("b", "2026-07-02T00:00:00Z", default=True, zone="b")
    assert default_site(parse_sites([A, flagged])) == "b"
    assert default_site([]) is None


def test_a_job_goes_to_the_site_it_names_else_to_the_default() -> None:
    sites = parse_sites([A, B])
    owners, _ = node_owners(sites, NODES)
    assert assign(on_site("x", "b"), None, sites, owners).site == "b"
    assert assign(on_site("x"), None, sites, owners).site == "a"


def test_a_job_naming_a_missing_site_waits_with_a_reason_naming_the_field() -> None:
    sites = parse_sites([A, B])
    got = assign(on_site("x", "gone"), None, sites, node_owners(sites, NODES)[0])
    assert got.site is None and got.reason == SITE_NOT_FOUND
    assert "spec.site" in got.message and "gone" in got.message
    status = orphan_status(on_site("x", "gone"), None, got, "now")
    assert status is not None
    assert status["phase"] == "Queued" and status["reason"] == SITE_NOT_FOUND


def test_a_running_job_belongs_to_the_site_of_the_nodes_it_runs_on() -> None:
    sites = parse_sites([A, B])
    owners, _ = node_owners(sites, NODES)
    running = job("x", ["b1", "b2"])
    assert assign(on_site("x", "a"), running, sites, owners).site == "b"
    # suspended with no pods left: back to the site it names
    stopped = job("x", ["b1"], suspend=True, active=0)
    assert assign(on_site("x", "a"), stopped, sites, owners).site == "a"
    # finished: the site it names reports it (and learns from it)
    done = job("x", ["b1"], active=0, conditions=[{"type": "Complete", "status": "True"}])
    assert assign(on_site("x", "a"), done, sites, owners).site == "a"


def test_a_job_running_on_ungoverned_nodes_is_reported_not_lost() -> None:
    sites = parse_sites([B])  # a was deleted
    got = assign(on_site("x", "a"), job("x", ["a1"]), sites, node_owners(sites, NODES)[0])
    assert got.site is None and got.reason == NODES_UNGOVERNED and "a1" in got.message
    status = orphan_status(on_site("x", "a", status={"phase": "Running"}), None, got, "now")
    assert status is not None and "phase" not in status  # it keeps running, and says why
    finished = on_site("x", "a", status={"phase": "Succeeded"})
    assert orphan_status(finished, None, got, "now") is None


def test_the_view_keeps_the_sites_nodes_pods_and_jobs_only() -> None:
    pol_a = site_policy(20_000, name="a")
    jobs_ = {("ml", "mine"): job("mine", ["a1"]), ("ml", "theirs"): job("theirs", ["b1"])}
    pods = [pod("mine", "a1"), pod("theirs", "b1"), pod("stray", "a2", labelled=True)]
    tjs = [on_site("mine", "a"), on_site("theirs", "b"), on_site("lost", "gone")]
    view = site_view(site(pol_a, NODES, pods, tjs, jobs_), [A, B], pol_a)
    assert [n["metadata"]["name"] for n in view.state.nodes] == ["a1", "a2"]
    assert [t["metadata"]["name"] for t in view.state.trainingjobs] == ["mine"]
    assert list(view.state.jobs) == [("ml", "mine")]
    by_node = {p["spec"]["nodeName"]: p for p in view.state.pods}
    assert set(by_node) == {"a1", "a2"}
    assert LABEL_TJ in by_node["a1"]["metadata"]["labels"]  # its own job's pod
    # a pod labelled for a job this site does not decide counts as foreign GPU use
    assert LABEL_TJ not in by_node["a2"]["metadata"]["labels"]
    assert [o[0]["metadata"]["name"] for o in view.orphans] == ["lost"]  # a is the default
    pol_b = site_policy(20_000, name="b")
    assert site_view(site(pol_b, NODES, pods, tjs, jobs_), [A, B], pol_b).orphans == []


def test_another_sites_pods_on_a_node_take_its_gpus() -> None:
    """A job of site b placed on a node a now governs (b's selector changed)
    is b's; its pods there still fill the node for a."""
    pol_a = site_policy(20_000, name="a")
    b_wide = policy("b", "2026-07-02T00:00:00Z")  # selects every node; a is older
    jobs_ = {("ml", "theirs"): job("theirs", ["a1", "b1", "b2"])}
    pods = [pod("theirs", "a1"), pod("theirs", "b1"), pod("theirs", "b2")]
    tjs = [on_site("theirs", "b"), on_site("new", "a", replicas=2)]
    view = site_view(site(pol_a, NODES, pods, tjs, jobs_), [A, b_wide], pol_a)
    assert [t["metadata"]["name"] for t in view.state.trainingjobs] == ["new"]
    plan = cycle(view.state, mem(), NOW)
    # a1 is full of b's pod: two replicas of 8 GPUs cannot start on a's two nodes
    assert plan.create_jobs == []
    assert plan.tj_status[("ml", "new")]["phase"] == "Queued"


LABELS = st.sampled_from(["x", "y", "z"])


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[dict], list[dict], list[dict], dict]:
    nodes = [
        lnode(f"n{i}", **draw(st.dictionaries(st.sampled_from(["zone", "rack"]), LABELS)))
        for i in range(draw(st.integers(0, 6)))
    ]
    pols = [
        policy(
            f"p{i}",
            f"2026-07-0{draw(st.integers(1, 3))}T00:00:00Z",
            draw(st.booleans()),
            **draw(st.dictionaries(st.sampled_from(["zone", "rack"]), LABELS, max_size=2)),
        )
        for i in range(draw(st.integers(0, 4)))
    ]
    names = [n["metadata"]["name"] for n in nodes] + ["gone-node"]
    tjs, jobs_ = [], {}
    for i in range(draw(st.integers(0, 8))):
        named = draw(st.sampled_from([None, "p0", "p1", "p2", "p3", "nowhere"]))
        t = on_site(f"j{i}", named)
        tjs.append(t)
        if draw(st.booleans()):
            placed = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3))
            jobs_[("ml", f"j{i}")] = job(
                f"j{i}", placed, suspend=draw(st.booleans()), active=draw(st.integers(0, 1))
            )
    return nodes, pols, tjs, jobs_


@settings(max_examples=200, deadline=None)
@given(clusters())
def test_every_node_has_at_most_one_site_and_every_job_one_site_or_a_reason(
    c: tuple[list[dict], list[dict], list[dict], dict],
) -> None:
    nodes, pols, tjs, jobs_ = c
    seen_nodes: dict[str, str] = {}
    seen_jobs: dict[str, str] = {}
    names = [p["metadata"]["name"] for p in pols]
    for name in names:
        pol = site_policy(20_000, name=name)
        view = site_view(site(pol, nodes, [], tjs, jobs_), pols, pol)
        for n in view.state.nodes:
            assert n["metadata"]["name"] not in seen_nodes, "a node governed by two sites"
            seen_nodes[n["metadata"]["name"]] = name
        for t in view.state.trainingjobs:
            assert t["metadata"]["name"] not in seen_jobs, "a job decided by two sites"
            seen_jobs[t["metadata"]["name"]] = name
        for t, _, got in view.orphans:
            assert got.reason and got.message, "a job that waits says why"
            assert t["metadata"]["name"] not in seen_jobs, "a job both decided and waiting"
            seen_jobs[t["metadata"]["name"]] = "(waiting)"
    if names:
        assert sorted(seen_jobs) == sorted(t["metadata"]["name"] for t in tjs), "a job lost"
    # a node selected by any policy is governed by one of them
    sites = parse_sites(pols)
    for n in nodes:
        labels = n["metadata"]["labels"]
        if any(all(labels.get(k) == v for k, v in s.selector.items()) for s in sites):
            assert n["metadata"]["name"] in seen_nodes


def test_the_default_site_reports_the_jobs_no_site_decides() -> None:
    pol_a = site_policy(20_000, name="a")
    tjs = [on_site("mine", "a"), on_site("lost", "gone")]
    view = site_view(site(pol_a, NODES, [], tjs, {}), [A, B], pol_a)
    plan = cycle(view.state, mem(), NOW)
    state = report_site(plan, view, "now")
    assert plan.tj_status[("ml", "lost")]["reason"] == SITE_NOT_FOUND
    assert plan.tj_status[("ml", "mine")]["phase"] == "Admitted"
    assert {c["type"] for c in plan.policy_status["conditions"]} >= {"NodeConflict"}
    # the status writes compare with what the lost job shows now
    assert [t["metadata"]["name"] for t in state.trainingjobs] == ["mine", "lost"]


def test_a_job_governed_again_loses_its_stale_no_site_reason() -> None:
    pol_b = site_policy(20_000, name="b")
    stale = {"phase": "Running", "reason": NODES_UNGOVERNED, "message": "x"}
    tjs = [on_site("back", "b", status=stale)]
    view = site_view(
        site(pol_b, NODES, [], tjs, {("ml", "back"): job("back", ["b1"])}), [A, B], pol_b
    )
    plan = cycle(view.state, mem(), NOW)
    report_site(plan, view, "now")
    st = plan.tj_status[("ml", "back")]
    assert st["phase"] == "Running" and st["reason"] == "Governed"


def test_jobs_of_a_site_whose_policy_is_refused_say_so_naming_the_policy_and_field() -> None:
    """A PowerPolicy the operator refuses decides nothing: its jobs must say why
    they wait (a running one keeps its phase); other sites' jobs are not its to report."""
    from wattcap.sites import POLICY_INVALID, invalid_policy_statuses

    why = "spec.capSchedule[0].end: must be after start"
    tjs = [
        on_site("queued", "a"),
        on_site("runs", "a", status={"phase": "Running"}),
        on_site("elsewhere", "b"),
        on_site("done", "a", status={"phase": "Succeeded"}),
    ]
    jobs = {("ml", "runs"): job("runs", ["a1"])}
    state = site(site_policy(1, name="a"), NODES, [], tjs, jobs)
    got = invalid_policy_statuses(state, [A, B], "a", why, "now")
    assert set(got) == {("ml", "queued"), ("ml", "runs")}
    queued = got[("ml", "queued")]
    assert queued["phase"] == "Queued" and queued["reason"] == POLICY_INVALID
    assert "PowerPolicy a" in queued["message"] and why in queued["message"]
    assert [(c["type"], c["status"], c["reason"]) for c in queued["conditions"]] == [
        ("Admitted", "False", POLICY_INVALID)
    ]
    runs = got[("ml", "runs")]
    assert "phase" not in runs and runs["reason"] == POLICY_INVALID
    assert runs["conditions"][0]["type"] == "Governed"
