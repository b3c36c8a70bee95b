"""Fuzz: Hypothesis-drawn TrainingJobs and PowerPolicies against the real API server.

Each manifest, a valid one bent in one or more places (a wrong type, an
absurd number, a junk duration, a template the CRD keeps free-form, a name
too long for a label, unknown fields), is created through the API server as
a tenant would. Then it is either

- refused, with a message that names the field (`spec.<...>` or
  `metadata.<...>`): the CRD schema or its CEL rules at work; or
- handled: the operator gives it a status within a few control periods (a
  job `Failed` for an invalid spec must name the field in its message).

After every batch the fuzzed objects are deleted and a known-good job must be
admitted within 2 control periods: whatever came before, the loop decides.

WATTCAP_FUZZ_BATCHES sets how many batches (`make fuzz`: 40); the short pass
of `make test` runs 4. The tally (manifests tried, refused naming a field,
handled, known-good jobs admitted within 2 periods) is printed after every
batch, so a long run that is stopped part way still reports (`make fuzz` runs
pytest with -s).
"""

from __future__ import annotations

import itertools
import os
import re
import string
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import OperatorProcess, create_namespace, kubectl
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from test_operator import set_policy, training_job

from wattcap.model import format_time, parse_time

pytestmark = pytest.mark.integration

PERIOD_S = 2  # set_policy's controlPeriod
BATCHES = int(os.environ.get("WATTCAP_FUZZ_BATCHES", "4"))
BATCH = 12
FIELD = re.compile(r"\b(spec|metadata)\.[A-Za-z]|\bspec\[|metadata\.name|\bname\b")
TRIED: Counter[str] = Counter()
SERIAL = itertools.count()  # unique names across draws
ODD = "wattcap.io/fuzz-odd"  # a manifest drawn valid (but odd): refusing it is a schema bug

junk = st.one_of(
    st.text(max_size=8),
    st.integers(min_value=-(2**62), max_value=2**62),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(string.ascii_lowercase, max_size=4), st.integers(), max_size=2),
)
durations = st.one_of(
    st.sampled_from(["5s", "1m", "0s", "1h30m", "0.001s", "", "-5s", "5", "1d", "10x"]),
    st.integers(min_value=-10, max_value=10**9),
    junk,
)


def maybe(value: st.SearchStrategy[Any], bad: st.SearchStrategy[Any] = junk) -> Any:
    """Mostly a good value, sometimes junk."""
    return st.one_of(value, value, value, bad)


templates = st.one_of(
    st.just({}),
    st.just({"spec": {"containers": "x"}}),
    st.just({"spec": {"containers": []}}),
    st.just({"spec": {"containers": [{"name": "t"}]}}),  # no image
    st.just({"spec": {"affinity": "x", "containers": [{"name": "t", "image": "i"}]}}),
    st.just({"metadata": {"labels": []}}),
    st.just({"metadata": {"annotations": {"a": 1}}}),
    st.builds(
        lambda ts: {
            "spec": {
                "terminationGracePeriodSeconds": ts,
                "containers": [{"name": "t", "image": "i"}],
            }
        },
        junk,
    ),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda kids: (
            st.lists(kids, max_size=3)
            | st.dictionaries(st.sampled_from(["spec", "containers", "metadata", "x"]), kids)
        ),
        max_leaves=6,
    ),
)

names = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True),
    st.integers(min_value=64, max_value=240).map(lambda n: "l" * n),
    st.text(max_size=12),
)


@st.composite
def trainingjob(draw: st.DrawFn, ns: str) -> dict[str, Any]:
    n = next(SERIAL)
    base = training_job("x", ns, 1, 1, 5)
    spec = base["spec"]
    name = f"{draw(names)}"
    spec["replicas"] = draw(maybe(st.integers(1, 3), st.integers(-5, 10**13) | junk))
    spec["gpusPerReplica"] = draw(maybe(st.integers(1, 8), st.integers(-1, 10**6) | junk))
    spec["priority"] = draw(maybe(st.integers(-5, 5), st.integers(-(2**40), 2**40) | junk))
    spec["preemptible"] = draw(maybe(st.booleans()))
    spec["workloadClass"] = draw(maybe(st.from_regex(r"[a-z]{1,10}", fullmatch=True)))
    spec["expectedDuration"] = draw(maybe(st.just("5s"), durations))
    if draw(st.booleans()):
        spec["maxDelay"] = draw(durations)
    if draw(st.booleans()):
        spec["gpuWattsHint"] = draw(maybe(st.floats(100, 700), st.floats(-1e9, 1e9) | junk))
    if draw(st.integers(0, 3)) == 0:
        spec["template"] = draw(templates)
    if draw(st.integers(0, 5)) == 0:
        spec[draw(st.text(string.ascii_letters, min_size=1, max_size=6))] = draw(junk)
    for key in draw(st.lists(st.sampled_from(sorted(spec)), max_size=1)):
        del spec[key]  # a field left out
    base["metadata"]["name"] = f"{name[:230]}-{n}" if name else f"f-{n}"
    return base


@st.composite
def powerpolicy(draw: st.DrawFn) -> dict[str, Any]:
    n = next(SERIAL)
    when = st.one_of(
        st.sampled_from(
            [
                "2026-07-01T14:00:00Z",
                "2099-01-01T00:00:00+02:00",
                "yesterday",
                "2000-02-29T00:00:00z",  # RFC 3339, but not the form the API server reads
                "2026-07-01T14:00:00+24:00",
            ]
        ),
        junk,
    )
    spec: dict[str, Any] = {
        "capWatts": draw(maybe(st.floats(1, 1e7), st.floats(-1e9, 1e12) | junk)),
        "pue": draw(maybe(st.floats(1, 3), st.floats(-5, 50) | junk)),
        "gpuIdleWatts": draw(maybe(st.floats(0, 100))),
        "gpuTdpWatts": draw(maybe(st.floats(100, 1000))),
        "controlPeriod": draw(maybe(st.just("2s"), durations)),
        "gracePeriod": draw(maybe(st.just("1m"), durations)),
        "ordering": draw(maybe(st.sampled_from(["FIFO", "PriorityFIFO"]))),
        # never the fuzz's site: these govern no node (and are not the oldest)
        "nodeSelector": {"wattcap.io/fuzz": f"none-{n}"},
    }
    if draw(st.booleans()):
        spec["capSchedule"] = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"start": when, "end": when, "capWatts": maybe(st.floats(1, 1e6))}
                ),
                max_size=3,
            )
            | junk
        )
    if draw(st.booleans()):
        spec["site"] = {"nodes": draw(maybe(st.integers(1, 10))), "gpusPerNode": draw(junk)}
    meta: dict[str, Any] = {"name": f"fuzz-{n}"}
    if draw(st.integers(0, 2)) == 0:  # valid but odd instead of bent: the schema must take it
        spec = {**draw(odd_policy_spec()), "nodeSelector": spec["nodeSelector"]}
        meta["labels"] = {ODD: "true"}
    return {
        "apiVersion": "wattcap.io/v1alpha1",
        "kind": "PowerPolicy",
        "metadata": meta,
        "spec": spec,
    }


# Valid but odd: what the schema accepts, at the edges of what it allows.
legal_durations = st.one_of(
    st.sampled_from(["1s", "1.5s", "59m59s", "24h", "8760h", "0.25h30m", "1h0m0s"]),
    st.integers(min_value=1, max_value=2**53),
)
legal_times = st.sampled_from(
    [
        "1970-01-01T00:00:00Z",
        "2026-07-01T14:00:00Z",
        "2026-07-01T14:00:00.123456789+14:00",
        "2026-07-01T14:00:00-12:00",
        "9999-01-01T00:00:00Z",
        "0001-01-02T00:00:00+23:59",
        "2000-02-29T00:00:00.5-00:00",
    ]
)


odd_caps = st.one_of(
    st.sampled_from([1e-300, 1e-6, 1.0, 48_800.0, 1e12, 1.7e308]),
    st.floats(min_value=1e-9, max_value=1e15),
)


@st.composite
def odd_window(draw: st.DrawFn) -> dict[str, Any]:
    """A schedule window the schema accepts: past, far future, open now, a
    second long, with a cap as small or large as allowed."""
    now = time.time()
    when = draw(
        st.one_of(
            legal_times,
            st.integers(-3600, 3600).map(lambda d: format_time(now + d)),
        )
    )
    # ends after it starts (a window ending first is refused by the operator,
    # naming the field, as the bent policies show): 1 s to 10^6 s, or far ahead
    start = parse_time(when, "start")
    end = draw(
        st.one_of(
            st.integers(1, 10**6).map(lambda d: format_time(start + d)),
            st.just("9999-12-31T23:59:59.999Z"),
        )
    )
    return {
        "name": draw(st.from_regex(r"[a-z]{0,63}", fullmatch=True)),
        "start": when,
        "end": end,
        "capWatts": draw(odd_caps),
    }


@st.composite
def odd_policy_spec(draw: st.DrawFn) -> dict[str, Any]:
    """A PowerPolicy spec the schema and its CEL rules accept, drawn from the
    edges: caps from a microwatt to 1.7e308 W, periods from 1 s to 2^53 s,
    coverage 0.5 to 0.9999, TDP equal to idle, idle 0, PUE 3, 64 windows."""
    idle = draw(st.sampled_from([0.0, 70.0, 700.0]) | st.floats(0, 1e4))
    spec: dict[str, Any] = {
        "capWatts": draw(odd_caps),
        "gpuIdleWatts": idle,
        "gpuTdpWatts": draw(st.sampled_from([max(idle, 1e-9), idle + 1e-6, idle + 1e6])),
        "controlPeriod": draw(legal_durations),
    }
    floor = min(1.0, max(0.1, idle / spec["gpuTdpWatts"] * (1 + 1e-9)))  # x TDP >= idle
    optional: dict[str, st.SearchStrategy[Any]] = {
        "pue": st.sampled_from([1.0, 3.0]) | st.floats(1, 3),
        "nodeBaseWatts": st.sampled_from([0.0, 1e9]) | st.floats(0, 1e6),
        "safetyMargin": st.sampled_from([0.0, 0.5]) | st.floats(0, 0.5),
        "coverageTarget": st.sampled_from([0.5, 0.9999]) | st.floats(0.5, 0.9999),
        "admissionModel": st.sampled_from(["siteChance", "perJobQuantile"]),
        "classCorrelation": st.sampled_from([0.0, 1.0]),
        "ordering": st.sampled_from(["FIFO", "PriorityFIFO"]),
        "backfill": st.booleans(),
        "reservationDepth": st.sampled_from([0, 1000]),
        "preemption": st.booleans(),
        "gracePeriod": st.sampled_from([0, "0s"]) | legal_durations,
        "podsReadyTimeout": legal_durations,
        "maxTerminationGracePeriod": st.sampled_from([0, "0s"]) | legal_durations,
        "defaultJobDuration": st.sampled_from([0, "0s"]) | legal_durations,
        "maxWait": st.sampled_from([0, "0s"]) | legal_durations,
        "hintFloorFraction": st.sampled_from([0.0, 1.0]),
        "minMaxDelay": st.sampled_from([0, "0s"]) | legal_durations,
        "overrunAction": st.sampled_from(["Stop", "Replan"]),
        "overrunGrace": st.sampled_from([0, "0s"]) | legal_durations,
        "overdrawTolerance": st.sampled_from([0.0, 10.0]),
        "unmanaged": st.fixed_dictionaries(
            {
                "reserveWatts": st.sampled_from([0.0, 1e12]),
                "planGpusAt": st.sampled_from(["Measured", "Reserve"]),
            }
        ),
        "powerLimits": st.fixed_dictionaries(
            {
                "enabled": st.just(True),
                # a floor at or above idle (a CEL rule): the lowest allowed, or 1
                "minFraction": st.sampled_from([floor, 1.0]),
                "maxSlowdown": st.sampled_from([1.0, 10.0]),
            }
        ),
        "capSchedule": st.one_of(
            st.lists(odd_window(), max_size=4),
            st.lists(odd_window(), min_size=64, max_size=64),
        ),
    }
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=6)):
        spec[key] = draw(optional[key])
    return spec


def tally(batches: int) -> str:
    """One line: what the fuzz has tried so far, and what became of it."""
    refused = sum(v for k, v in TRIED.items() if k.endswith(" refused"))
    unsendable = sum(v for k, v in TRIED.items() if k.endswith(" unsendable"))
    handled = sum(v for k, v in TRIED.items() if " handled" in k)
    edits = sum(v for k, v in TRIED.items() if k.startswith("site edit"))
    return (
        f"fuzz tally after {batches} batches: {refused + unsendable + handled} manifests tried, "
        f"{refused} refused naming a field, {handled} handled, {unsendable} unsendable; "
        f"{TRIED['known-good admitted']} known-good jobs admitted within 2 periods; "
        f"{edits} valid but odd edits of the governing policy: {dict(sorted(TRIED.items()))}"
    )


def refusal_names_a_field(err: ApiException) -> str:
    import json

    try:
        body = json.loads(err.body or "{}")
    except ValueError:
        body = {"message": err.body}
    text = (body.get("message") or "") + " ".join(
        c.get("field", "") + " " + c.get("message", "")
        for c in (body.get("details") or {}).get("causes") or []
    )
    assert err.status in (400, 422), f"refused with {err.status}: {text[:300]}"
    assert FIELD.search(text), f"a refusal that names no field: {text[:300]}"
    return text


@pytest.fixture(scope="module")
def fuzz_site(crds: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A site with room for every job, and an operator deciding it."""
    kc = crds
    ns = "fuzz"
    create_namespace(kc, ns, exist_ok=True)
    set_policy(kc, 48_800)
    log = tmp_path_factory.mktemp("fuzz") / "operator.log"
    op = OperatorProcess(kc, log)
    op.start()
    yield ns
    # while the operator runs: it removes its finalizers from the fuzzed policies
    # (a stopped run leaves some; with the operator gone the delete would wait forever)
    kubectl(
        kc, "delete", "powerpolicies.wattcap.io", "-l", "wattcap.io/fuzz", "--timeout=60s",
        check=False,
    )  # fmt: skip
    op.stop()
    print(Path(log).read_text()[-3000:])
    kubectl(kc, "delete", "namespace", ns, "--wait=false", check=False)


def test_fuzzed_manifests_are_refused_naming_a_field_or_handled(crds: str, fuzz_site: str) -> None:
    kc, ns = crds, fuzz_site
    api = config.new_client_from_config(config_file=kc)
    custom = client.CustomObjectsApi(api)
    batches = 0

    def status_of(kind: str, name: str) -> dict[str, Any]:
        if kind == "trainingjobs":
            obj = custom.get_namespaced_custom_object("wattcap.io", "v1alpha1", ns, kind, name)
        else:
            obj = custom.get_cluster_custom_object("wattcap.io", "v1alpha1", kind, name)
        return obj.get("status") or {}

    def handled(kind: str, name: str) -> dict[str, Any]:
        end = time.monotonic() + 8 * PERIOD_S
        while time.monotonic() < end:
            st_ = status_of(kind, name)
            if (kind == "trainingjobs" and st_.get("phase")) or (
                kind == "powerpolicies" and st_.get("conditions")
            ):
                return st_
            time.sleep(0.25)
        raise AssertionError(f"{kind}/{name} got no status in {8 * PERIOD_S}s")

    def site_decided_since(t: float) -> str:
        """The governing policy's Active reason once a cycle ran after `t`."""
        end = time.monotonic() + 8 * PERIOD_S
        while time.monotonic() < end:
            for c in status_of("powerpolicies", "site").get("conditions") or []:
                if c["type"] == "Active" and parse_time(c["lastTransitionTime"], "t") >= t:
                    return str(c["reason"])
            time.sleep(0.25)
        raise AssertionError(f"the site's loop decided nothing in {8 * PERIOD_S}s after an edit")

    @settings(
        max_examples=BATCHES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        st.lists(
            st.one_of(trainingjob(ns), trainingjob(ns), trainingjob(ns), powerpolicy()),
            min_size=BATCH,
            max_size=BATCH,
        ),
        st.none() | odd_policy_spec(),
    )
    def batch(manifests: list[dict[str, Any]], site_edit: dict[str, Any] | None) -> None:
        nonlocal batches
        batches += 1
        made: list[tuple[str, str]] = []
        m_labels: dict[str, dict[str, str]] = {}
        if site_edit is not None:
            # the governing policy itself, valid but odd, for this batch: the
            # schema must take it, the loop must survive it and the edit back
            t_edit = float(int(time.time()))
            set_policy(kc, **{"cap": site_edit["capWatts"], **site_edit})
            reason = site_decided_since(t_edit)
            conds = status_of("powerpolicies", "site").get("conditions")
            assert reason != "InvalidPolicy", f"a valid policy refused by the operator: {conds}"
            TRIED[f"site edit: {reason}"] += 1
        for m in manifests:
            kind = "trainingjobs" if m["kind"] == "TrainingJob" else "powerpolicies"
            m["metadata"].setdefault("labels", {})["wattcap.io/fuzz"] = "true"
            try:
                if kind == "trainingjobs":
                    custom.create_namespaced_custom_object("wattcap.io", "v1alpha1", ns, kind, m)
                else:
                    custom.create_cluster_custom_object("wattcap.io", "v1alpha1", kind, m)
            except ApiException as err:
                text = refusal_names_a_field(err)
                assert ODD not in m["metadata"]["labels"], f"a valid policy refused: {text[:300]}"
                TRIED[f"{m['kind']} refused"] += 1
                continue
            except ValueError as err:  # the client refuses to send it at all
                TRIED[f"{m['kind']} unsendable"] += 1
                print(f"unsendable: {err}")
                continue
            made.append((kind, m["metadata"]["name"]))
            m_labels[m["metadata"]["name"]] = m["metadata"]["labels"]
        for kind, name in made:
            st_ = handled(kind, name)
            what = st_.get("phase") or next(
                (c["reason"] for c in st_.get("conditions") or [] if c["type"] == "Active"), "?"
            )
            if what == "Failed":
                assert FIELD.search(st_.get("message", "")), (name, st_)
            odd = " (valid, odd)" if ODD in m_labels.get(name, {}) else ""
            TRIED[f"{kind} handled{odd}: {what}"] += 1
        kubectl(kc, "delete", "trainingjobs.wattcap.io", "--all", "-n", ns, "--timeout=60s")
        kubectl(kc, "delete", "powerpolicies.wattcap.io", "-l", "wattcap.io/fuzz", "--timeout=60s")
        kubectl(kc, "delete", "jobs.batch", "--all", "-n", ns, "--timeout=60s", check=False)
        if site_edit is not None:
            set_policy(kc, 48_800)  # back to the sane site; the loop must wake on it

        good = training_job(f"good-{batches}", ns, 1, 8, 5, prio=10)
        custom.create_namespaced_custom_object("wattcap.io", "v1alpha1", ns, "trainingjobs", good)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2 * PERIOD_S:
            if status_of("trainingjobs", good["metadata"]["name"]).get("phase") in (
                "Admitted",
                "Running",
                "Succeeded",
            ):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(
                f"after batch {batches} a known-good job was not admitted in 2 control periods: "
                f"{status_of('trainingjobs', good['metadata']['name'])}"
            )
        TRIED["known-good admitted"] += 1
        print(tally(batches), flush=True)  # a run stopped part way still reports

    try:
        batch()
    finally:
        print(tally(batches), flush=True)
    tried = sum(
        v for k, v in TRIED.items() if k != "known-good admitted" and not k.startswith("site edit")
    )
    assert batches == BATCHES and tried == BATCHES * BATCH
