"""Test doubles for what the tests cannot have here: a GPU behind NVML.

``FakeGpuBackend`` implements ``monitor.hardware.nvml.GpuBackend``; everything else in the tests is real.
Configure it with ``fake_device(...)`` entries (names, PCI device ids, compute capability, SM counts, clocks,
MIG), telemetry values (fixed, or changed between reads with ``set_telemetry``), and calls that fail
(``fail_device_info``, ``fail_telemetry``, ``fail_count``). ``calls`` records every call, so a test can assert
that no NVML call happens on a training step's path. Import it as ``from fakes import FakeGpuBackend`` (pytest
puts tests/ on the path).

    backend = FakeGpuBackend([fake_device("NVIDIA H100 80GB HBM3", pci_device_id=0x2330)])
    backend.set_telemetry(0, Telemetry(sm_clock_hz=1.98e9, power_watts=650.0))
"""

from __future__ import annotations

from dataclasses import replace

from monitor.hardware.nvml import GPM_FIRST_SAMPLE, DeviceInfo, Telemetry, TensorActivity


class FakeNvmlError(RuntimeError):
    """What a failing fake call raises (pynvml raises NVMLError subclasses; callers must survive any)."""


def fake_device(
    name: str,
    *,
    pci_device_id: int | None = None,
    compute_capability: tuple[int, int] | None = None,
    sm_count: int | None = None,
    max_sm_clock_mhz: float | None = None,
    mig: bool = False,
    parent_sm_count: int | None = None,
    memory_total_bytes: int | None = None,
    uuid: str | None = None,
) -> DeviceInfo:
    """A DeviceInfo as NVML would describe it (``index`` is set by the backend from the list position)."""
    return DeviceInfo(
        index=0,
        name=name,
        pci_device_id=pci_device_id,
        compute_capability=compute_capability,
        sm_count=sm_count,
        max_sm_clock_mhz=max_sm_clock_mhz,
        uuid=uuid,
        memory_total_bytes=memory_total_bytes,
        mig=mig,
        parent_sm_count=parent_sm_count,
    )


class FakeGpuBackend:
    """A configurable GpuBackend. Indexes are positions in ``devices``."""

    def __init__(
        self,
        devices: list[DeviceInfo] | None = None,
        *,
        telemetry: dict[int, Telemetry] | None = None,
        fail_device_info: set[int] | None = None,
        fail_telemetry: set[int] | None = None,
        fail_count: bool = False,
        gpm_unsupported: str = "",
        available: bool = True,
        reason: str = "",
    ) -> None:
        self._devices = [replace(d, index=i) for i, d in enumerate(devices or [])]
        self._telemetry: dict[int, Telemetry] = dict(telemetry or {})
        self.fail_device_info = set(fail_device_info or ())
        self.fail_telemetry = set(fail_telemetry or ())
        self.fail_count = fail_count
        self.available = available
        self.reason = reason
        self.calls: list[tuple[str, int | None]] = []
        # GPM (tensor activity): "" = supported; else the reason the real backend gives (pre-Hopper, MIG).
        self.gpm_unsupported = gpm_unsupported
        self.fail_gpm: set[int] = set()  # devices whose GPM sampling fails from now on (mid-run failure)
        self._tensor: dict[int, TensorActivity] = {}
        self._gpm_sampled: set[int] = set()

    def set_telemetry(self, index: int, value: Telemetry) -> None:
        """What the next ``telemetry(index)`` returns (e.g. a lower SM clock to simulate throttling)."""
        self._telemetry[index] = value

    def device_count(self) -> int:
        self.calls.append(("device_count", None))
        if self.fail_count:
            raise FakeNvmlError("nvmlDeviceGetCount failed (fake)")
        return len(self._devices)

    def device_info(self, index: int) -> DeviceInfo:
        self.calls.append(("device_info", index))
        if index in self.fail_device_info:
            raise FakeNvmlError(f"nvmlDeviceGetHandleByIndex({index}) failed (fake)")
        if not 0 <= index < len(self._devices):
            raise IndexError(f"no GPU {index}")
        return self._devices[index]

    def telemetry(self, index: int) -> Telemetry:
        # The real backend never raises from telemetry; a failing read gives empty fields, as here.
        self.calls.append(("telemetry", index))
        if index in self.fail_telemetry:
            return Telemetry()
        return self._telemetry.get(index, Telemetry())

    def set_tensor_activity(self, index: int, any_ratio: float, **by_pipe: float) -> None:
        """What the next ``tensor_activity(index)`` reports (after the first, sample-only, call)."""
        self._tensor[index] = TensorActivity(
            any_ratio=any_ratio,
            hmma_ratio=by_pipe.get("hmma"),
            imma_ratio=by_pipe.get("imma"),
            dfma_ratio=by_pipe.get("dfma"),
        )

    def tensor_activity(self, index: int) -> TensorActivity:
        # As PynvmlBackend: never raises; the first call on a device only takes a sample.
        self.calls.append(("tensor_activity", index))
        if not self.available:
            return TensorActivity(reason=self.reason)
        if self.gpm_unsupported:
            return TensorActivity(reason=self.gpm_unsupported)
        if index in self.fail_gpm:
            return TensorActivity(reason=f"NVML GPM failed: nvmlGpmSampleGet({index}) failed (fake)")
        if index not in self._gpm_sampled:
            self._gpm_sampled.add(index)
            return TensorActivity(reason=GPM_FIRST_SAMPLE)
        return self._tensor.get(
            index, TensorActivity(any_ratio=0.0, hmma_ratio=0.0, imma_ratio=0.0, dfma_ratio=0.0)
        )


def no_gpu(reason: str = "NVML unavailable: no driver (fake)") -> FakeGpuBackend:
    """A machine without NVIDIA GPUs, as open_backend() reports it."""
    return FakeGpuBackend([], available=False, reason=reason)
