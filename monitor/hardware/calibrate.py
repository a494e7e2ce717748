"""Measure the achievable dense matmul FLOP/s of this machine for a dtype (CPU, or a CUDA GPU).

A run on a device the catalogue does not know (the demo on a CPU) has no datasheet peak; a measured rate
gives it an honest denominator, labelled ``calibrated`` wherever it is used. The figure is what a square
matmul reaches here and now: a few percent of noise, lower on a busy machine, and an MFU against it reads
higher than one against a datasheet peak would.

Method: C = A @ B with n x n random matrices counts 2·n³ FLOPs (n³ multiply-adds; the convention of the
datasheets and of PyTorch's FlopCounterMode). After warm-up, batches of matmuls are timed (host clock on the
CPU, CUDA events on a GPU) until ``seconds`` have passed; the result is the best batch's rate (the least
disturbed by other work on the machine), and the median and slowest batch are kept beside it.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from monitor.errors import InputError
from monitor.hardware.dtypes import normalize_dtype
from monitor.hardware.host import cpu_name

CALIBRATABLE = ("fp64", "fp32", "tf32", "bf16", "fp16")
DEFAULT_SIZE = {"cpu": 1024, "cuda": 8192}
CACHE_FILE = "calibration.json"
DTYPE_BYTES = {"fp64": 8, "fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2}
MAX_BYTES = 8 * 2**30  # the three matrices of one measurement
MAX_SECONDS = 600.0


class CalibrationResult(BaseModel):
    """One measurement: ``flops_per_second`` is the best batch, ``median_flops_per_second`` the typical."""

    model_config = ConfigDict(frozen=True)

    flops_per_second: float
    median_flops_per_second: float
    min_flops_per_second: float
    dtype: str
    device: str  # "cpu" or "cuda"
    device_name: str
    matrix_size: int
    repeats: int  # matmuls timed
    batches: int
    seconds: float  # time spent timing
    threads: int
    torch_version: str
    machine_key: str
    measured_at: float  # unix seconds
    source: str = "calibrated"
    cached: bool = False  # stored for later runs on this machine
    cache_error: str | None = None  # why it could not be stored, when caching was asked for


def cache_dir() -> Path:
    """``$MFU_MONITOR_CACHE_DIR``, else ``$XDG_CACHE_HOME/mfu-monitor``, else ``~/.cache/mfu-monitor``."""
    explicit = os.environ.get("MFU_MONITOR_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mfu-monitor"


def _device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return str(torch.cuda.get_device_name(torch.cuda.current_device()))
    return cpu_name()


def machine_key(device: str = "cpu") -> str:
    """What a cached rate is valid for: host, device model, torch threads and version."""
    import torch

    return "|".join(
        [
            platform.node(),
            _device_name(device),
            f"threads={torch.get_num_threads()}",
            f"torch={torch.__version__}",
        ]
    )


def _check(dtype: object, device: str, size: int | None, seconds: float) -> tuple[str, str, int]:
    name = normalize_dtype(dtype)
    if name not in CALIBRATABLE:
        raise InputError(
            "--dtype",
            f"cannot calibrate {name}",
            f"use one of {', '.join(CALIBRATABLE)}",
        )
    if device not in ("cpu", "cuda"):
        raise InputError("--device", f"unknown device {device!r}", "use cpu or cuda")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device", "CUDA is not available on this machine", "use --device cpu")
    if name == "tf32" and device != "cuda":
        raise InputError("--dtype", "tf32 is a CUDA tensor-core mode", "use fp32 on the CPU")
    n = DEFAULT_SIZE[device] if size is None else int(size)
    if n < 16:
        raise InputError("--size", f"matrix size must be at least 16, got {size}", "use e.g. 1024")
    need = 3 * n * n * DTYPE_BYTES[name]  # a, b and the product
    if need > MAX_BYTES:
        largest = int((MAX_BYTES / (3 * DTYPE_BYTES[name])) ** 0.5)
        problem = f"{n} x {n} {name} matrices need {need / 2**30:.1f} GiB (at most {MAX_BYTES // 2**30} GiB)"
        raise InputError("--size", problem, f"use a size up to {largest}, e.g. {DEFAULT_SIZE[device]}")
    if not 0 < seconds <= MAX_SECONDS:  # also NaN and infinity
        raise InputError(
            "--seconds", f"must be above 0 and at most {MAX_SECONDS:g}, got {seconds}", "use e.g. 1.0"
        )
    return name, device, n


def calibrate(
    dtype: object = "fp32",
    *,
    device: str = "cpu",
    size: int | None = None,
    seconds: float = 1.0,
    cache: bool = True,
) -> CalibrationResult:
    """Time n x n matmuls in ``dtype`` on ``device`` for about ``seconds`` (plus warm-up) and return the rate.

    ``cache=True`` stores the result under ``cache_dir()`` for ``load_cached_calibration``."""
    name, device, n = _check(dtype, device, size, seconds)
    import torch

    torch_dtype = {
        "fp64": torch.float64,
        "fp32": torch.float32,
        "tf32": torch.float32,
        "bf16": torch.bfloat16,
        "fp16": torch.float16,
    }[name]
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch_dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=torch_dtype, generator=generator)
    flops_per_matmul = 2.0 * n**3  # n³ multiply-adds
    previous_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
    try:
        rates, repeats, spent = _time(a, b, device, seconds, flops_per_matmul)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_tf32
    rates.sort()
    result = CalibrationResult(
        flops_per_second=rates[-1],
        median_flops_per_second=rates[len(rates) // 2],
        min_flops_per_second=rates[0],
        dtype=name,
        device=device,
        device_name=_device_name(device),
        matrix_size=n,
        repeats=repeats,
        batches=len(rates),
        seconds=spent,
        threads=torch.get_num_threads(),
        torch_version=str(torch.__version__),
        machine_key=machine_key(device),
        measured_at=time.time(),
    )
    if cache:
        error = _store(result)
        result = result.model_copy(update={"cached": error is None, "cache_error": error})
    return result


def _time(a: Any, b: Any, device: str, seconds: float, flops: float) -> tuple[list[float], int, float]:
    import torch

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    out = a @ b  # warm-up: allocator, kernel selection, threads
    sync()
    start = time.perf_counter()
    out = a @ b
    sync()
    one = max(time.perf_counter() - start, 1e-6)
    per_batch = max(1, int(min(seconds / 5, 0.25) / one))  # about 5+ batches, each <= 0.25 s
    rates: list[float] = []
    repeats = 0
    began = time.perf_counter()
    while not rates or time.perf_counter() - began < seconds:
        if device == "cuda":
            first, last = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            first.record()
            for _ in range(per_batch):
                out = a @ b
            last.record()
            last.synchronize()
            elapsed = first.elapsed_time(last) / 1000.0
        else:
            t0 = time.perf_counter()
            for _ in range(per_batch):
                out = a @ b
            elapsed = time.perf_counter() - t0
        rates.append(flops * per_batch / max(elapsed, 1e-9))
        repeats += per_batch
    del out
    return rates, repeats, time.perf_counter() - began


def _cache_key(machine: str, device: str, dtype: str) -> str:
    return f"{machine}|{device}|{dtype}"


def _store(result: CalibrationResult) -> str | None:
    """Store ``result`` in the cache; the reason when it cannot be stored (a cache that cannot be written is
    not an error: the result is still returned, and the caller says it was not cached)."""
    path = cache_dir() / CACHE_FILE
    try:
        entries = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        if not isinstance(entries, dict):
            entries = {}
    except (OSError, ValueError):
        entries = {}
    entries[_cache_key(result.machine_key, result.device, result.dtype)] = result.model_dump(
        exclude={"cached", "cache_error"}
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entries, indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        return f"{path.parent}: {exc.strerror or exc}"
    return None


def load_cached_calibration(dtype: object = "fp32", device: str = "cpu") -> CalibrationResult | None:
    """The cached result for this machine (same host, device model, threads, torch), or None."""
    name = normalize_dtype(dtype)
    path = cache_dir() / CACHE_FILE
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        raw = entries.get(_cache_key(machine_key(device), device, name))
        return CalibrationResult.model_validate({**raw, "cached": True}) if raw else None
    except (OSError, ValueError, AttributeError):
        return None
