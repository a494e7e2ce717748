"""The one module that touches pynvml (nvidia-ml-py), behind a small interface of our own.

Everything above this module sees ``GpuBackend``: the real ``PynvmlBackend``, ``NullBackend`` where NVML is
absent or failing (no GPU, no driver, no permission), or a test fake. No call here belongs on a training
step's path: the monitor reads devices once at start and telemetry at scrape or log time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


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


@dataclass(frozen=True)
class TensorActivity:
    """Tensor-core activity between two NVML GPM samples (Hopper and later): the time share (0..1) of the
    GPU's SMs busy with tensor work of any kind, and by pipe (HMMA: fp16/bf16/tf32/fp8 matrix ops; IMMA:
    integer; DFMA: fp64). NVML reports percent; these are ratios. When unavailable, every ratio is None and
    ``reason`` says why (pre-Hopper, MIG slice, driver too old, a failing call, or no previous sample yet)."""

    any_ratio: float | None = None
    hmma_ratio: float | None = None
    imma_ratio: float | None = None
    dfma_ratio: float | None = None
    reason: str = ""

    @property
    def available(self) -> bool:
        return self.any_ratio is not None


# The reason given by the first reading of a supported GPU: GPM metrics need two samples.
GPM_FIRST_SAMPLE = "first GPM sample taken; tensor activity from the next reading on"


@runtime_checkable
class GpuBackend(Protocol):
    """The interface the rest of the package uses: PynvmlBackend, NullBackend and test fakes implement it."""

    available: bool
    reason: str  # why unavailable ("" when available)

    def device_count(self) -> int: ...

    def device_info(self, index: int) -> DeviceInfo: ...

    def telemetry(self, index: int) -> Telemetry: ...

    def tensor_activity(self, index: int) -> TensorActivity:
        """Tensor-core activity since this method's previous call for ``index`` (scrape or log time only,
        never per step). Never raises: an unavailable figure comes back with its reason."""
        ...


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

    def tensor_activity(self, index: int) -> TensorActivity:
        return TensorActivity(reason=self.reason)


# CUDA cores per SM by compute capability, to get an SM count from nvmlDeviceGetNumGpuCores where
# nvmlDeviceGetAttributes (MIG handles only on many drivers) gives none. Sources: CUDA C Programming Guide,
# "Arithmetic Instructions" throughput table (32-bit floating-point add/multiply per clock per SM).
_CORES_PER_SM: dict[tuple[int, int], int] = {
    (7, 0): 64,
    (8, 0): 64,
    (8, 6): 128,
    (8, 9): 128,
    (9, 0): 128,
    (10, 0): 128,
}


class PynvmlBackend:
    """NVML through nvidia-ml-py. MIG-enabled GPUs are listed by their slices (as CUDA sees them). Every NVML
    call is guarded: ``telemetry`` never raises (a failing query gives None), ``device_info`` gives what it
    could read. Power, clocks and temperature of a MIG slice are its parent GPU's (NVML has no per-slice
    figures)."""

    available = True
    reason = ""

    def __init__(self, nvml: Any) -> None:
        self._nvml = nvml  # the pynvml module (or a stand-in with its names), already initialised
        self._devices: list[tuple[Any, Any | None]] = []  # (handle, parent handle for a MIG slice)
        self._gpm: dict[int, Any] = {}  # device index -> its previous GPM sample (allocated NVML buffer)
        self._gpm_off: dict[int, str] = {}  # device index -> why GPM is unavailable there (checked once)
        for gpu_index in range(self._call(nvml.nvmlDeviceGetCount, default=0)):
            handle = self._call(nvml.nvmlDeviceGetHandleByIndex, gpu_index)
            if handle is None:
                continue
            slices = self._mig_slices(handle)
            if slices:
                self._devices.extend((mig, handle) for mig in slices)
            else:
                self._devices.append((handle, None))

    def _call(self, fn: Any, *args: Any, default: Any = None) -> Any:
        try:
            return fn(*args)
        except self._nvml.NVMLError:
            return default

    def _mig_slices(self, handle: Any) -> list[Any]:
        nvml = self._nvml
        mode = self._call(nvml.nvmlDeviceGetMigMode, handle)
        if not mode or mode[0] != getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1):
            return []
        slices = []
        for i in range(self._call(nvml.nvmlDeviceGetMaxMigDeviceCount, handle, default=0)):
            mig = self._call(nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, i)
            if mig is not None:
                slices.append(mig)
        return slices

    def _sm_count(self, handle: Any, cc: tuple[int, int] | None) -> int | None:
        nvml = self._nvml
        attrs = self._call(nvml.nvmlDeviceGetAttributes, handle)
        if attrs is not None and getattr(attrs, "multiprocessorCount", None):
            return int(attrs.multiprocessorCount)
        get_cores = getattr(nvml, "nvmlDeviceGetNumGpuCores", None)
        cores = self._call(get_cores, handle) if get_cores is not None else None
        per_sm = _CORES_PER_SM.get(cc) if cc else None
        if cores and per_sm and cores % per_sm == 0:
            return int(cores) // per_sm
        return None

    def device_count(self) -> int:
        return len(self._devices)

    def device_info(self, index: int) -> DeviceInfo:
        if not 0 <= index < len(self._devices):
            raise IndexError(f"no GPU {index}: NVML lists {len(self._devices)}")
        nvml = self._nvml
        handle, parent = self._devices[index]
        physical = parent if parent is not None else handle
        name = self._call(nvml.nvmlDeviceGetName, physical, default="")
        name = name.decode() if isinstance(name, bytes) else str(name)
        pci = self._call(nvml.nvmlDeviceGetPciInfo, physical)
        device_id = (int(pci.pciDeviceId) >> 16) if pci is not None else None
        cc_raw = self._call(nvml.nvmlDeviceGetCudaComputeCapability, physical)
        cc = (int(cc_raw[0]), int(cc_raw[1])) if cc_raw else None
        max_clock = self._call(nvml.nvmlDeviceGetMaxClockInfo, physical, nvml.NVML_CLOCK_SM)
        uuid = self._call(nvml.nvmlDeviceGetUUID, handle)
        memory = self._call(nvml.nvmlDeviceGetMemoryInfo, handle)
        return DeviceInfo(
            index=index,
            name=name or "unknown NVIDIA GPU",
            pci_device_id=device_id,
            compute_capability=cc,
            sm_count=self._sm_count(handle, cc),
            max_sm_clock_mhz=float(max_clock) if max_clock else None,
            uuid=uuid.decode() if isinstance(uuid, bytes) else uuid,
            memory_total_bytes=int(memory.total) if memory is not None else None,
            mig=parent is not None,
            parent_sm_count=self._sm_count(parent, cc) if parent is not None else None,
        )

    def telemetry(self, index: int) -> Telemetry:
        if not 0 <= index < len(self._devices):
            return Telemetry()
        nvml = self._nvml
        handle, parent = self._devices[index]
        gpu = parent if parent is not None else handle
        try:
            util = self._call(nvml.nvmlDeviceGetUtilizationRates, gpu)
            memory = self._call(nvml.nvmlDeviceGetMemoryInfo, handle)
            power_mw = self._call(nvml.nvmlDeviceGetPowerUsage, gpu)
            energy_mj = self._call(nvml.nvmlDeviceGetTotalEnergyConsumption, gpu)
            clock = self._call(nvml.nvmlDeviceGetClockInfo, gpu, nvml.NVML_CLOCK_SM)
            max_clock = self._call(nvml.nvmlDeviceGetMaxClockInfo, gpu, nvml.NVML_CLOCK_SM)
            temp = self._call(nvml.nvmlDeviceGetTemperature, gpu, nvml.NVML_TEMPERATURE_GPU)
            reasons_fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
                nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None
            )
            reasons = self._call(reasons_fn, gpu) if reasons_fn is not None else None
        except Exception:  # a broken binding must not reach a scrape or a training loop
            return Telemetry()
        return Telemetry(
            utilization_ratio=util.gpu / 100.0 if util is not None else None,
            memory_used_bytes=int(memory.used) if memory is not None else None,
            power_watts=power_mw / 1000.0 if power_mw is not None else None,
            energy_joules=energy_mj / 1000.0 if energy_mj is not None else None,
            sm_clock_hz=clock * 1e6 if clock is not None else None,
            max_sm_clock_hz=max_clock * 1e6 if max_clock is not None else None,
            temperature_celsius=float(temp) if temp is not None else None,
            throttle_reasons=int(reasons) if reasons is not None else None,
        )

    def tensor_activity(self, index: int) -> TensorActivity:
        try:
            return self._tensor_activity(index)
        except Exception as exc:  # a broken binding must not reach a scrape or a training loop
            return TensorActivity(reason=f"NVML GPM failed: {exc}")

    def _gpm_unsupported(self, index: int) -> str:
        """Why GPM cannot be used on device ``index`` ("" when it can); decided once per device."""
        if index in self._gpm_off:
            return self._gpm_off[index]
        nvml = self._nvml
        handle, parent = self._devices[index]
        why = ""
        if not hasattr(nvml, "nvmlGpmQueryDeviceSupport"):
            why = "nvidia-ml-py has no GPM API (upgrade nvidia-ml-py)"
        elif parent is not None:
            # nvmlGpmMigSampleGet needs the GPU-instance id and samples the whole instance; the monitor
            # does not attribute it to a slice.
            why = "GPM tensor activity is not read for MIG slices"
        else:
            try:
                support = nvml.nvmlGpmQueryDeviceSupport(handle)
                if not int(support.isSupportedDevice):
                    why = "GPM unsupported on this GPU (tensor activity needs Hopper or later)"
            except nvml.NVMLError as exc:
                why = f"GPM unsupported: {exc} (driver too old, or a pre-Hopper GPU)"
        self._gpm_off[index] = why
        return why

    def _tensor_activity(self, index: int) -> TensorActivity:
        if not 0 <= index < len(self._devices):
            return TensorActivity(reason=f"no GPU {index}")
        why = self._gpm_unsupported(index)
        if why:
            return TensorActivity(reason=why)
        nvml = self._nvml
        handle, _ = self._devices[index]
        sample = nvml.nvmlGpmSampleAlloc()
        try:
            nvml.nvmlGpmSampleGet(handle, sample)
        except Exception:
            nvml.nvmlGpmSampleFree(sample)
            raise
        previous = self._gpm.get(index)
        self._gpm[index] = sample
        if previous is None:
            return TensorActivity(reason=GPM_FIRST_SAMPLE)
        try:
            ids = (
                nvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL,
                nvml.NVML_GPM_METRIC_HMMA_TENSOR_UTIL,
                nvml.NVML_GPM_METRIC_IMMA_TENSOR_UTIL,
                nvml.NVML_GPM_METRIC_DFMA_TENSOR_UTIL,
            )
            request = nvml.c_nvmlGpmMetricsGet_t()
            request.version = nvml.NVML_GPM_METRICS_GET_VERSION
            request.numMetrics = len(ids)
            request.sample1 = previous
            request.sample2 = sample
            for i, metric_id in enumerate(ids):
                request.metrics[i].metricId = metric_id
            result = nvml.nvmlGpmMetricsGet(request)
            values: list[float | None] = []
            for i in range(len(ids)):
                m = result.metrics[i]
                ok = int(m.nvmlReturn) == getattr(nvml, "NVML_SUCCESS", 0)
                values.append(min(max(float(m.value) / 100.0, 0.0), 1.0) if ok else None)
        finally:
            nvml.nvmlGpmSampleFree(previous)
        if values[0] is None:
            return TensorActivity(reason="NVML GPM returned no tensor-activity value")
        return TensorActivity(
            any_ratio=values[0], hmma_ratio=values[1], imma_ratio=values[2], dfma_ratio=values[3]
        )


def open_backend() -> GpuBackend:
    """PynvmlBackend when nvidia-ml-py imports and nvmlInit succeeds; else a NullBackend saying why."""
    try:
        import pynvml
    except ImportError:
        return NullBackend("nvidia-ml-py is not installed (pip install nvidia-ml-py)")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return NullBackend(f"NVML unavailable: {exc} (no NVIDIA driver or GPU on this machine?)")
    except OSError as exc:
        return NullBackend(f"NVML unavailable: {exc}")
    try:
        return PynvmlBackend(pynvml)
    except Exception as exc:  # a driver failing while we enumerate: say so, never crash the caller
        return NullBackend(f"NVML failed while listing devices: {exc}")
