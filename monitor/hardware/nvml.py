"""The one module that touches pynvml (nvidia-ml-py), behind a small interface of our own.

Everything above this module sees ``GpuBackend``: the real ``PynvmlBackend``, ``NullBackend`` where NVML is absent or
failing (no GPU, no driver, no permission), or a test fake. No call here belongs on a training step's path: the monitor
reads devices once at start and telemetry at scrape or log time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class DeviceInfo:
    """Static facts about one device (or one MIG slice), read once."""

    index: int
    name: str  # as the driver reports it, e.g. "NVIDIA H100 80GB HBM3"
    pci_device_id: int | None = None  # the 16-bit device id (upper half of NVML's pciDeviceId), e.g. 0x2330
    compute_capability: tuple[int, int] | None = None
    sm_count: int | None = None  # SMs visible to this device or slice
    max_sm_clock_mhz: float | None = None
    uuid: str | None = None
    memory_total_bytes: int | None = None
    mig: bool = False  # True for a MIG slice
    parent_sm_count: int | None = None  # a MIG slice's whole-GPU SM count (its peak is its share of these)


@dataclass(frozen=True)
class Telemetry:
    """What NVML says about a device now. Any field NVML could not give is None."""

    utilization_ratio: float | None = None  # 0..1, GPU busy time share
    memory_used_bytes: int | None = None
    power_watts: float | None = None
    energy_joules: float | None = None  # total since driver load (monotonic counter)
    sm_clock_hz: float | None = None
    max_sm_clock_hz: float | None = None
    temperature_celsius: float | None = None
    throttle_reasons: int | None = None  # NVML clocks-event bitmask


@runtime_checkable
class GpuBackend(Protocol):
    """The interface the rest of the package uses; implemented by PynvmlBackend, NullBackend and test fakes."""

    available: bool
    reason: str  # why unavailable ("" when available)

    def device_count(self) -> int: ...

    def device_info(self, index: int) -> DeviceInfo: ...

    def telemetry(self, index: int) -> Telemetry: ...


class NullBackend:
    """No NVML: zero devices. The monitor still runs and says once what it cannot do."""

    available = False

    def __init__(self, reason: str = "NVML not available") -> None:
        self.reason = reason

    def device_count(self) -> int:
        return 0

    def device_info(self, index: int) -> DeviceInfo:
        raise IndexError(f"no GPU {index}: {self.reason}")

    def telemetry(self, index: int) -> Telemetry:
        return Telemetry()
