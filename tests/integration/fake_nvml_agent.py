"""`wattcap agent` as its own process, with FakeNvml in place of pynvml.

A FAKE for NVML only (this machine has no GPU and no NVIDIA driver): everything else is
the real agent, started through `wattcap.cli.main` as the DaemonSet starts it, against
the real API server, a real gRPC pod-resources server on a unix socket, and its own
metrics server. The fake GPUs come from $WATTCAP_FAKE_NVML (JSON):

    {"gpus": [{"uuid": "GPU-a", "min_mw": 200000, ...}],   # FakeGpu fields
     "faults": [[1, "nvmlDevice...", 999]],                # (GPU index, call, NVML code)
     "sets_out": "/path"}   # every nvmlDeviceSetPowerManagementLimit, as JSON, at exit

Usage: python fake_nvml_agent.py agent --node-name N --kubeconfig K ...
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from fake_nvml import FakeGpu, FakeNvml


def main() -> int:
    spec = json.loads(os.environ["WATTCAP_FAKE_NVML"])
    nvml = FakeNvml(
        [FakeGpu(**g) for g in spec["gpus"]],
        faults={(int(i), str(call)): int(code) for i, call, code in spec.get("faults", [])},
    )
    sys.modules["pynvml"] = nvml  # type: ignore[assignment]  # what `import pynvml` finds

    def dump() -> None:
        if spec.get("sets_out"):
            Path(spec["sets_out"]).write_text(json.dumps(nvml.sets))

    from wattcap.cli import main as wattcap

    try:
        return wattcap(sys.argv[1:])
    finally:
        dump()


if __name__ == "__main__":
    sys.exit(main())
