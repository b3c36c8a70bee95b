"""A TrainingJob's priority, from a PriorityClass the cluster admin defined.

A number a tenant writes could put its job ahead of everyone's, so the
number comes from a standard `scheduling.k8s.io/v1` PriorityClass, which
only cluster admins create, named by `spec.priorityClassName`. A tenant may
name only a class marked for wattcap (label `wattcap.io/tenant-usable:
"true"`): the cluster's other classes (for daemons, for inference) are not
the tenants' to claim. `spec.priority`, if given, can only lower a job
within its class. Without a class the ceiling is 0.

The operator lists the classes and resolves each job to a number before it
calls the decision core, which only ever sees numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .model import ManifestError, TrainingJobSpec

TENANT_USABLE_LABEL = "wattcap.io/tenant-usable"
NO_CLASS_PRIORITY = 0  # the ceiling of a job that names no class
FIELD = "spec.priorityClassName"


@dataclass(frozen=True, slots=True)
class PriorityClass:
    """What wattcap reads of a PriorityClass: its value, and whether tenants may name it."""

    name: str
    value: int
    tenant_usable: bool


def parse_priority_classes(items: Iterable[Mapping[str, Any]]) -> dict[str, PriorityClass]:
    """PriorityClasses by name, from the API's JSON; malformed objects are skipped
    (the API server validates them, so only a broken read could produce one)."""
    out: dict[str, PriorityClass] = {}
    for item in items:
        meta = item.get("metadata") or {}
        name, value = meta.get("name"), item.get("value")
        if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, int):
            continue
        usable = (meta.get("labels") or {}).get(TENANT_USABLE_LABEL) == "true"
        out[name] = PriorityClass(name, value, usable)
    return out


def job_priority(spec: TrainingJobSpec, classes: Mapping[str, PriorityClass]) -> int:
    """The job's priority: its class's value, or the lower `spec.priority`.

    Raises ManifestError naming `spec.priorityClassName` when the class is a
    system class, does not exist, or is not marked for wattcap.
    """
    ceiling = NO_CLASS_PRIORITY
    name = spec.priority_class_name
    if name:
        if name.startswith("system-"):
            raise ManifestError(FIELD, f"{name!r} is a system class; tenants cannot use it")
        pc = classes.get(name)
        if pc is None:
            raise ManifestError(FIELD, f"PriorityClass {name!r} does not exist")
        if not pc.tenant_usable:
            raise ManifestError(
                FIELD,
                f"PriorityClass {name!r} is not marked for wattcap "
                f'(label {TENANT_USABLE_LABEL}: "true"); ask your platform team',
            )
        ceiling = pc.value
    return ceiling if spec.priority is None else min(spec.priority, ceiling)


def fallback_priority(spec: TrainingJobSpec) -> int:
    """A running job's priority once its class has gone: as if it named none."""
    return NO_CLASS_PRIORITY if spec.priority is None else min(spec.priority, NO_CLASS_PRIORITY)


def reported_priority(status: Mapping[str, Any], requested: int | None) -> int:
    """The priority the operator resolved and reported in a TrainingJob's status;
    before it has (or for a job it never saw), what the spec asks for, at most
    the ceiling without a class: a client never trusts a tenant's raw number."""
    got = status.get("priority")
    if isinstance(got, int) and not isinstance(got, bool):
        return got
    return NO_CLASS_PRIORITY if requested is None else min(requested, NO_CLASS_PRIORITY)
