"""The CRDs against a real kube-apiserver: what it accepts, refuses and defaults.

The API server is the only judge of the OpenAPI schema and the CEL rules, so
every refusal in examples/invalid/ is sent to it and its message is checked
against the file's `# expect:` lines. Invalid objects go through
`--dry-run=server` (full validation, nothing stored); valid ones are created
for real in a namespace of their own and deleted afterwards.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import create_namespace, kubectl

from wattcap.model import ManifestError, PowerPolicy, parse_power_policy, parse_training_job

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Unique per run: a namespace deleted by an earlier run may still be terminating.
NS = f"wattcap-crd-test-{uuid.uuid4().hex[:6]}"
INVALID = sorted((ROOT / "examples" / "invalid").glob("*.yaml"))
POLICY = "wattcap-crd-test"


def expectations(path: Path) -> list[str]:
    return [m.strip() for m in re.findall(r"^# expect: (.*)$", path.read_text(), re.M)]


def as_yaml(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False)


def get(kubeconfig: str, *args: str) -> dict[str, Any]:
    return json.loads(kubectl(kubeconfig, "get", *args, "-o", "json").stdout)


def refused(kubeconfig: str, obj: dict[str, Any] | str) -> str:
    """Server-side dry-run create; the API server's refusal (stderr), or fail."""
    text = obj if isinstance(obj, str) else as_yaml(obj)
    res = kubectl(kubeconfig, "create", "--dry-run=server", "-f", "-", stdin=text, check=False)
    assert res.returncode != 0, f"the API server accepted:\n{text}\n{res.stdout}"
    return res.stderr


def accepted(kubeconfig: str, obj: dict[str, Any]) -> None:
    res = kubectl(
        kubeconfig, "create", "--dry-run=server", "-f", "-", stdin=as_yaml(obj), check=False
    )
    assert res.returncode == 0, res.stderr


def job(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "wattcap.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"gpusPerReplica": 8, **spec},
    }


def policy(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "wattcap.io/v1alpha1",
        "kind": "PowerPolicy",
        "metadata": {"name": name},
        "spec": {"capWatts": 2_100_000, **spec},
    }


@pytest.fixture(scope="module")
def kc(kubeconfig: str) -> Iterator[str]:
    """The cluster with the CRDs applied (from crds/) and a namespace for this module."""
    kubectl(kubeconfig, "apply", "-f", str(ROOT / "crds"))
    kubectl(
        kubeconfig,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/trainingjobs.wattcap.io",
        "crd/powerpolicies.wattcap.io",
    )
    create_namespace(kubeconfig, NS, exist_ok=True)
    yield kubeconfig
    kubectl(kubeconfig, "delete", "namespace", NS, "--wait=false", "--ignore-not-found")
    kubectl(kubeconfig, "delete", "powerpolicy", POLICY, "--ignore-not-found")


# --------------------------------------------------------------------- the CRDs


@pytest.mark.parametrize("crd", ["trainingjobs.wattcap.io", "powerpolicies.wattcap.io"])
def test_crd_is_established_and_structural(kc: str, crd: str) -> None:
    conditions = {c["type"]: c for c in get(kc, "crd", crd)["status"]["conditions"]}
    assert conditions["Established"]["status"] == "True"
    assert conditions["NamesAccepted"]["status"] == "True"
    assert "NonStructuralSchema" not in conditions


def test_short_names_and_category_resolve(kc: str) -> None:
    for resource in ("tj", "pp", "wattcap"):
        kubectl(kc, "get", resource, "-A")


# --------------------------------------------------------------------- refusals


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_example_is_refused_with_a_message_naming_the_field(kc: str, path: Path) -> None:
    obj = yaml.safe_load(path.read_text())
    if obj["kind"] == "TrainingJob":
        obj["metadata"]["namespace"] = NS
    err = refused(kc, obj)
    for text in expectations(path):
        assert text in err, f"{path.name}: {text!r} not in the API server's answer:\n{err}"


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"gpusPerReplica": 65}, "spec.gpusPerReplica", "less than or equal to 64"),
        ({"gpuWattsHint": 3000}, "spec.gpuWattsHint", "less than or equal to 2000"),
        ({"gpuWattsHint": 0}, "spec.gpuWattsHint", "greater than 0"),
        ({"workloadClass": "LLM_pretrain"}, "spec.workloadClass", "should match"),
        ({"maxDelay": -5}, "spec.maxDelay", "a duration like"),
        ({"maxDelay": "5ms"}, "spec.maxDelay", "a duration like"),
        ({"priority": "high"}, "spec.priority", "must be of type integer"),
        (
            {"priorityClassName": "system-cluster-critical"},
            "spec.priorityClassName",
            "system-* PriorityClasses are for cluster components",
        ),
    ],
)
def test_trainingjob_field_refusals(kc: str, spec: dict, field: str, message: str) -> None:
    err = refused(kc, job("refused", **spec))
    assert field in err and message in err, err


def test_trainingjob_without_gpus_is_refused(kc: str) -> None:
    obj = job("no-gpus")
    del obj["spec"]["gpusPerReplica"]
    err = refused(kc, obj)
    assert "spec.gpusPerReplica: Required value" in err, err


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"capWatts": 0}, "spec.capWatts", "greater than 0"),
        ({"pue": 3.5}, "spec.pue", "less than or equal to 3"),
        ({"safetyMargin": 0.6}, "spec.safetyMargin", "less than or equal to 0.5"),
        ({"coverageTarget": 0.3}, "spec.coverageTarget", "greater than or equal to 0.5"),
        ({"controlPeriod": "0s"}, "spec.controlPeriod", "must be at least 1s"),
        ({"controlPeriod": 0}, "spec.controlPeriod", "seconds >= 1"),
        (
            {
                "capSchedule": [
                    {"start": "2026-07-01T14:00:00", "end": "2026-07-01T15:00:00Z", "capWatts": 1e6}
                ]
            },
            "spec.capSchedule[0].start",
            "should match",
        ),
        (
            {"capSchedule": [{"start": "2026-07-01T14:00:00Z", "capWatts": 1e6}]},
            "spec.capSchedule[0].end",
            "Required value",
        ),
    ],
)
def test_powerpolicy_field_refusals(kc: str, spec: dict, field: str, message: str) -> None:
    err = refused(kc, policy("refused", **spec))
    assert field in err and message in err, err


def test_window_cap_may_exceed_the_base_cap(kc: str) -> None:
    """A window only ever lowers the cap in force, so a higher one is harmless."""
    accepted(
        kc,
        policy(
            "higher-window",
            capSchedule=[
                {
                    "name": "x",
                    "start": "2026-07-01T14:00:00Z",
                    "end": "2026-07-01T18:00:00+02:00",
                    "capWatts": 3_000_000,
                }
            ],
        ),
    )


def test_site_idle_check_uses_every_field(kc: str) -> None:
    """16 x (1000 + 8 x 100) x 1.5 = 43200 W idle: refused at 43000, accepted at 43200."""
    site = {
        "site": {"nodes": 16, "gpusPerNode": 8},
        "pue": 1.5,
        "nodeBaseWatts": 1000,
        "gpuIdleWatts": 100,
    }
    err = refused(kc, policy("idle", **{**site, "capWatts": 43_000}))
    assert "spec.capWatts" in err and "idle power 43,200 W (16 nodes, 128 GPUs, PUE 1.5)" in err
    accepted(kc, policy("idle", **{**site, "capWatts": 43_200}))
    accepted(kc, policy("idle-no-gpus", capWatts=1, site={"nodes": 4}))


# --------------------------------------------------------------------- accepted, defaulted


VALID = sorted(p for p in (ROOT / "examples").rglob("*.yaml") if "invalid" not in p.parts)


@pytest.mark.parametrize("path", VALID, ids=lambda p: str(p.relative_to(ROOT / "examples")))
def test_every_valid_example_is_accepted(kc: str, path: Path) -> None:
    for obj in yaml.safe_load_all(path.read_text()):
        if not obj or obj.get("kind") not in ("TrainingJob", "PowerPolicy"):
            continue
        if obj["kind"] == "TrainingJob":
            obj["metadata"]["namespace"] = NS
        accepted(kc, obj)


def test_example_trainingjobs_are_accepted_and_defaulted(kc: str) -> None:
    for name in ("trainingjob.yaml", "trainingjob-small.yaml"):
        obj = yaml.safe_load((ROOT / "examples" / name).read_text())
        obj["metadata"]["namespace"] = NS
        kubectl(kc, "apply", "-f", "-", stdin=as_yaml(obj))

    big = get(kc, "-n", NS, "tj", "llama-pretrain")
    spec = parse_training_job(big)
    assert (spec.replicas, spec.gpus_per_replica, spec.gpus) == (2, 8, 16)
    assert spec.expected_duration_s == 5400.0
    assert spec.workload_class == "llm-pretrain"
    assert big["spec"]["template"]["spec"]["containers"][0]["name"] == "trainer"

    small = get(kc, "-n", NS, "tj", "finetune-small")
    assert small["spec"]["replicas"] == 1
    assert "priority" not in small["spec"], "no default: without a class the ceiling is 0"
    assert small["spec"]["workloadClass"] == "default"
    assert small["spec"]["preemptible"] is True
    assert parse_training_job(small).expected_duration_s == 600.0


def test_minimal_policy_is_defaulted_to_the_dataclass_defaults(kc: str) -> None:
    kubectl(kc, "apply", "-f", "-", stdin=as_yaml(policy(POLICY)))
    stored = get(kc, "powerpolicy", POLICY)
    assert stored["spec"]["ordering"] == "PriorityFIFO"
    assert stored["spec"]["controlPeriod"] == "15s"
    assert parse_power_policy(stored) == PowerPolicy(cap_watts=2_100_000, name=POLICY)


def patch_status(kc: str, name: str, status: dict[str, Any]) -> None:
    """Merge-patch a TrainingJob's status, as the operator does."""
    kubectl(
        kc,
        "patch",
        "-n",
        NS,
        "tj",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def test_status_written_like_the_operator_round_trips(kc: str) -> None:
    """Every status field the operator writes survives (no pruning) and feeds the columns."""
    name = "status-round-trip"
    kubectl(kc, "apply", "-f", "-", stdin=as_yaml(job(name, replicas=2)))
    status = {
        "phase": "Queued",
        "reason": "WaitingForPower",
        "message": "site projected 1.92 MW + 0.31 MW > cap 2.10 MW until 14:05",
        "forecast": {
            "gpuWatts": 610.5,
            "jobWatts": 11721.6,
            "kilowatts": "11.7",
            "quantile": 0.95,
            "source": "prior",
            "durationSeconds": 5400,
        },
        "placement": ["gpu-node-0", "gpu-node-1"],
        "totalGPUs": 16,
        "estimatedStart": "2026-07-01T14:05:00Z",
        "preemptions": 0,
        "observedGeneration": 1,
        "conditions": [
            {
                "type": "Admitted",
                "status": "False",
                "reason": "WaitingForPower",
                "message": "not yet",
                "lastTransitionTime": "2026-07-01T13:00:00Z",
                "observedGeneration": 1,
            }
        ],
    }
    patch_status(kc, name, status)
    assert get(kc, "-n", NS, "tj", name)["status"] == status
    table = kubectl(kc, "get", "-n", NS, "tj", name).stdout.split()
    for cell in ("Queued", "16", "11.7", "WaitingForPower", "2026-07-01T14:05:00Z"):
        assert cell in table, table

    kubectl(kc, "apply", "-f", "-", stdin=as_yaml(policy(POLICY)))
    pstatus = {
        "capWatts": 2_100_000.0,
        "capKilowatts": "2100.0",
        "measuredWatts": 1_500_000.0,
        "measuredKilowatts": "1500.0",
        "projectedWatts": 1_600_000.0,
        "projectedKilowatts": "1600.0",
        "headroomWatts": 458_000.0,
        "headroomKilowatts": "458.0",
        "queuedJobs": 3,
        "runningJobs": 7,
        "waitingByReason": {"WaitingForPower": 2, "WaitingForGPUs": 1},
        "activeWindow": "evening-peak",
        "lastCycle": "2026-07-01T13:00:00Z",
        "observedGeneration": 1,
    }
    kubectl(
        kc,
        "patch",
        "powerpolicy",
        POLICY,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": pstatus}),
    )
    assert get(kc, "powerpolicy", POLICY)["status"] == pstatus
    table = kubectl(kc, "get", "powerpolicy", POLICY).stdout.split()
    for cell in ("2100.0", "1500.0", "1600.0", "458.0", "3", "7"):
        assert cell in table, table


# --------------------------------------------------------------------- transitions


def set_phase(kc: str, name: str, phase: str) -> None:
    patch_status(kc, name, {"phase": phase})


def patch_spec(kc: str, name: str, **spec: Any) -> Any:
    return kubectl(
        kc,
        "patch",
        "-n",
        NS,
        "tj",
        name,
        "--type=merge",
        "-p",
        json.dumps({"spec": spec}),
        check=False,
    )


def test_size_is_mutable_while_queued_and_frozen_once_admitted(kc: str) -> None:
    name = "resize"
    kubectl(kc, "apply", "-f", "-", stdin=as_yaml(job(name, replicas=2)))
    assert patch_spec(kc, name, replicas=3).returncode == 0  # no status yet
    set_phase(kc, name, "Queued")
    assert patch_spec(kc, name, replicas=4, gpusPerReplica=4).returncode == 0

    set_phase(kc, name, "Admitted")
    res = patch_spec(kc, name, replicas=1)
    assert res.returncode != 0
    assert "spec.replicas is immutable once the job has left the queue (phase Admitted)" in (
        res.stderr
    )
    res = patch_spec(kc, name, gpusPerReplica=8)
    assert res.returncode != 0
    assert "spec.gpusPerReplica is immutable" in res.stderr, res.stderr
    # The template stays editable, and the size rules do not block status writes.
    # (What the tenant declares about power, priority and time is fixed from
    # submission on: tests/integration/test_tenants.py.)
    res = patch_spec(kc, name, template={"metadata": {"labels": {"team": "vision"}}})
    assert res.returncode == 0, res.stderr
    set_phase(kc, name, "Running")
    assert get(kc, "-n", NS, "tj", name)["spec"]["replicas"] == 4


# --------------------------------------------------------------------- cap-schedule windows

# (start, end): the API server must refuse exactly the windows the operator's parser
# refuses, naming the field the parser names, and accept the rest, whatever the
# time zones, fractions of a second or the case of the T and Z.
WINDOWS = [
    ("2026-07-01T18:00:00Z", "2026-07-01T14:00:00Z"),
    ("2026-07-01T14:00:00Z", "2026-07-01T14:00:00Z"),  # empty window
    ("2026-07-01T14:00:00Z", "2026-07-01T16:00:00+02:00"),  # the same instant
    ("2026-07-01T17:00:00Z", "2026-07-01T18:00:00+02:00"),  # later text, earlier time
    ("2026-07-01T14:00:00.5Z", "2026-07-01T14:00:00Z"),
    ("2026-07-01T18:00:00+02:00", "2026-07-01T17:00:00Z"),  # earlier text, later time
    ("2026-07-01T14:00:00Z", "2026-07-01T14:00:00.5Z"),
    ("2026-07-01T14:00:00-00:00", "2026-07-01T14:00:01+00:00"),
    ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999-23:59"),
    # RFC 3339 allows a lower-case t and z; the API server's CEL cannot read them
    ("2026-07-01T18:00:00z", "2026-07-01T14:00:00z"),
    ("2026-07-01T14:00:00z", "2026-07-01T18:00:00z"),
    ("2026-07-01T14:00:00Z", "2026-07-01T18:00:00z"),
    ("2026-07-01t14:00:00Z", "2026-07-01T18:00:00Z"),
    ("2026-07-01T14:00:00Z", "2026-07-01T18:00:00+24:00"),  # Go takes it, Python does not
    ("0000-01-01T00:00:00Z", "2026-07-01T18:00:00Z"),  # Go takes it, Python does not
]


def _parser_refusal(spec: dict[str, Any]) -> ManifestError | None:
    try:
        parse_power_policy(spec)
    except ManifestError as err:
        return err
    return None


@pytest.mark.parametrize(("start", "end"), WINDOWS, ids=lambda v: v)
def test_windows_refused_by_the_api_server_exactly_when_the_operator_refuses_them(
    kc: str, start: str, end: str
) -> None:
    window = {"name": "w", "start": start, "end": end, "capWatts": 1_000_000}
    fine = {"name": "ok", "start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}
    obj = policy("window", capSchedule=[{**window, **fine}, window])
    err = _parser_refusal(obj["spec"])
    if err is None:
        accepted(kc, obj)
        return
    said = refused(kc, obj)
    assert f"{err.field}:" in said, (err, said)
    if "should match" not in said:
        # an end not after its start: the CEL rule, not an evaluation error
        assert "end must be after start" in said and "evaluating rule" not in said, said
    # (a time not in the pattern's form is also one the CEL rule cannot read: the
    # API server adds that evaluation error after the pattern's, which names the field)
