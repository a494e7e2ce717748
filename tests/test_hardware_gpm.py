"""NVML GPM tensor activity through PynvmlBackend (over a stand-in pynvml using pynvml's own ctypes structs
and error class) and through the FakeGpuBackend the other tests use: supported, unsupported, failing."""

from __future__ import annotations

from typing import Any

import pynvml
from fakes import FakeGpuBackend, fake_device
from test_hardware_nvml import H100, FakeNvmlLib

from monitor.hardware.nvml import GPM_FIRST_SAMPLE, NullBackend, PynvmlBackend


class GpmNvmlLib(FakeNvmlLib):
    """FakeNvmlLib plus the GPM calls; ``percent`` is what nvmlGpmMetricsGet reports per metric id."""

    c_nvmlGpmMetricsGet_t = pynvml.c_nvmlGpmMetricsGet_t
    NVML_GPM_METRICS_GET_VERSION = pynvml.NVML_GPM_METRICS_GET_VERSION
    NVML_GPM_METRIC_ANY_TENSOR_UTIL = pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL
    NVML_GPM_METRIC_HMMA_TENSOR_UTIL = pynvml.NVML_GPM_METRIC_HMMA_TENSOR_UTIL
    NVML_GPM_METRIC_IMMA_TENSOR_UTIL = pynvml.NVML_GPM_METRIC_IMMA_TENSOR_UTIL
    NVML_GPM_METRIC_DFMA_TENSOR_UTIL = pynvml.NVML_GPM_METRIC_DFMA_TENSOR_UTIL
    NVML_SUCCESS = pynvml.NVML_SUCCESS

    def __init__(self, gpus: list[dict[str, Any]], *, supported: bool = True, fail: set[str] | None = None):
        super().__init__(gpus, fail)
        self.supported = supported
        self.percent = {
            pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: 62.5,
            pynvml.NVML_GPM_METRIC_HMMA_TENSOR_UTIL: 61.0,
            pynvml.NVML_GPM_METRIC_IMMA_TENSOR_UTIL: 0.0,
            pynvml.NVML_GPM_METRIC_DFMA_TENSOR_UTIL: 0.0,
        }
        self.live_samples = 0
        self.requests: list[Any] = []

    def nvmlGpmQueryDeviceSupport(self, h: Any) -> Any:
        self._check("nvmlGpmQueryDeviceSupport")
        support = pynvml.c_nvmlGpmSupport_t()
        support.isSupportedDevice = int(self.supported)
        return support

    def nvmlGpmSampleAlloc(self) -> Any:
        self._check("nvmlGpmSampleAlloc")
        self.live_samples += 1
        return pynvml.c_nvmlGpmSample_t()

    def nvmlGpmSampleFree(self, sample: Any) -> None:
        self.live_samples -= 1

    def nvmlGpmSampleGet(self, h: Any, sample: Any) -> Any:
        self._check("nvmlGpmSampleGet")
        return sample

    def nvmlGpmMetricsGet(self, request: Any) -> Any:
        self._check("nvmlGpmMetricsGet")
        self.requests.append(request)
        for i in range(request.numMetrics):
            request.metrics[i].value = self.percent[request.metrics[i].metricId]
            request.metrics[i].nvmlReturn = pynvml.NVML_SUCCESS
        return request


def test_gpm_gives_ratios_from_the_second_reading_on_and_frees_its_samples() -> None:
    lib = GpmNvmlLib([H100])
    backend = PynvmlBackend(lib)
    first = backend.tensor_activity(0)
    assert first.any_ratio is None and first.reason == GPM_FIRST_SAMPLE and not first.available
    second = backend.tensor_activity(0)
    assert second.available and second.reason == ""
    assert second.any_ratio == 0.625 and second.hmma_ratio == 0.61
    assert second.imma_ratio == 0.0 and second.dfma_ratio == 0.0
    request = lib.requests[0]
    assert request.version == pynvml.NVML_GPM_METRICS_GET_VERSION and request.numMetrics == 4
    lib.percent[pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL] = 10.0
    assert backend.tensor_activity(0).any_ratio == 0.1
    assert lib.live_samples == 1  # only the latest sample is kept


def test_gpm_unsupported_gpu_says_why() -> None:
    backend = PynvmlBackend(GpmNvmlLib([H100], supported=False))
    for _ in range(2):
        got = backend.tensor_activity(0)
        assert got.any_ratio is None and "Hopper" in got.reason


def test_gpm_query_failing_means_driver_too_old_or_pre_hopper() -> None:
    backend = PynvmlBackend(GpmNvmlLib([H100], fail={"nvmlGpmQueryDeviceSupport"}))
    assert "driver too old" in backend.tensor_activity(0).reason


def test_gpm_binding_without_the_api() -> None:
    backend = PynvmlBackend(FakeNvmlLib([H100]))  # no nvmlGpm* names at all
    got = backend.tensor_activity(0)
    assert got.any_ratio is None and "no GPM API" in got.reason


def test_gpm_not_read_for_mig_slices() -> None:
    backend = PynvmlBackend(GpmNvmlLib([dict(H100, mig=[16, 16])]))
    assert backend.device_count() == 2
    assert "MIG" in backend.tensor_activity(1).reason


def test_gpm_failing_mid_run_never_raises() -> None:
    lib = GpmNvmlLib([H100])
    backend = PynvmlBackend(lib)
    backend.tensor_activity(0)
    assert backend.tensor_activity(0).available
    lib.fail.add("nvmlGpmSampleGet")
    got = backend.tensor_activity(0)
    assert got.any_ratio is None and got.reason.startswith("NVML GPM failed")
    assert lib.live_samples == 1  # the failed sample was freed
    lib.fail.clear()
    assert backend.tensor_activity(0).available  # recovers against the sample it kept


def test_gpm_out_of_range_and_null_backend() -> None:
    assert PynvmlBackend(GpmNvmlLib([H100])).tensor_activity(3).reason == "no GPU 3"
    assert NullBackend("no driver").tensor_activity(0).reason == "no driver"


def test_fake_backend_gpm_supported_unsupported_failing() -> None:
    backend = FakeGpuBackend([fake_device("NVIDIA H100 80GB HBM3", compute_capability=(9, 0))])
    assert backend.tensor_activity(0).reason == GPM_FIRST_SAMPLE
    backend.set_tensor_activity(0, 0.5, hmma=0.5)
    assert backend.tensor_activity(0).any_ratio == 0.5
    backend.fail_gpm.add(0)
    assert not backend.tensor_activity(0).available
    old = FakeGpuBackend([fake_device("NVIDIA A100-SXM4-80GB")], gpm_unsupported="GPM unsupported (fake)")
    assert old.tensor_activity(0).reason == "GPM unsupported (fake)"
