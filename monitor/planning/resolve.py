"""Turn what a user names (a config file, a preset, a device) into a ModelSpec and a peak, for the planning
CLI.

Imports of the model and hardware layers happen here, lazily, so the pure planning modules stay importable
alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from monitor.errors import InputError
from monitor.planning._inputs import positive

if TYPE_CHECKING:
    from monitor.model.spec import ModelSpec

TERA = 1e12


def model_spec(config: str | None = None, model: str | None = None) -> ModelSpec:
    """The ModelSpec of ``--config PATH`` or ``--model PRESET`` (exactly one)."""
    from monitor.model.resolve import resolve_named_spec

    return resolve_named_spec(config, model)


@dataclass(frozen=True)
class Peak:
    flops_per_second: float
    device: str | None  # catalogue name; None when given as a number
    key: str | None
    dtype: str
    source: str


def device_peak(gpu: str | None, peak_tflops: float | None, dtype: str = "bf16") -> Peak:
    """Peak FLOP/s per device from ``--gpu NAME`` (the catalogue) or ``--peak-tflops X`` (exactly one)."""
    from monitor.hardware.dtypes import normalize_dtype

    dtype_name = normalize_dtype(dtype)
    if gpu is not None and peak_tflops is not None:
        raise InputError("--gpu/--peak-tflops", "both given", "pass one of --gpu NAME or --peak-tflops X")
    if peak_tflops is not None:
        value = positive("--peak-tflops", peak_tflops, "pass the dense peak per device in TFLOP/s, e.g. 989")
        return Peak(value * TERA, None, None, dtype_name, "given with --peak-tflops")
    if gpu is None:
        raise InputError("--gpu/--peak-tflops", "no device given", "pass --gpu NAME or --peak-tflops X")
    from monitor.hardware.catalog import catalogue_peak

    peak, acc = catalogue_peak(
        gpu, dtype_name, fix="pass another --dtype or give the peak with --peak-tflops"
    )
    return Peak(peak, acc.name, acc.key, dtype_name, acc.source)
