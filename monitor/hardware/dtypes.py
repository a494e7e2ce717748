"""Compute dtypes by the names the peak catalogue uses: fp64, fp32, tf32, bf16, fp16, fp8, int8.

``normalize_dtype`` accepts what users and frameworks write ("bfloat16", "torch.float16",
``torch.float8_e4m3fn``, "half", ...). ``run_dtype`` finds the dtype a run computes in (autocast, else the
parameters), since a TF32 or FP32 peak used for a BF16 run makes every MFU wrong. torch is imported lazily:
this module stays importable without it.
"""

from __future__ import annotations

from typing import Any

from monitor.errors import InputError

DTYPES: tuple[str, ...] = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8")

_ALIASES: dict[str, str] = {
    # fp64
    "fp64": "fp64",
    "float64": "fp64",
    "double": "fp64",
    "f64": "fp64",
    # fp32
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
    "f32": "fp32",
    "32": "fp32",
    "32-true": "fp32",
    # tf32 (FP32 inputs on tensor cores; torch: set_float32_matmul_precision("high"))
    "tf32": "tf32",
    "tensorfloat32": "tf32",
    # bf16
    "bf16": "bf16",
    "bfloat16": "bf16",
    "bf16-mixed": "bf16",
    "bf16-true": "bf16",
    # fp16
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "f16": "fp16",
    "16": "fp16",
    "16-mixed": "fp16",
    "16-true": "fp16",
    # fp8 (all encodings share the tensor-core rate)
    "fp8": "fp8",
    "float8": "fp8",
    "float8_e4m3fn": "fp8",
    "float8_e4m3fnuz": "fp8",
    "float8_e5m2": "fp8",
    "float8_e5m2fnuz": "fp8",
    "float8_e8m0fnu": "fp8",
    "e4m3": "fp8",
    "e5m2": "fp8",
    # int8
    "int8": "int8",
    "qint8": "int8",
    "i8": "int8",
}


def normalize_dtype(value: Any, *, field: str = "dtype") -> str:
    """The catalogue's name for a dtype given as a string or a ``torch.dtype``; InputError for anything
    else."""
    text = str(value).strip().lower()
    if text.startswith("torch."):
        text = text[len("torch.") :]
    name = _ALIASES.get(text)
    if name is None:
        raise InputError(
            field,
            f"unknown dtype {value!r}",
            f"use one of {', '.join(DTYPES)} (or bfloat16, float16, float32, float8_e4m3fn, ...)",
        )
    return name


def run_dtype(model: Any = None, *, device_type: str | None = None) -> str:
    """The dtype a run's matmuls use: autocast's when it is on, else the model's first floating parameter's.

    FP32 parameters on CUDA with ``torch.get_float32_matmul_precision()`` other than "highest" run on TF32
    tensor cores, so that case is "tf32". With nothing to look at, "fp32".
    """
    import torch  # lazily: the calculators must start without torch

    param_dtype: torch.dtype | None = None
    param_device = device_type
    if model is not None:
        for param in model.parameters():
            if param.is_floating_point():
                param_dtype = param.dtype
                param_device = param_device or param.device.type
                break
    device = param_device or "cpu"
    if torch.is_autocast_enabled(device):
        return normalize_dtype(torch.get_autocast_dtype(device))
    if param_dtype is None:
        return "fp32"
    name = normalize_dtype(param_dtype)
    if name == "fp32" and device == "cuda" and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return name
