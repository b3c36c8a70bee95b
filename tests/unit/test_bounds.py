"""Sizes are bounded and the control period has a floor, in the CRD and the parser alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from wattcap.model import (
    MAX_REPLICAS,
    MIN_CONTROL_PERIOD_S,
    ManifestError,
    parse_power_policy,
    parse_training_job,
)

ROOT = Path(__file__).resolve().parents[2]


def spec_props(name: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / name).read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]


def training_job(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "wattcap.io/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "j", "namespace": "ml"},
        "spec": {"gpusPerReplica": 8, **spec},
    }


def test_absurd_replicas_are_refused_by_the_crd_and_the_parser() -> None:
    assert spec_props("trainingjob.yaml")["replicas"]["maximum"] == MAX_REPLICAS
    assert parse_training_job(training_job(replicas=MAX_REPLICAS)).replicas == MAX_REPLICAS
    with pytest.raises(ManifestError) as err:
        parse_training_job(training_job(replicas=1_000_000_000_000))
    assert err.value.field == "spec.replicas"


@pytest.mark.parametrize("period", ["0.001s", 0, "0s", "0.5s"])
def test_a_control_period_below_the_floor_is_refused(period: object) -> None:
    with pytest.raises(ManifestError) as err:
        parse_power_policy({"capWatts": 10_000, "controlPeriod": period})
    assert err.value.field == "spec.controlPeriod"
    assert parse_power_policy({"capWatts": 10_000, "controlPeriod": "1s"}).control_period_s == 1


def test_the_crd_states_the_same_control_period_floor() -> None:
    period = spec_props("powerpolicy.yaml")["controlPeriod"]
    rules = " ".join(r["rule"] for r in period["x-kubernetes-validations"])
    assert f"duration('{MIN_CONTROL_PERIOD_S:g}s')" in rules
