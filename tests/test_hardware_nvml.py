"""The real NVML adapter: open_backend() on this machine (nvidia-ml-py installed, no driver), and
PynvmlBackend over a stand-in for the pynvml module whose calls can fail, as NVML's do (no permission, not
supported, a GPU lost).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from monitor.hardware.detect import detect_accelerator
from monitor.hardware.nvml import GpuBackend, NullBackend, PynvmlBackend, Telemetry, open_backend


class FakeNvmlLib:
    """The pynvml names PynvmlBackend uses, over a table of GPUs; ``fail`` names functions that raise
    NVMLError. The error class is pynvml's own, so the adapter's except clauses are the real ones."""

    NVMLError = pynvml.NVMLError
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_DEVICE_MIG_ENABLE = pynvml.NVML_DEVICE_MIG_ENABLE

    def __init__(self, gpus: list[dict[str, Any]], fail: set[str] | None = None) -> None:
        self.gpus = gpus
        self.fail = set(fail or ())

    def _check(self, name: str) -> None:
        if name in self.fail:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(name)

    # enumeration
    def nvmlDeviceGetCount(self) -> int:
        self._check("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> Any:
        self._check("nvmlDeviceGetHandleByIndex")
        return ("gpu", i)

    def nvmlDeviceGetMigMode(self, h: Any) -> list[int]:
        self._check("nvmlDeviceGetMigMode")
        return [1, 1] if self._gpu(h).get("mig") else [0, 0]

    def nvmlDeviceGetMaxMigDeviceCount(self, h: Any) -> int:
        return len(self._gpu(h).get("mig", []))

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: Any, j: int) -> Any:
        return ("mig", h[1], j)

    def _gpu(self, h: Any) -> dict[str, Any]:
        return self.gpus[h[1]]

    # static facts
    def nvmlDeviceGetName(self, h: Any) -> str:
        self._check("nvmlDeviceGetName")
        return str(self._gpu(h)["name"])

    def nvmlDeviceGetPciInfo(self, h: Any) -> Any:
        self._check("nvmlDeviceGetPciInfo")
        return SimpleNamespace(pciDeviceId=(self._gpu(h)["device_id"] << 16) | 0x10DE)

    def nvmlDeviceGetCudaComputeCapability(self, h: Any) -> tuple[int, int]:
        self._check("nvmlDeviceGetCudaComputeCapability")
        return self._gpu(h)["cc"]

    def nvmlDeviceGetMaxClockInfo(self, h: Any, clock: int) -> int:
        self._check("nvmlDeviceGetMaxClockInfo")
        return int(self._gpu(h)["max_mhz"])

    def nvmlDeviceGetAttributes(self, h: Any) -> Any:
        self._check("nvmlDeviceGetAttributes")
        if h[0] != "mig":  # as on many drivers: attributes of MIG handles only
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(multiprocessorCount=self._gpu(h)["mig"][h[2]])

    def nvmlDeviceGetNumGpuCores(self, h: Any) -> int:
        self._check("nvmlDeviceGetNumGpuCores")
        return int(self._gpu(h)["cores"])

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        return f"GPU-{h[1]}"

    def nvmlDeviceGetMemoryInfo(self, h: Any) -> Any:
        self._check("nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(total=80 * 2**30, used=2**30)

    # telemetry
    def nvmlDeviceGetUtilizationRates(self, h: Any) -> Any:
        self._check("nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=87, memory=40)

    def nvmlDeviceGetPowerUsage(self, h: Any) -> int:
        self._check("nvmlDeviceGetPowerUsage")
        return 612_500  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, h: Any) -> int:
        self._check("nvmlDeviceGetTotalEnergyConsumption")
        return 3_600_000  # mJ

    def nvmlDeviceGetClockInfo(self, h: Any, clock: int) -> int:
        self._check("nvmlDeviceGetClockInfo")
        return 1755

    def nvmlDeviceGetTemperature(self, h: Any, sensor: int) -> int:
        self._check("nvmlDeviceGetTemperature")
        return 64

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: Any) -> int:
        self._check("nvmlDeviceGetCurrentClocksEventReasons")
        return 0x4


H100 = {"name": "NVIDIA H100 80GB HBM3", "device_id": 0x2330, "cc": (9, 0), "max_mhz": 1980, "cores": 16896}


def test_open_backend_without_a_driver_is_a_null_backend() -> None:
    backend = open_backend()  # nvidia-ml-py is installed here; the NVIDIA driver is not
    if backend.available:
        pytest.skip("this machine has a working NVML")
    assert isinstance(backend, NullBackend) and isinstance(backend, GpuBackend)
    assert backend.device_count() == 0 and "NVML" in backend.reason
    assert backend.telemetry(0) == Telemetry()
    info = detect_accelerator("bf16", backend=backend)
    assert info.device == "cpu" and info.warning is not None and backend.reason in info.warning


def test_pynvml_backend_reads_a_gpu() -> None:
    backend = PynvmlBackend(FakeNvmlLib([H100]))
    assert isinstance(backend, GpuBackend) and backend.device_count() == 1
    info = backend.device_info(0)
    assert info.name == "NVIDIA H100 80GB HBM3" and info.pci_device_id == 0x2330
    assert info.compute_capability == (9, 0) and info.max_sm_clock_mhz == 1980
    assert info.sm_count == 16896 // 128 == 132  # from the core count: Hopper has 128 FP32 cores per SM
    assert detect_accelerator("bf16", backend=backend).peak_flops_per_second == pytest.approx(989.4e12)


def test_pynvml_backend_telemetry_units() -> None:
    t = PynvmlBackend(FakeNvmlLib([H100])).telemetry(0)
    assert t.utilization_ratio == pytest.approx(0.87)
    assert t.power_watts == pytest.approx(612.5) and t.energy_joules == pytest.approx(3600.0)
    assert t.sm_clock_hz == pytest.approx(1755e6) and t.max_sm_clock_hz == pytest.approx(1980e6)
    assert t.temperature_celsius == 64 and t.memory_used_bytes == 2**30 and t.throttle_reasons == 0x4


def test_telemetry_never_raises_and_gives_none_for_what_failed() -> None:
    lib = FakeNvmlLib([H100], fail={"nvmlDeviceGetPowerUsage", "nvmlDeviceGetTemperature"})
    t = PynvmlBackend(lib).telemetry(0)
    assert t.power_watts is None and t.temperature_celsius is None
    assert t.utilization_ratio == pytest.approx(0.87)  # the rest still read
    backend = PynvmlBackend(lib)
    lib.fail = {name for name in dir(FakeNvmlLib) if name.startswith("nvmlDevice")}
    assert backend.telemetry(0) == Telemetry()  # every query failing: every field None, no exception
    assert backend.telemetry(5) == Telemetry()  # no such GPU


def test_device_info_is_partial_when_calls_fail() -> None:
    lib = FakeNvmlLib([H100], fail={"nvmlDeviceGetPciInfo", "nvmlDeviceGetMaxClockInfo"})
    info = PynvmlBackend(lib).device_info(0)
    assert info.pci_device_id is None and info.max_sm_clock_mhz is None
    assert info.name == "NVIDIA H100 80GB HBM3"  # still detected, by its exact name
    assert detect_accelerator("bf16", backend=PynvmlBackend(lib)).accelerator == "h100-sxm"


def test_gpu_lost_between_listing_and_reading() -> None:
    lib = FakeNvmlLib([H100])
    backend = PynvmlBackend(lib)
    lib.fail = {"nvmlDeviceGetName", "nvmlDeviceGetPciInfo", "nvmlDeviceGetCudaComputeCapability"}
    info = detect_accelerator("bf16", backend=backend)
    assert info.peak_flops_per_second is None and info.source == "unknown" and info.warning


def test_mig_slices_are_listed_with_their_sm_share() -> None:
    a100 = {"name": "NVIDIA A100-SXM4-80GB", "device_id": 0x20B2, "cc": (8, 0), "max_mhz": 1410}
    a100 |= {"cores": 6912, "mig": [14, 42]}
    backend = PynvmlBackend(FakeNvmlLib([a100]))
    assert backend.device_count() == 2
    info = backend.device_info(0)
    assert info.mig and info.sm_count == 14 and info.parent_sm_count == 6912 // 64 == 108
    peak = detect_accelerator("bf16", index=1, backend=backend).peak_flops_per_second
    assert peak == pytest.approx(312e12 * 42 / 108)


def test_listing_failure_gives_no_devices() -> None:
    backend = PynvmlBackend(FakeNvmlLib([H100], fail={"nvmlDeviceGetCount"}))
    assert backend.device_count() == 0
    with pytest.raises(IndexError):
        backend.device_info(0)


def test_gpu_check_without_a_gpu_says_so_and_exits_0() -> None:
    import subprocess
    import sys
    from pathlib import Path

    if open_backend().available:
        pytest.skip("this machine has a working NVML")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "no NVIDIA GPU here" in done.stdout
