"""The peak of a run whose linear layers compute in FP8 (torchao float8, Transformer Engine).

Such a run's matmuls use two dtypes: the FP8 layers' GEMMs at the FP8 tensor rate, the rest (attention
scores, the output head unless converted, anything left in BF16) at the model dtype's rate. The denominator
is the FLOP-weighted peak of ``monitor.hardware.mixed`` (time at peak = Σ FLOPsᵢ / peakᵢ), with the FP8
share of the model FLOPs taken at the first log tick that knows the FLOPs per token (the sequence length is
known then, and Transformer Engine has set its modules' ``fp8`` flag in the first forward). ``dtype="fp8"``
forces the all-FP8 peak. Either way the MFU against the BF16 peak is reported beside it, so FP8 and BF16
runs compare.

Detected at start (the model's module types, NVML's device), computed at a log tick, never per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from monitor.hardware.mixed import MixedPeak, mixed_peak
from monitor.model.fp8 import Fp8Layer, find_fp8_layers, fp8_state, fp8_training_flops_per_token


@dataclass(frozen=True)
class Fp8Peaks:
    """What an FP8 run's denominator is made from, found at start."""

    layers: tuple[Fp8Layer, ...]
    fp8: float  # the device's dense FP8 peak, FLOP/s
    other: float  # the dense peak of the dtype the rest of the model computes in
    other_dtype: str
    source: str  # where both peaks came from (catalogue, derived)
    forced: bool  # dtype="fp8": every FLOP counted at the FP8 peak

    @property
    def bf16(self) -> float | None:
        """The peak "MFU vs BF16" is computed against (None when the other dtype is not bf16)."""
        return self.other if self.other_dtype == "bf16" else None


def detect_fp8_peaks(model: Any, dtype: str | None, detect: Any, warn: Any) -> Fp8Peaks | None:
    """The model's FP8 layers and the two peaks, when the model has FP8 layers (or ``dtype`` is fp8) and
    the device's peaks are known. ``detect(dtype)`` returns a ``PeakInfo``; ``warn(key, message)`` says once
    why no FP8 peak is used."""
    layers = tuple(find_fp8_layers(model)) if model is not None else ()
    forced = dtype == "fp8"
    if not layers and not forced:
        return None
    other_dtype = "bf16" if forced or dtype is None else dtype
    fp8_info, other_info = detect("fp8"), detect(other_dtype)
    if fp8_info.peak_flops_per_second is None or other_info.peak_flops_per_second is None:
        missing = "fp8" if fp8_info.peak_flops_per_second is None else other_dtype
        warn(
            "fp8 peak",
            f"the model has {len(layers)} FP8 linear layer(s) but the {missing} peak of "
            f"{fp8_info.device} is unknown: MFU is computed against the {dtype or 'detected'} peak — pass "
            "peak_flops= for a FLOP-weighted one",
        )
        return None
    return Fp8Peaks(
        layers=layers,
        fp8=float(fp8_info.peak_flops_per_second),
        other=float(other_info.peak_flops_per_second),
        other_dtype=other_dtype,
        source=str(fp8_info.source),
        forced=forced,
    )


def fp8_share(peaks: Fp8Peaks, model: Any, training_flops_per_token: float) -> float:
    """The share of the model's training FLOPs per token that its FP8 layers do now (Transformer Engine's
    ``fp8`` flags re-read), clamped to 0..1. ``training_flops_per_token``: the whole model's (or, under
    pipeline parallelism, this stage's), at the sequence length the run trains at; the layers' FLOPs are
    6 × the trainable elements of their 2-D weights (``monitor.model.fp8``), global sizes for DTensors."""
    if training_flops_per_token <= 0:
        return 0.0
    layers = fp8_state(model, peaks.layers) if model is not None else list(peaks.layers)
    return min(max(fp8_training_flops_per_token(layers) / training_flops_per_token, 0.0), 1.0)


def run_peak(peaks: Fp8Peaks, share: float) -> MixedPeak:
    """The FLOP-weighted peak for an FP8 share of the FLOPs (1: the all-FP8 peak)."""
    return mixed_peak(
        share,
        1.0,
        {"fp8": peaks.fp8, peaks.other_dtype: peaks.other},
        other_dtype=peaks.other_dtype,
        source=peaks.source,
    )


class Fp8Peak:
    """An FP8 run's peak through the run: the all-FP8 peak at once when ``dtype="fp8"`` forced it, else the
    FLOP-weighted one settled (once) at the first log tick that knows the model's FLOPs per token."""

    def __init__(self, peaks: Fp8Peaks, model: Any) -> None:
        self.peaks = peaks
        self.model = model
        self.settled: MixedPeak | None = run_peak(peaks, 1.0) if peaks.forced else None
        self.failed = False

    @property
    def pending(self) -> bool:
        return self.settled is None and not self.failed

    def settle(self, model_flops_per_token: float) -> MixedPeak:
        """The FLOP-weighted peak for the model's (or this pipeline stage's) training FLOPs per token at
        the run's sequence length; raises what the share or the peak raises (then ``failed``)."""
        try:
            self.settled = run_peak(self.peaks, fp8_share(self.peaks, self.model, model_flops_per_token))
        except Exception:
            self.failed = True
            raise
        return self.settled

    @property
    def fallback(self) -> tuple[float, str]:
        """The other dtype's peak and its source, for a run whose FLOP-weighted peak could not be made."""
        return self.peaks.other, f"{self.peaks.source} ({self.peaks.other_dtype})"
