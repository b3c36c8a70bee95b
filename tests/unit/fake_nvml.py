"""FakeNvml: a FAKE of NVIDIA's pynvml module (nvidia-ml-py), for the node agent's tests.

This machine has no GPU and no NVIDIA driver, so the real pynvml cannot run here; a GPU
that refuses a call or falls off the bus cannot be made to on demand either. This fake
has the same call signatures as the pynvml functions the agent calls (checked against
the installed pynvml by test_agent_nvml.py) and raises pynvml's own NVMLError
subclasses, with NVML's rules: limits in milliwatts, a limit outside the
[min, max] constraints refused with NVML_ERROR_INVALID_ARGUMENT, nothing works before
nvmlInit. `faults` makes a call fail for one GPU: {(index, "nvmlDevice..."): code}.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pynvml

NVMLError = pynvml.NVMLError
NVML_ERROR_INVALID_ARGUMENT = pynvml.NVML_ERROR_INVALID_ARGUMENT
NVML_ERROR_NO_PERMISSION = pynvml.NVML_ERROR_NO_PERMISSION
NVML_ERROR_GPU_IS_LOST = pynvml.NVML_ERROR_GPU_IS_LOST
NVML_ERROR_UNINITIALIZED = pynvml.NVML_ERROR_UNINITIALIZED
NVML_ERROR_NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED


@dataclass
class FakeGpu:
    """One fake GPU; limits in milliwatts, as NVML keeps them."""

    uuid: str
    min_mw: int = 200_000
    max_mw: int = 700_000
    default_mw: int = 700_000
    limit_mw: int | None = None  # None: at the default
    mig: bool | None = None  # MIG mode on or off; None: the GPU has no MIG (NOT_SUPPORTED)

    @property
    def current_mw(self) -> int:
        return self.default_mw if self.limit_mw is None else self.limit_mw


@dataclass(frozen=True)
class _Handle:
    index: int


@dataclass
class FakeNvml:
    """A fake pynvml module over `gpus` (see the module docstring)."""

    gpus: list[FakeGpu]
    faults: dict[tuple[int, str], int] = field(default_factory=dict)
    sets: list[tuple[int, int]] = field(default_factory=list)  # (index, mW) of every set
    initialized: bool = False
    NVMLError: type = NVMLError

    def _gpu(self, handle: _Handle, call: str) -> FakeGpu:
        if not self.initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        code = self.faults.get((handle.index, call))
        if code is not None:
            raise NVMLError(code)
        return self.gpus[handle.index]

    def nvmlInit(self) -> None:
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self.initialized = False

    def nvmlDeviceGetCount(self) -> int:
        if not self.initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        handle = _Handle(index)
        self._gpu(handle, "nvmlDeviceGetHandleByIndex")
        return handle

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        return self._gpu(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetMigMode(self, device: _Handle) -> list[int]:
        gpu = self._gpu(device, "nvmlDeviceGetMigMode")
        if gpu.mig is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if gpu.mig else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]  # [current, pending]

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: _Handle) -> list[int]:
        gpu = self._gpu(handle, "nvmlDeviceGetPowerManagementLimitConstraints")
        return [gpu.min_mw, gpu.max_mw]

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: _Handle) -> int:
        return self._gpu(handle, "nvmlDeviceGetPowerManagementDefaultLimit").default_mw

    def nvmlDeviceGetPowerManagementLimit(self, handle: _Handle) -> int:
        return self._gpu(handle, "nvmlDeviceGetPowerManagementLimit").current_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: _Handle) -> int:
        return self._gpu(handle, "nvmlDeviceGetEnforcedPowerLimit").current_mw

    def nvmlDeviceSetPowerManagementLimit(self, handle: _Handle, limit: int) -> None:
        gpu = self._gpu(handle, "nvmlDeviceSetPowerManagementLimit")
        self.sets.append((handle.index, limit))
        if not gpu.min_mw <= limit <= gpu.max_mw:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        gpu.limit_mw = limit
