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
of `make test` runs 4. The number of manifests tried is printed.
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
from conftest import OperatorProcess, kubectl
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kubernetes import client, config
from kubernetes.client.rest import ApiException
from test_operator import set_policy, training_job

pytestmark = pytest.mark.integration

PERIOD_S = 2  # set_policy's controlPeriod
BATCHES = int(os.environ.get("WATTCAP_FUZZ_BATCHES", "4"))
BATCH = 12
FIELD = re.compile(r"\b(spec|metadata)\.[A-Za-z]|\bspec\[|metadata\.name|\bname\b")
TRIED: Counter[str] = Counter()
SERIAL = itertools.count()  # unique names across draws

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
        st.sampled_from(["2026-07-01T14:00:00Z", "2099-01-01T00:00:00+02:00", "yesterday"]),
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
    return {
        "apiVersion": "wattcap.io/v1alpha1",
        "kind": "PowerPolicy",
        "metadata": {"name": f"fuzz-{n}"},
        "spec": spec,
    }


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
    kubectl(kc, "create", "namespace", ns, check=False)
    set_policy(kc, 48_800)
    log = tmp_path_factory.mktemp("fuzz") / "operator.log"
    op = OperatorProcess(kc, log)
    op.start()
    yield ns
    op.stop()
    print(Path(log).read_text()[-3000:])
    kubectl(kc, "delete", "powerpolicies.wattcap.io", "-l", "wattcap.io/fuzz", check=False)
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
        )
    )
    def batch(manifests: list[dict[str, Any]]) -> None:
        nonlocal batches
        batches += 1
        made: list[tuple[str, str]] = []
        for m in manifests:
            kind = "trainingjobs" if m["kind"] == "TrainingJob" else "powerpolicies"
            m["metadata"].setdefault("labels", {})["wattcap.io/fuzz"] = "true"
            try:
                if kind == "trainingjobs":
                    custom.create_namespaced_custom_object("wattcap.io", "v1alpha1", ns, kind, m)
                else:
                    custom.create_cluster_custom_object("wattcap.io", "v1alpha1", kind, m)
            except ApiException as err:
                refusal_names_a_field(err)
                TRIED[f"{m['kind']} refused"] += 1
                continue
            except ValueError as err:  # the client refuses to send it at all
                TRIED[f"{m['kind']} unsendable"] += 1
                print(f"unsendable: {err}")
                continue
            made.append((kind, m["metadata"]["name"]))
        for kind, name in made:
            st_ = handled(kind, name)
            what = st_.get("phase") or next(
                (c["reason"] for c in st_.get("conditions") or [] if c["type"] == "Active"), "?"
            )
            if what == "Failed":
                assert FIELD.search(st_.get("message", "")), (name, st_)
            TRIED[f"{kind} handled: {what}"] += 1
        kubectl(kc, "delete", "trainingjobs.wattcap.io", "--all", "-n", ns, "--timeout=60s")
        kubectl(kc, "delete", "powerpolicies.wattcap.io", "-l", "wattcap.io/fuzz", "--timeout=60s")
        kubectl(kc, "delete", "jobs.batch", "--all", "-n", ns, "--timeout=60s", check=False)

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

    batch()
    tried = sum(v for k, v in TRIED.items() if k != "known-good admitted")
    print(f"fuzz: {tried} manifests tried in {batches} batches: {dict(sorted(TRIED.items()))}")
    assert batches == BATCHES and tried == BATCHES * BATCH
