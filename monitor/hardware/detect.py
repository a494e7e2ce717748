"""Which accelerator is this, and what is its dense peak for the run's dtype? Never a guess.

Resolution, first that answers wins:
1. a user override (``override_peak``);
2. the catalogue, by PCI device id (tells SXM, PCIe and NVL apart where the name does not), else by the exact
   driver name; a MIG slice gets its share of the SMs;
3. a derivation, SM count x max SM clock x dense FLOPs per clock per SM of the architecture
   (``source="derived"``);
4. a measured rate (``calibrated``, from ``mfu calibrate``);
5. unknown: no peak, a warning, and no MFU. Never a fallback figure.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from monitor.errors import InputError
from monitor.hardware.catalog import Accelerator, by_pci_device_id, lookup_driver_name
from monitor.hardware.dtypes import normalize_dtype
from monitor.hardware.nvml import DeviceInfo, GpuBackend, open_backend

Source = Literal["override", "catalog", "derived", "calibrated", "unknown"]

# Dense FLOPs per clock per SM by compute capability and dtype, for parts the catalogue does not know. bf16
# rates from the reference (reference/hardware.md: Volta 1024 (fp16), Ampere 8.0 2048, Hopper 9.0 4096,
# Blackwell 10.0 8192), checked there: A100 108 SMs x 1.41 GHz x 2048 = 311.9 TF; H100 SXM 132 x 1.83 GHz x
# 4096 = 989.4 TF. The other dtypes are the datasheet ratios of the same architecture's catalogued parts:
# tf32 = bf16/2 (A100 156/312, H100 494.7/989.4); fp8 = int8 = 2 x bf16 on Hopper and Blackwell (H100
# 1978.9, B200 4500); int8 = 2 x bf16 on A100 (624); fp32 on CUDA cores: A100 108 x 1.41 GHz x 128 = 19.5 TF,
# V100 80 x 1.53 GHz x 128 = 15.7 TF, H100 132 x 1.98 GHz x 256 = 66.9 TF; fp64 is the catalogue's fp64
# figure, the FP64 tensor-core rate where there is one (A100 108 x 1.41 GHz x 128 = 19.5 TF, H100 132 x
# 1.98 GHz x 256 = 66.9 TF: twice their vector rate) and the vector rate on V100 (80 x 1.53 GHz x 64 = 7.8).
# Left out on purpose: Ampere 8.6 and Ada 8.9. Their tensor rate per SM differs by SKU by 2x (public specs: L4
# 58 SMs x 2.04 GHz x 1024 = 121 TF, RTX 4090 128 SMs x 2.52 GHz x 512 = 165 TF with FP32 accumulate), so a
# derived figure could be 2x wrong.
# Blackwell tf32 is left out too (B200 1100 is not half of 2250).
FLOPS_PER_CLOCK_PER_SM: dict[tuple[int, int], dict[str, int]] = {
    (7, 0): {"fp16": 1024, "fp32": 128, "fp64": 64},
    (8, 0): {"bf16": 2048, "fp16": 2048, "tf32": 1024, "int8": 4096, "fp32": 128, "fp64": 128},
    (9, 0): {"bf16": 4096, "fp16": 4096, "tf32": 2048, "fp8": 8192, "int8": 8192, "fp32": 256, "fp64": 256},
    (10, 0): {"bf16": 8192, "fp16": 8192, "fp8": 16384, "int8": 16384},
}


class PeakInfo(BaseModel):
    """The peak a run's MFU is computed against, where it came from, and why."""

    model_config = ConfigDict(frozen=True)

    device: str  # what the driver calls it, or "cpu"
    peak_flops_per_second: float | None  # dense, per device; None: unknown, report no MFU
    source: Source
    dtype: str
    detail: str  # one line for people: what was found and how the figure was chosen
    warning: str | None = None  # set when the peak is unknown: what to do about it
    accelerator: str | None = None  # catalogue key when the catalogue matched
    index: int | None = None
    pci_device_id: int | None = None
    mig: bool = False
    sm_count: int | None = None
    max_sm_clock_mhz: float | None = None


def check_peak(value: float | None, field: str) -> float | None:
    """A user-given peak must be a finite number above zero."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(field, f"{value!r} is not a number", "give FLOP/s, e.g. 989.4e12") from None
    if not math.isfinite(number) or number <= 0:
        raise InputError(field, f"must be a positive FLOP/s figure, got {value!r}", "give e.g. 989.4e12")
    return number


def derive_peak(
    compute_capability: tuple[int, int] | None,
    sm_count: int | None,
    max_sm_clock_mhz: float | None,
    dtype: str,
) -> float | None:
    """SM count x max SM clock x dense FLOPs per clock per SM; None where any part of that is unknown.

    An upper bound: datasheets rate tensor peaks at a clock that can sit below the max SM clock NVML reports
    (H100 SXM: 989.4 TF at 1.83 GHz, while NVML's max SM clock is 1.98 GHz, which would give 1070 TF)."""
    if compute_capability is None or not sm_count or not max_sm_clock_mhz:
        return None
    cc = (int(compute_capability[0]), int(compute_capability[1]))
    rate = FLOPS_PER_CLOCK_PER_SM.get(cc, {}).get(normalize_dtype(dtype))
    if rate is None:
        return None
    return float(sm_count) * float(max_sm_clock_mhz) * 1e6 * rate


def peak_at_clock(info: PeakInfo, sm_clock_hz: float | None) -> float | None:
    """The peak scaled to a current SM clock (throttling): peak x clock / max clock, capped at the peak.

    None where the peak or the max clock is unknown. Approximate for catalogue figures rated below the max
    clock."""
    peak = info.peak_flops_per_second
    if peak is None or not sm_clock_hz or not info.max_sm_clock_mhz:
        return None
    return peak * min(1.0, float(sm_clock_hz) / (info.max_sm_clock_mhz * 1e6))


def _tflops(value: float) -> str:
    return f"{value / 1e12:,.1f} TFLOP/s"


def _describe(info: DeviceInfo) -> str:
    text = info.name
    if info.pci_device_id is not None:
        text += f" (device id {info.pci_device_id:#06x})"
    if info.mig:
        text += f" MIG slice of {info.sm_count or '?'}/{info.parent_sm_count or '?'} SMs"
    return text


def detect_accelerator(
    dtype: object = "bf16",
    *,
    index: int = 0,
    backend: GpuBackend | None = None,
    override_peak: float | None = None,
    calibrated: float | None = None,
) -> PeakInfo:
    """The dense peak of device ``index`` for ``dtype``. See the module docstring for the order of sources.

    Reads NVML once (device_info); call it at start, never per step."""
    dtype = normalize_dtype(dtype)
    override = check_peak(override_peak, "peak_flops")
    measured = check_peak(calibrated, "calibrated")
    if index < 0:
        raise InputError("index", f"device index must be 0 or more, got {index}", "pass the local GPU index")
    if backend is None:
        backend = open_backend()

    info: DeviceInfo | None = None
    problem = ""
    try:
        count = backend.device_count()
    except Exception as exc:  # NVML failing part-way: report, never crash
        count, problem = 0, f"NVML failed listing devices: {exc}"
    if count == 0 and not problem:
        problem = backend.reason or "no NVIDIA GPU found"
    elif count and index >= count:
        raise InputError("index", f"no GPU {index}: {count} found", f"pass an index below {count}")
    elif count:
        try:
            info = backend.device_info(index)
        except Exception as exc:
            problem = f"NVML failed reading GPU {index}: {exc}"

    base: dict[str, Any] = {"dtype": dtype, "index": index if info else None}
    if info is not None:
        base.update(
            pci_device_id=info.pci_device_id,
            mig=info.mig,
            sm_count=info.sm_count,
            max_sm_clock_mhz=info.max_sm_clock_mhz,
        )
    device = info.name if info else ("cpu" if count == 0 else f"GPU {index}")

    if override is not None:
        return PeakInfo(
            device=device,
            peak_flops_per_second=override,
            source="override",
            detail=f"{device}: {dtype} peak {_tflops(override)} given by the user",
            **base,
        )

    no_unit: str | None = None
    if info is not None:
        acc, how = _match(info)
        if acc is not None:
            unit = acc.has_unit(dtype)
            figure = acc.peak(dtype)
            if figure is not None:
                return _from_catalog(info, acc, how, dtype, figure, base)
            if unit is False:
                no_unit = f"{acc.name} has no {dtype} units (datasheet), so there is no {dtype} peak"
        if no_unit is None:
            derived = derive_peak(info.compute_capability, info.sm_count, info.max_sm_clock_mhz, dtype)
            if derived is not None:
                cc = info.compute_capability or (0, 0)
                known = f"{acc.name} has no verified {dtype} figure" if acc else "not in the catalogue"
                return PeakInfo(
                    device=device,
                    peak_flops_per_second=derived,
                    source="derived",
                    accelerator=acc.key if acc else None,
                    detail=(
                        f"{_describe(info)}: {known}; derived {info.sm_count} SMs x "
                        f"{info.max_sm_clock_mhz:g} MHz x {FLOPS_PER_CLOCK_PER_SM[cc][dtype]} FLOP/clock/SM "
                        f"(sm_{cc[0]}{cc[1]}) = {_tflops(derived)} {dtype} dense, upper bound (max SM clock)"
                    ),
                    **base,
                )

    if measured is not None:
        return PeakInfo(
            device=device,
            peak_flops_per_second=measured,
            source="calibrated",
            detail=f"{device}: {dtype} matmul rate {_tflops(measured)} measured here (mfu calibrate)",
            **base,
        )

    if info is not None:
        why = no_unit or (
            f"{_describe(info)}: no verified {dtype} figure in the catalogue and no derivation "
            "(needs compute capability 7.0/8.0/9.0/10.0, SM count and max SM clock)"
        )
    else:
        why = f"no GPU peak: {problem}"
    return PeakInfo(
        device=device,
        peak_flops_per_second=None,
        source="unknown",
        detail=why,
        warning=f"{why}; no MFU will be reported — run `mfu calibrate` or pass peak_flops=<FLOP/s>",
        **base,
    )


def _match(info: DeviceInfo) -> tuple[Accelerator | None, str]:
    acc = by_pci_device_id(info.pci_device_id)
    if acc is not None:
        return acc, f"device id {info.pci_device_id:#06x}"
    acc = lookup_driver_name(info.name)
    if acc is not None:
        return acc, "name"
    return None, ""


def _from_catalog(
    info: DeviceInfo, acc: Accelerator, how: str, dtype: str, figure: float, base: dict[str, Any]
) -> PeakInfo:
    if info.mig:
        if not info.sm_count or not info.parent_sm_count:
            why = f"{_describe(info)}: the slice's SM share is unknown, so its peak is unknown"
            return PeakInfo(
                device=info.name,
                peak_flops_per_second=None,
                source="unknown",
                accelerator=acc.key,
                detail=why,
                warning=f"{why}; MFU will not be reported — pass peak_flops=<FLOP/s of this slice>",
                **base,
            )
        share = info.sm_count / info.parent_sm_count
        peak = figure * share
        detail = (
            f"{_describe(info)} → {acc.name} by {how}: {dtype} dense {_tflops(figure)} x "
            f"{info.sm_count}/{info.parent_sm_count} SMs = {_tflops(peak)}, datasheet share"
        )
    else:
        peak = figure
        detail = f"{_describe(info)} → {acc.name} by {how}, {dtype} dense {_tflops(figure)}, datasheet"
    return PeakInfo(
        device=info.name,
        peak_flops_per_second=peak,
        source="catalog",
        accelerator=acc.key,
        detail=detail,
        **base,
    )
