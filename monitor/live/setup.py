"""Run setup: what a monitored run needs to know once — device, dtype, FLOPs source, peak, GPU telemetry,
model identity, step timer — resolved at start (so that bad input fails there, not mid-run), passed to the
rest, and testable without hooks.

This is the one place where the FLOPs source and the peak are decided.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from monitor.errors import InputError
from monitor.hardware.nvml import GpuBackend, NullBackend
from monitor.live.flops import FlopsSource
from monitor.live.fp8 import Fp8Peaks, detect_fp8_peaks
from monitor.live.timing import TimerBackend, timer_for_device

Warn = Callable[[str, str], None]  # (key, message): warned once per key
OnError = Callable[[str, BaseException], None]


@dataclass(frozen=True)
class Peak:
    flops_per_second: float | None  # None: unknown (MFU is not shown)
    source: str | None
    device_name: str


@dataclass(frozen=True)
class RunSetup:
    device: torch.device
    dtype: str | None
    flops_source: FlopsSource | None
    gpu: GpuBackend
    gpu_indices: list[int]
    peak: Peak
    model_name: str | None
    params: int | None
    timer: TimerBackend
    fp8: Fp8Peaks | None = None  # FP8 linear layers (or dtype="fp8") with both peaks known


def resolve_run_setup(
    model: torch.nn.Module | None,
    *,
    spec: Any = None,
    flops_per_token: float | None = None,
    peak_flops: float | None = None,
    peak_source: str | None = None,
    dtype: Any = None,
    gpu_backend: GpuBackend | None = None,
    gpu_index: int | None = None,
    timer: TimerBackend | None = None,
    warn: Warn,
    on_error: OnError,
) -> RunSetup:
    """Everything the run needs to know once, from the monitor's options and the model."""
    from monitor.live.compile_compat import unwrap

    model = unwrap(model)  # a torch.compile'd module: its config, class name and parameters
    device = model_device(model)
    dtype_name = resolve_dtype(dtype, model)
    source = flops_source(model, spec, flops_per_token, warn)
    gpu = open_gpu(gpu_backend, device, warn)
    indices = gpu_indices(gpu, device, gpu_index)
    # A GPU index given with a working NVML backend names this rank's GPU even for a model not (yet) on it.
    on_gpu = device.type == "cuda" or (gpu_index is not None and gpu.available)
    peak = resolve_peak(peak_flops, peak_source, device, dtype_name, gpu, indices, warn, on_error, on_gpu)
    fp8 = None
    if peak_flops is None and on_gpu:
        try:
            fp8 = detect_fp8_peaks(
                model, dtype_name, lambda d: _detect(d, gpu, indices, device, calibrated=None), warn
            )
        except Exception as exc:  # the single-dtype peak stays; never a stopped run
            warn("fp8 peak", f"FP8 layers' peak not detected ({exc}): MFU is against the {dtype_name} peak")
    name, params = model_identity(model, source)
    return RunSetup(
        device=device,
        dtype=dtype_name,
        flops_source=source,
        gpu=gpu,
        gpu_indices=indices,
        peak=peak,
        model_name=name,
        params=params,
        timer=timer or timer_for_device(device),
        fp8=fp8,
    )


def flops_source(
    model: Any, spec: Any, flops_per_token: float | None, warn: Warn | None = None
) -> FlopsSource | None:
    """A given number, else ``spec`` (or the model's own ``config``), else a measurement of the model.

    A model's own ``config`` of a family the analytic model does not cover (``PhiForCausalLM``, say) is
    measured instead, with one warning that says so; a ``spec`` the user passed must resolve (its error names
    ``spec``)."""
    if flops_per_token is not None:
        return FlopsSource("fixed", float(flops_per_token))
    from monitor.model.resolve import resolve_spec

    if spec is None and model is not None and getattr(model, "config", None) is not None:
        try:
            return FlopsSource("spec", resolve_spec(model.config, field="spec"))
        except InputError as exc:
            if warn is not None:
                warn(
                    "flops source",
                    f"model.config has no analytic FLOPs model ({exc.problem}): FLOPs are measured once per "
                    "sequence length with FlopCounterMode on the meta device; pass spec= or flops_per_token= "
                    "to choose",
                )
            return FlopsSource("measured")
    if spec is not None:
        return FlopsSource("spec", resolve_spec(spec, field="spec"))
    if model is not None:
        return FlopsSource("measured")
    return None


def resolve_peak(
    peak_flops: float | None,
    peak_source: str | None,
    device: torch.device,
    dtype: str | None,
    gpu: GpuBackend,
    indices: list[int],
    warn: Warn,
    on_error: OnError,
    on_gpu: bool | None = None,
) -> Peak:
    """The user's figure, else detection (catalogue, derivation, a cached ``mfu calibrate`` measurement),
    else unknown — then MFU is not shown, and we say so once."""
    from monitor.hardware.host import cpu_name

    cpu = device.type != "cuda" if on_gpu is None else not on_gpu
    label = f"cpu ({cpu_name()})" if device.type == "cpu" else str(device)
    if peak_flops is not None:
        name = label
        if not cpu and gpu.available and indices:
            try:
                name = gpu.device_info(indices[0]).name
            except Exception as exc:
                on_error("NVML device_info", exc)
        return Peak(float(peak_flops), peak_source or "override", name)
    calibrated = cached_calibration(dtype, device)
    if cpu:
        if calibrated is None:
            warn(
                "peak",
                f"no peak FLOP/s for {label}: MFU is not shown — run `mfu calibrate` or pass peak_flops=",
            )
            return Peak(None, None, label)
        return Peak(calibrated, "calibrated", label)
    try:
        info = _detect(dtype or "bf16", gpu, indices, device, calibrated)
    except Exception as exc:
        warn("peak", f"peak FLOP/s unknown ({exc}); MFU is not shown — pass peak_flops=")
        return Peak(None, None, label)
    if info.warning:
        warn("peak", str(info.warning))
    return Peak(info.peak_flops_per_second, info.source, str(info.device or label))


def _detect(
    dtype: str, gpu: GpuBackend, indices: list[int], device: torch.device, calibrated: float | None
) -> Any:
    from monitor.hardware.detect import detect_accelerator

    index = indices[0] if indices else (device.index or 0)
    return detect_accelerator(dtype, index=index, backend=gpu, calibrated=calibrated)


def cached_calibration(dtype: str | None, device: torch.device) -> float | None:
    """A measured matmul rate from ``mfu calibrate`` for this device and dtype, if one is cached."""
    from monitor.hardware.calibrate import load_cached_calibration

    try:
        cached = load_cached_calibration(dtype or "fp32", device.type)
    except Exception:
        return None
    return cached.flops_per_second if cached is not None and cached.flops_per_second > 0 else None


def open_gpu(backend: GpuBackend | None, device: torch.device, warn: Warn) -> GpuBackend:
    if backend is not None:
        return backend
    if device.type != "cuda":
        return NullBackend("the model is not on a CUDA device")
    try:
        from monitor.hardware.nvml import open_backend

        opened: GpuBackend = open_backend()
    except Exception as exc:
        opened = NullBackend(f"NVML unavailable: {exc}")
    if not opened.available:
        warn("nvml", f"no GPU telemetry: {opened.reason}")
    return opened


def gpu_indices(gpu: GpuBackend, device: torch.device, gpu_index: int | None) -> list[int]:
    """This rank's NVML GPU indices: the given one, else the model's CUDA device (through
    CUDA_VISIBLE_DEVICES)."""
    if gpu_index is not None:
        return [gpu_index]
    if not gpu.available or device.type != "cuda":
        return []
    index = device.index if device.index is not None else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        items = [v.strip() for v in visible.split(",")]
        if index < len(items) and items[index].isdigit():
            return [int(items[index])]
    return [index]


def model_device(model: torch.nn.Module | None) -> torch.device:
    if model is not None:
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def resolve_dtype(dtype: Any, model: Any) -> str | None:
    from monitor.hardware.dtypes import normalize_dtype, run_dtype

    if dtype is not None:
        return normalize_dtype(dtype)
    try:
        return run_dtype(model)
    except Exception:
        return None


def model_identity(model: Any, source: FlopsSource | None) -> tuple[str | None, int | None]:
    """(name, parameter count): the spec's label or the model's class; parameters counted from the model."""
    name = None
    params = None
    if source is not None and source.kind == "spec":
        name = source.value.label
    if model is not None:
        name = name or type(model).__name__
        params = sum(p.numel() for p in model.parameters())
    return name, params
