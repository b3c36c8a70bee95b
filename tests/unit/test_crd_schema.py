"""The CRDs agree with the parser (wattcap.model), with themselves and with the chart.

No cluster here: these read the YAML. tests/integration/test_crds.py sends the
same manifests to a real API server, which is the only judge of the CEL rules.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from wattcap.model import (
    WINDOW_TIME_PATTERN,
    ManifestError,
    PowerPolicy,
    TrainingJobSpec,
    parse_duration,
    parse_power_policy,
    parse_training_job,
)

ROOT = Path(__file__).resolve().parents[2]
CRD_FILES = {"TrainingJob": "trainingjob.yaml", "PowerPolicy": "powerpolicy.yaml"}
INVALID = sorted((ROOT / "examples" / "invalid").glob("*.yaml"))


def load_crd(kind: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "crds" / CRD_FILES[kind]).read_text())


def version(kind: str) -> dict[str, Any]:
    (v,) = load_crd(kind)["spec"]["versions"]
    return v


def schema(kind: str) -> dict[str, Any]:
    return version(kind)["schema"]["openAPIV3Schema"]


def dataclass_default(cls: type, name: str) -> Any:
    """A field's default as declared (with slots=True the class attribute is a descriptor)."""
    (f,) = [f for f in dataclasses.fields(cls) if f.name == name]
    assert f.default is not dataclasses.MISSING, f"{cls.__name__}.{name} has no default"
    return f.default


def schema_paths(node: Mapping[str, Any], prefix: str) -> Iterator[str]:
    """Dotted paths of every declared property below node; list items as `[]`."""
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return
    for name, sub in node.get("properties", {}).items():
        path = f"{prefix}.{name}"
        yield path
        if sub.get("type") == "array":
            yield from schema_paths(sub["items"], f"{path}[]")
        else:
            yield from schema_paths(sub, path)


def resolve(node: Mapping[str, Any], json_path: str) -> Mapping[str, Any] | None:
    """The schema node a simple printer-column jsonPath (.a.b.c) points at."""
    for part in json_path.strip(".").split("."):
        node = node.get("properties", {}).get(part)
        if node is None:
            return None
    return node


# --------------------------------------------------------------------- shape


@pytest.mark.parametrize("kind", CRD_FILES)
def test_crd_identity(kind: str) -> None:
    crd = load_crd(kind)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    spec = crd["spec"]
    assert spec["group"] == "wattcap.io"
    assert crd["metadata"]["name"] == f"{spec['names']['plural']}.wattcap.io"
    assert spec["names"]["kind"] == kind
    assert spec["scope"] == {"TrainingJob": "Namespaced", "PowerPolicy": "Cluster"}[kind]
    assert spec["names"]["shortNames"] == [{"TrainingJob": "tj", "PowerPolicy": "pp"}[kind]]
    assert "wattcap" in spec["names"]["categories"]
    v = version(kind)
    assert (v["name"], v["served"], v["storage"]) == ("v1alpha1", True, True)
    assert v["subresources"] == {"status": {}}


@pytest.mark.parametrize("kind", CRD_FILES)
def test_schema_is_structural(kind: str) -> None:
    """Every node has a type, unless it is int-or-string or keeps unknown fields."""

    def walk(node: Mapping[str, Any], path: str) -> Iterator[str]:
        if not (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ):
            yield path
        for name, sub in node.get("properties", {}).items():
            yield from walk(sub, f"{path}.{name}")
        if "items" in node:
            yield from walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), Mapping):
            yield from walk(node["additionalProperties"], f"{path}{{}}")

    assert list(walk(schema(kind), "")) == []


@pytest.mark.parametrize("kind", CRD_FILES)
def test_printer_columns_point_at_schema_fields(kind: str) -> None:
    columns = version(kind)["additionalPrinterColumns"]
    names = [c["name"] for c in columns]
    assert names[-1] == "Age"
    for col in columns:
        path = col["jsonPath"]
        if path == ".metadata.creationTimestamp":
            assert col["type"] == "date"
            continue
        node = resolve(schema(kind), path)
        assert node is not None, f"column {col['name']}: {path} is not in the schema"
        expected = {"string": "string", "integer": "integer", "number": "number"}[node["type"]]
        assert col["type"] == expected, f"column {col['name']}: {path} is a {node['type']}"


def test_printer_columns_are_the_documented_ones() -> None:
    def shown(kind: str) -> dict[str, str]:
        cols = version(kind)["additionalPrinterColumns"]
        return {c["name"]: c["jsonPath"] for c in cols if c.get("priority", 0) == 0}

    assert shown("TrainingJob") == {
        "Phase": ".status.phase",
        "GPUs": ".status.totalGPUs",
        "Forecast-kW": ".status.forecast.kilowatts",
        "Reason": ".status.reason",
        "Est-Start": ".status.estimatedStart",
        "Age": ".metadata.creationTimestamp",
    }
    assert shown("PowerPolicy") == {
        "Cap-kW": ".status.capKilowatts",
        "Measured-kW": ".status.measuredKilowatts",
        "Projected-kW": ".status.projectedKilowatts",
        "Headroom-kW": ".status.headroomKilowatts",
        "Queued": ".status.queuedJobs",
        "Running": ".status.runningJobs",
        "Age": ".metadata.creationTimestamp",
    }


def test_status_phase_enum() -> None:
    phase = schema("TrainingJob")["properties"]["status"]["properties"]["phase"]
    assert phase["enum"] == ["Queued", "Admitted", "Running", "Succeeded", "Failed", "Preempted"]


@pytest.mark.parametrize("kind", CRD_FILES)
def test_cel_rules_have_messages(kind: str) -> None:
    def rules(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
        yield from node.get("x-kubernetes-validations", [])
        for sub in node.get("properties", {}).values():
            yield from rules(sub)
        if "items" in node:
            yield from rules(node["items"])

    found = list(rules(schema(kind)))
    assert found
    for rule in found:
        assert rule.get("message") or rule.get("messageExpression"), rule["rule"]


@pytest.mark.parametrize("name", sorted(CRD_FILES.values()))
def test_chart_crds_are_byte_identical(name: str) -> None:
    chart_copy = ROOT / "charts" / "wattcap" / "crds" / name
    assert chart_copy.read_bytes() == (ROOT / "crds" / name).read_bytes(), (
        f"charts/wattcap/crds/{name} differs from crds/{name}; copy it over"
    )


# --------------------------------------------------------------------- parser parity


class Recording(dict):
    """A dict that notes which keys the parser looks at, as dotted paths."""

    def __init__(self, data: Mapping[str, Any], path: str, seen: set[str]) -> None:
        super().__init__({k: wrap(v, f"{path}.{k}", seen) for k, v in data.items()})
        self._path, self._seen = path, seen

    def _note(self, key: object) -> None:
        self._seen.add(f"{self._path}.{key}")

    def get(self, key: Any, default: Any = None) -> Any:
        self._note(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self._note(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._note(key)
        return super().__contains__(key)


def wrap(value: Any, path: str, seen: set[str]) -> Any:
    if isinstance(value, Mapping):
        return Recording(value, path, seen)
    if isinstance(value, list):
        return [wrap(v, f"{path}[]", seen) for v in value]
    return value


FULL_POLICY = {
    "apiVersion": "wattcap.io/v1alpha1",
    "kind": "PowerPolicy",
    "metadata": {"name": "site"},
    "spec": {
        "capWatts": 2_100_000,
        "overdrawTolerance": 0.3,
        "overrunAction": "Replan",
        "overrunGrace": "5m",
        "capSchedule": [
            {
                "name": "peak",
                "start": "2026-07-01T14:00:00Z",
                "end": "2026-07-01T18:00:00Z",
                "capWatts": 1_500_000,
            }
        ],
        "pue": 1.3,
        "nodeBaseWatts": 900,
        "gpuIdleWatts": 60,
        "gpuTdpWatts": 700,
        "safetyMargin": 0.05,
        "coverageTarget": 0.99,
        "admissionModel": "perJobQuantile",
        "classCorrelation": 0.5,
        "ordering": "FIFO",
        "backfill": False,
        "reservationDepth": 3,
        "preemption": False,
        "powerLimits": {
            "enabled": True,
            "minFraction": 0.6,
            "maxSlowdown": 1.5,
            "preemptionLoss": "20m",
        },
        "controlPeriod": "10s",
        "gracePeriod": 30,
        "defaultJobDuration": "2h",
        "maxWait": "12h",
        "prometheus": {"url": "http://prometheus:9090", "sitePowerQuery": "sum(site_power)"},
        "unmanaged": {"reserveWatts": 20_000, "planGpusAt": "Reserve"},
        "nodeSelector": {"wattcap.io/site": "local"},
        "site": {"nodes": 16, "gpusPerNode": 8},
        "defaultSite": True,
    },
}

FULL_JOB = {
    "apiVersion": "wattcap.io/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "j", "namespace": "ml"},
    "spec": {
        "replicas": 2,
        "gpusPerReplica": 8,
        "priority": 5,
        "priorityClassName": "research-high",
        "workloadClass": "llm",
        "preemptible": True,
        "gpuWattsHint": 550.0,
        "expectedDuration": "1h30m",
        "maxDelay": 7200,
        "site": "west",
        "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}},
    },
}


@pytest.mark.parametrize(
    ("kind", "manifest", "parse"),
    [
        ("PowerPolicy", FULL_POLICY, parse_power_policy),
        ("TrainingJob", FULL_JOB, parse_training_job),
    ],
)
def test_schema_declares_exactly_what_the_parser_reads(kind, manifest, parse) -> None:
    seen: set[str] = set()
    parse(wrap(manifest, "", seen))
    read = {p.lstrip(".") for p in seen if p.startswith(".spec.")}
    declared = set(schema_paths(schema(kind)["properties"]["spec"], "spec"))
    assert read - declared == set(), "the parser reads fields the CRD would prune"
    assert declared - read == set(), "the CRD declares fields the parser never reads"


def schema_defaults(kind: str) -> dict[str, Any]:
    props = schema(kind)["properties"]["spec"]["properties"]
    return {k: v["default"] for k, v in props.items() if "default" in v}


POLICY_DEFAULTS = {  # CRD field -> PowerPolicy dataclass field
    "pue": "pue",
    "nodeBaseWatts": "node_base_watts",
    "gpuIdleWatts": "gpu_idle_watts",
    "gpuTdpWatts": "gpu_tdp_watts",
    "safetyMargin": "safety_margin",
    "coverageTarget": "coverage",
    "admissionModel": "admission_model",
    "classCorrelation": "class_correlation",
    "ordering": "ordering",
    "backfill": "backfill",
    "reservationDepth": "reservation_depth",
    "preemption": "preemption",
    "controlPeriod": "control_period_s",
    "gracePeriod": "grace_period_s",
    "defaultJobDuration": "default_duration_s",
    "maxWait": "max_wait_s",
    "hintFloorFraction": "hint_floor_fraction",
    "minMaxDelay": "min_max_delay_s",
    "overdrawTolerance": "overdraw_tolerance",
    "overrunAction": "overrun_action",
    "overrunGrace": "overrun_grace_s",
}
DURATIONS = {
    "controlPeriod",
    "gracePeriod",
    "defaultJobDuration",
    "maxWait",
    "minMaxDelay",
    "overrunGrace",
}


def test_policy_defaults_equal_dataclass_defaults() -> None:
    defaults = schema_defaults("PowerPolicy")
    assert set(defaults) == set(POLICY_DEFAULTS)
    for key, attr in POLICY_DEFAULTS.items():
        value = parse_duration(defaults[key], key) if key in DURATIONS else defaults[key]
        assert value == dataclass_default(PowerPolicy, attr), key


def test_defaulted_policy_parses_to_dataclass_defaults() -> None:
    defaulted = parse_power_policy({"capWatts": 1e6, **schema_defaults("PowerPolicy")})
    assert defaulted == PowerPolicy(cap_watts=1e6)


def test_parser_applies_the_same_defaults_as_the_crd() -> None:
    """What the simulator and CLI read (no API server defaulting) matches the cluster."""
    assert parse_power_policy({"capWatts": 1e6}) == parse_power_policy(
        {"capWatts": 1e6, **schema_defaults("PowerPolicy")}
    )


def test_trainingjob_defaults_equal_dataclass_defaults() -> None:
    defaults = schema_defaults("TrainingJob")
    assert defaults == {
        "replicas": 1,
        "workloadClass": dataclass_default(TrainingJobSpec, "workload_class"),
        "preemptible": dataclass_default(TrainingJobSpec, "preemptible"),
    }
    # no default priority: a job without one is at its class's value
    assert dataclass_default(TrainingJobSpec, "priority") is None
    minimal = {"kind": "TrainingJob", "metadata": {"name": "j"}, "spec": {"gpusPerReplica": 1}}
    with_defaults = {**minimal, "spec": {"gpusPerReplica": 1, **defaults}}
    assert parse_training_job(minimal) == parse_training_job(with_defaults)


def test_duration_pattern_matches_the_parser() -> None:
    """The regex in the CEL duration rules accepts what parse_duration accepts."""
    rule = schema("TrainingJob")["properties"]["spec"]["properties"]["expectedDuration"]
    (cel,) = [r["rule"] for r in rule["x-kubernetes-validations"]]
    (pattern,) = re.findall(r"matches\('(.*?)'\)", cel)
    regex = re.compile(pattern.replace("\\\\", "\\"))
    for text in ["1h30m", "90s", "1.5h", "2h0m10s", "45m", "0s", "", "90", "1d", "5ms", "1m1h"]:
        try:
            parse_duration(text, "x")
            ok = True
        except ManifestError:
            ok = False
        assert ok == (text != "" and regex.fullmatch(text) is not None), text


# --------------------------------------------------------------------- examples


def expectations(path: Path) -> list[str]:
    return [m.strip() for m in re.findall(r"^# expect: (.*)$", path.read_text(), re.M)]


def test_every_listed_refusal_has_an_example() -> None:
    names = {p.stem for p in INVALID}
    assert {
        "trainingjob-negative-gpus",
        "trainingjob-zero-replicas",
        "powerpolicy-cap-below-idle",
        "powerpolicy-window-end-before-start",
        "powerpolicy-tdp-below-idle",
        "powerpolicy-bad-ordering",
        "powerpolicy-limit-floor-below-idle",
    } <= names


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_examples_are_refused_by_the_parser_too(path: Path) -> None:
    """Each invalid example names a field; the parser refuses the same field."""
    expect = expectations(path)
    assert len(expect) >= 2, f"{path.name}: needs '# expect:' lines (field, then message)"
    field = expect[0]
    obj = yaml.safe_load(path.read_text())
    parse = parse_power_policy if obj["kind"] == "PowerPolicy" else parse_training_job
    with pytest.raises(ManifestError) as err:
        parse(obj)
    assert err.value.field.startswith(field), (err.value.field, field)


VALID = sorted(p for p in (ROOT / "examples").rglob("*.yaml") if "invalid" not in p.parts)


@pytest.mark.parametrize("path", VALID, ids=lambda p: str(p.relative_to(ROOT / "examples")))
def test_valid_examples_parse(path: Path) -> None:
    for obj in yaml.safe_load_all(path.read_text()):
        if obj and obj.get("kind") == "TrainingJob":
            job = parse_training_job(obj)
            assert job.gpus >= 1
            assert job.template["spec"]["containers"]
        elif obj and obj.get("kind") == "PowerPolicy":
            parse_power_policy(obj)


# --------------------------------------------------------------------- operator writes


def schema_errors(value: Any, node: Mapping[str, Any], path: str) -> Iterator[str]:
    """Why the API server would refuse (type, enum) or prune (unknown field) a status value.

    None is allowed anywhere: in a merge patch it deletes the field.
    """
    if value is None:
        return
    kind = node.get("type")
    types = {
        "object": Mapping,
        "array": list,
        "string": str,
        "integer": int,
        "number": int | float,
        "boolean": bool,
    }
    if kind and (
        not isinstance(value, types[kind])
        or (kind in ("integer", "number") and isinstance(value, bool))
    ):
        yield f"{path}: {value!r} is not a {kind}"
        return
    if "enum" in node and value not in node["enum"]:
        yield f"{path}: {value!r} is not one of {node['enum']}"
    if kind == "object":
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key, sub in value.items():
            if key in props:
                yield from schema_errors(sub, props[key], f"{path}.{key}")
            elif isinstance(extra, Mapping):
                yield from schema_errors(sub, extra, f"{path}.{key}")
            else:
                yield f"{path}.{key}: not in the CRD, the API server would prune it"
        for key in node.get("required", []):
            if key not in value:
                yield f"{path}.{key}: required"
    if kind == "array":
        for i, item in enumerate(value):
            yield from schema_errors(item, node["items"], f"{path}[{i}]")


def test_every_status_the_operator_writes_fits_the_crd() -> None:
    """Run the operator's cycle through admit, run, wait, preempt, finish and a bad spec."""
    from test_controller import NOW, job, node, site, tj

    from wattcap import controller
    from wattcap.forecast import Forecaster
    from wattcap.model import CapWindow
    from wattcap.telemetry import Reading

    now = NOW

    def run(policy: PowerPolicy, tjs: list, jobs: dict) -> controller.Plan:
        nodes = [node(f"n{i}") for i in range(4)]
        state = site(policy, nodes, [], tjs, jobs, reading=Reading(ok=True, site_watts=5_000.0))
        return controller.cycle(state, controller.ControllerMemory(Forecaster(700, 70)), now)

    base = PowerPolicy(cap_watts=30_000, pue=1.0, node_base_watts=0)
    lowered = dataclasses.replace(
        base, cap_schedule=(CapWindow(now - 60, now + 3600, 6_000, "dr-event"),)
    )
    done = [{"type": "Complete", "status": "True", "lastTransitionTime": "2026-07-01T01:00:00Z"}]
    plans = [
        run(
            base,
            [tj("admit", replicas=2, pre=True, gpuWattsHint=500), tj("bad", replicas=0, pre=True)],
            {},
        ),
        run(
            base,
            [
                tj("running", pre=True, status={"phase": "Admitted"}),
                tj("fin", pre=True),
                tj("wait", replicas=4, pre=True),
            ],
            {
                ("ml", "running"): job("running", ["n0"]),
                ("ml", "fin"): job("fin", ["n1"], active=0, conditions=done),
            },
        ),
        run(
            lowered,
            [tj("shed", pre=True, status={"phase": "Running"})],
            {("ml", "shed"): job("shed", ["n0"])},
        ),
    ]
    tj_status = schema("TrainingJob")["properties"]["status"]
    pp_status = schema("PowerPolicy")["properties"]["status"]
    written: dict[str, set[str]] = {"tj": set(), "pp": set()}
    problems: list[str] = []
    for plan in plans:
        for ref, status in plan.tj_status.items():
            problems += schema_errors(status, tj_status, f"{ref[1]}.status")
            written["tj"].update(k for k, v in status.items() if v is not None)
        problems += schema_errors(plan.policy_status, pp_status, "policy.status")
        written["pp"].update(k for k, v in plan.policy_status.items() if v is not None)
    assert problems == []
    phases = {st.get("phase") for plan in plans for st in plan.tj_status.values()}
    assert {"Admitted", "Running", "Succeeded", "Queued", "Preempted", "Failed"} <= phases
    # What `kubectl get` shows is what the operator fills in.
    for kind, key in (("TrainingJob", "tj"), ("PowerPolicy", "pp")):
        for col in version(kind)["additionalPrinterColumns"]:
            top = col["jsonPath"].split(".")
            if top[1] == "status":
                assert top[2] in written[key], f"{kind} column {col['name']} is never written"


# --------------------------------------------------------------------- chart


def test_dashboard_queries_only_metrics_the_operator_exports() -> None:
    from wattcap import metrics

    exported: set[str] = set()
    for collector in vars(metrics).values():
        if collector.__class__.__module__.startswith("prometheus_client.metrics"):
            for family in collector.describe():
                for suffix in ("", "_bucket", "_sum", "_count", "_total"):
                    exported.add(family.name + suffix)
    dashboard = json.loads((ROOT / "charts/wattcap/files/dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bwattcap_[a-z_]+", target["expr"])
    }
    assert queried - exported == set(), "the dashboard queries series nobody exports"
    assert {
        "wattcap_site_power_watts",
        "wattcap_cap_watts",
        "wattcap_headroom_watts",
        "wattcap_queue_jobs",
        "wattcap_admission_latency_seconds_bucket",
        "wattcap_forecast_error_ratio",
        "wattcap_preemptions_total",
        "wattcap_prometheus_up",
    } <= queried
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


# (stamp, what the API server does with it as a window's start or end: True takes it)
STAMPS = [
    ("2026-07-01T14:00:00Z", True),
    ("2026-07-01T14:00:00.123456789+14:00", True),
    ("2026-07-01T14:00:00-00:00", True),
    ("2026-07-01T14:00:00+23:59", True),
    ("0001-01-01T00:00:00Z", True),
    ("9999-12-31T23:59:59.999Z", True),
    # RFC 3339 allows a lower-case t and z, but the API server's CEL (Go's
    # time.Parse) does not: it refused such a window with an evaluation error
    ("2000-02-29T00:00:00z", False),
    ("2000-02-29t00:00:00Z", False),
    ("2000-02-29T00:00:00.5z", False),
    ("2026-07-01T14:00:00+24:00", False),  # Go takes it, Python does not
    ("2026-07-01T14:00:00+00:60", False),  # Python takes it
    ("0000-01-01T00:00:00Z", False),  # Go takes it, Python does not
    ("2026-07-01T14:00:00", False),  # no zone
    ("2026-07-01 14:00:00Z", False),
    ("2026-07-01T14:00Z", False),
    ("20260701T140000Z", False),
    ("2026-07-01T14:00:00,5Z", False),
]


@pytest.mark.parametrize(("stamp", "ok"), STAMPS, ids=[s for s, _ in STAMPS])
def test_window_times_the_schema_pattern_takes_are_exactly_those_the_parser_takes(
    stamp: str, ok: bool
) -> None:
    """A window time the schema took but the parser refused made its site
    InvalidPolicy (it decided nothing); one the pattern took but the API
    server's CEL could not read was refused with an evaluation error naming no
    field. So the pattern admits only the RFC 3339 form every reader takes:
    upper-case T and Z, year 0001 on, offsets under 24 h."""
    props = version("PowerPolicy")["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "capSchedule"
    ]["items"]["properties"]
    for edge in ("start", "end"):
        assert props[edge]["pattern"] == WINDOW_TIME_PATTERN
        assert (re.search(props[edge]["pattern"], stamp) is not None) == ok, edge
    other = "2026-07-01T14:00:00Z" if stamp < "2026" else "1970-01-01T00:00:00Z"
    window = {"start": other, "end": stamp} if stamp >= "2026" else {"start": stamp, "end": other}
    if ok:
        parse_power_policy({"capWatts": 1.0, "capSchedule": [{**window, "capWatts": 1.0}]})
    else:
        edge = "end" if stamp >= "2026" else "start"
        with pytest.raises(ManifestError) as err:
            parse_power_policy({"capWatts": 1.0, "capSchedule": [{**window, "capWatts": 1.0}]})
        assert err.value.field == f"spec.capSchedule[0].{edge}", err.value
