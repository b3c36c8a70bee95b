"""Structural checks of a TrainingJob's pod template, before wattcap builds a Job from it.

The CRD keeps `spec.template` as free-form data (`x-kubernetes-preserve-unknown-fields`),
so the API server stores `containers: "x"` or `affinity: "x"` without a word. wattcap
then merges its own fields into that template (labels, the GPU request, node
affinity), and a wrong shape used to raise inside the site loop, for everyone.

The approach is structural, not a server-side dry-run: every part of the
template that wattcap reads or writes must have the shape the merge needs
(mappings, lists of mappings, strings), and GPUs may be asked for only where
wattcap sets them. That runs without I/O, inside the pure cycle, on every
queued job. What it does not check (an image name, a bad quantity string, an
unknown field) the API server refuses when the Job is created, and that
refusal is reported on the TrainingJob and retried with back-off
(`controller.note_write_failures`), so it holds no budget either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .model import ManifestError

GPU = "nvidia.com/gpu"
ROOT = "spec.template"
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


def validate_template(template: Mapping[str, Any], gpus_per_replica: int) -> None:
    """Raise ManifestError naming the first field wattcap cannot build a Job from.

    GPU hygiene: only `containers[0]` gets GPUs, and wattcap sets its count
    from `gpusPerReplica`; a GPU request on any other container (sidecars,
    init containers, ephemeral containers) would run GPUs wattcap never
    accounted for, so it is refused, as is a different count on `containers[0]`.
    """
    meta = _mapping(template.get("metadata"), f"{ROOT}.metadata")
    for key in ("labels", "annotations"):
        _string_map(meta.get(key), f"{ROOT}.metadata.{key}")
    pod = _mapping(template.get("spec"), f"{ROOT}.spec")
    base = f"{ROOT}.spec"
    for key in ("affinity", "nodeSelector", "securityContext"):
        _mapping(pod.get(key), f"{base}.{key}")
    for key in ("restartPolicy", "serviceAccountName", "schedulerName"):
        if pod.get(key) is not None and not isinstance(pod[key], str):
            raise ManifestError(f"{base}.{key}", f"expected a string, got {pod[key]!r:.60}")
    grace = pod.get("terminationGracePeriodSeconds")
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int) or grace < 0):
        raise ManifestError(
            f"{base}.terminationGracePeriodSeconds",
            f"expected whole seconds >= 0, got {grace!r:.30}",
        )
    for key in ("tolerations", "volumes", "imagePullSecrets"):
        _list_of_mappings(pod.get(key), f"{base}.{key}")
    affinity = _mapping(pod.get("affinity"), f"{base}.affinity")
    for key in ("nodeAffinity", "podAffinity", "podAntiAffinity"):
        _mapping(affinity.get(key), f"{base}.affinity.{key}")
    for kind in CONTAINER_LISTS:
        containers = _list_of_mappings(pod.get(kind), f"{base}.{kind}")
        for i, container in enumerate(containers):
            path = f"{base}.{kind}[{i}]"
            if not isinstance(container.get("name", ""), str):
                raise ManifestError(f"{path}.name", "expected a string")
            resources = _mapping(container.get("resources"), f"{path}.resources")
            for amounts in ("requests", "limits"):
                values = _mapping(resources.get(amounts), f"{path}.resources.{amounts}")
                if GPU in values:
                    _check_gpu(
                        values[GPU], kind, i, f"{path}.resources.{amounts}", gpus_per_replica
                    )


def _check_gpu(amount: Any, kind: str, index: int, path: str, gpus_per_replica: int) -> None:
    where = f"{path}[{GPU}]"
    if kind != "containers" or index != 0:
        raise ManifestError(
            where,
            "GPUs are requested only through spec.gpusPerReplica, which wattcap sets on "
            "containers[0]; remove this request",
        )
    if str(amount) != str(gpus_per_replica):
        raise ManifestError(
            where,
            f"wattcap sets this from spec.gpusPerReplica ({gpus_per_replica}); "
            f"remove it or make it {gpus_per_replica}, got {amount!r:.30}",
        )


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ManifestError(path, f"expected a mapping, got {type(value).__name__}")
    return value


def _string_map(value: Any, path: str) -> None:
    for key, item in _mapping(value, path).items():
        if not isinstance(item, str):
            raise ManifestError(f"{path}[{key}]", f"expected a string, got {item!r:.60}")


def _list_of_mappings(value: Any, path: str) -> list[Mapping[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestError(path, f"expected a list, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise ManifestError(f"{path}[{i}]", f"expected a mapping, got {type(item).__name__}")
    return value
