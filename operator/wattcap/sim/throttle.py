"""GPU power limits on kwok: the simulated exporter plays the node agent and the physics.

Pure, no I/O; `exporter.py` applies what these return. kwok pods have no GPUs, so on
the local control plane the simulated DCGM exporter stands in for wattcap's node agent:

- it applies the limit the operator asks of a pod (`wattcap.io/gpu-power-limit-watts`),
  within the GPU's [minimum, TDP] as NVML would, and records the limit in force on the
  pod (`wattcap.io/sim-power-limit`, the simulated hardware state, which the referee of
  the integration tests reads too);
- a GPU under a limit draws min(natural, limit), and the exporter reports the limit in
  force per GPU as DCGM_FI_DEV_ENFORCED_POWER_LIMIT;
- a throttled pod runs slower by `powerlimit.slowdown`: kwok finishes a pod at the time
  in `wattcap.io/sim-duration` (hack/kwok/pod-complete.yaml), so whenever the limit in
  force changes the exporter moves that time by what is left of the pod's work at the
  new speed (written as an absolute RFC 3339 time: kwok restarts a Go duration at every
  update of the pod).

A node annotated `wattcap.io/sim-agent-down: "true"` (or the exporter's `--no-agent`) is
the fake for a node agent that died, since a real one cannot be killed here: no limit is
applied there or reported, and the limits in force are lost (worst case: the GPUs are
back at their default limit, drawing their natural power).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..jobs import ANN_GPU_LIMIT
from ..powerlimit import slowdown

ENFORCED_ANNOTATION = "wattcap.io/sim-power-limit"
DURATION_ANNOTATION = "wattcap.io/sim-duration"
AGENT_DOWN_ANNOTATION = "wattcap.io/sim-agent-down"
DEFAULT_MIN_LIMIT_WATTS = 200.0  # an H100's NVML minimum power limit

_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_go_duration(value: str) -> float | None:
    """Seconds in a Go duration ("90s", "1m30s", "1.5h"); None if it is not one."""
    text = value.strip()
    if not text:
        return None
    pos, total = 0, 0.0
    for m in _GO_PART.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _GO_UNITS[m.group(2)]
        pos = m.end()
    return total if pos == len(text) else None


def parse_rfc3339(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def format_rfc3339(t: float) -> str:
    """An absolute time kwok parses (Go's RFC3339Nano accepts the fraction)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def finish_time(value: str | None, started_s: float | None) -> tuple[float | None, bool]:
    """(when kwok finishes the pod, whether `value` is already an absolute time)."""
    if not value:
        return None, False
    at = parse_rfc3339(value)
    if at is not None:
        return at, True
    d = parse_go_duration(value)
    if d is None or started_s is None:
        return None, False
    return started_s + d, False


def _watts(raw: Any) -> float | None:
    try:
        value = float(str(raw)) if raw is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value > 0 else None


def enforced_watts(annotations: Mapping[str, Any]) -> float | None:
    """The limit in force on a pod's GPUs (the simulated hardware), None: the default."""
    return _watts(annotations.get(ENFORCED_ANNOTATION))


def agent_down(node: Mapping[str, Any]) -> bool:
    """The fake for a dead node agent on this node."""
    ann = (node.get("metadata") or {}).get("annotations") or {}
    return str(ann.get(AGENT_DOWN_ANNOTATION, "")).lower() == "true"


def wanted_watts(
    annotations: Mapping[str, Any], agent_up: bool, min_w: float, tdp_w: float
) -> float | None:
    """The limit the agent would hold the pod's GPUs at: what the operator asks,
    within [min_w, tdp_w] as NVML clamps it; None with no ask or no agent."""
    asked = _watts(annotations.get(ANN_GPU_LIMIT))
    if asked is None or not agent_up:
        return None
    limit = min(max(asked, min_w), tdp_w)
    return None if limit >= tdp_w else limit


def physics_patch(
    annotations: Mapping[str, Any],
    started_s: float | None,
    natural_w: float,
    now_s: float,
    agent_up: bool,
    min_w: float = DEFAULT_MIN_LIMIT_WATTS,
    tdp_w: float = 700.0,
) -> dict[str, str | None] | None:
    """The annotations a Running GPU pod needs now (None: none).

    When the limit in force changes, it is recorded and the finish time moves: the work
    left, (end - now) / slowdown(old), takes slowdown(new) times as long. A pod the
    operator limits has its finish time pinned as an absolute time even if nothing
    changes (the operator's write restarted kwok's Go duration).
    """
    have = enforced_watts(annotations)
    want = wanted_watts(annotations, agent_up, min_w, tdp_w)
    end, absolute = finish_time(annotations.get(DURATION_ANNOTATION), started_s)
    patch: dict[str, str | None] = {}
    if want != have:
        patch[ENFORCED_ANNOTATION] = None if want is None else f"{want:g}"
        if end is not None:
            left = max(end - now_s, 0.0) / slowdown(natural_w, have)
            patch[DURATION_ANNOTATION] = format_rfc3339(now_s + left * slowdown(natural_w, want))
    elif end is not None and not absolute and (ANN_GPU_LIMIT in annotations or have is not None):
        patch[DURATION_ANNOTATION] = format_rfc3339(end)
    return patch or None
