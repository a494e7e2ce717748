"""The peak of a run whose matmuls use more than one dtype (FP8 linear layers, BF16 attention), FLOP-weighted.

A device at peak in each dtype would spend ``Fᵢ / Pᵢ`` seconds on the ``Fᵢ`` FLOPs it runs in dtype ``i`` at
that dtype's dense peak ``Pᵢ``. The run's peak is the rate that does all its FLOPs in that time:

    P_eff = Σ Fᵢ / Σ (Fᵢ / Pᵢ)                (a FLOP-weighted harmonic mean of the peaks)

so MFU = achieved rate / P_eff is the share of the best time the hardware allows for this mix of dtypes:
neither flattered by the BF16 peak (FP8 work counted at BF16 speed) nor punished by the FP8 peak (BF16
attention counted at FP8 speed). torchtitan reports MFU of FP8 runs against the BF16 peak and left the
question open; Transformer Engine and torchao keep attention (and norms) in BF16 by default, so a partly-FP8
denominator is the common case. "MFU vs BF16 peak" is reported beside it so FP8 and BF16 runs compare.
Pure, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from monitor.errors import InputError


class MixedPeak(BaseModel):
    """A FLOP-weighted peak and how it was made."""

    model_config = ConfigDict(frozen=True)

    peak_flops_per_second: float
    shares: dict[str, float]  # dtype -> share of the model FLOPs (sums to 1)
    source: str  # e.g. "catalogue fp8 62% / bf16 38% (FLOP-weighted)"
    bf16_peak_flops_per_second: float | None = None  # for "MFU vs BF16 peak"


def flop_weighted_peak(flops: Mapping[str, float], peaks: Mapping[str, float]) -> float:
    """Σ Fᵢ / Σ (Fᵢ / Pᵢ) over the dtypes with FLOPs; InputError for a dtype without a positive peak."""
    total = 0.0
    seconds = 0.0
    for dtype, f in flops.items():
        if f < 0 or not math.isfinite(f):
            raise InputError(f"flops[{dtype}]", f"must be a finite number >= 0, got {f!r}", "fix the count")
        if f == 0:
            continue
        p = peaks.get(dtype)
        if p is None or not p > 0:
            raise InputError(
                f"peak[{dtype}]", "no peak for a dtype the run computes in", "give peak_flops or pass dtype="
            )
        total += f
        seconds += f / p
    if total == 0:
        raise InputError("flops", "no FLOPs to weigh", "count the model's FLOPs first")
    return total / seconds


def mixed_peak(
    fp8_flops: float,
    total_flops: float,
    peaks: Mapping[str, float],
    *,
    other_dtype: str = "bf16",
    source: str = "catalogue",
) -> MixedPeak:
    """The peak for a run whose FP8 layers do ``fp8_flops`` of its ``total_flops`` (per token or per step:
    only the ratio matters) and the rest in ``other_dtype``."""
    if not 0 <= fp8_flops <= total_flops * (1 + 1e-12) or total_flops <= 0:
        raise InputError(
            "fp8_flops",
            f"{fp8_flops!r} is not within 0..{total_flops!r} (the model's FLOPs)",
            "check the count",
        )
    fp8_flops = min(fp8_flops, total_flops)
    flops = {"fp8": fp8_flops, other_dtype: total_flops - fp8_flops}
    peak = flop_weighted_peak(flops, peaks)
    shares = {k: v / total_flops for k, v in flops.items() if v > 0}
    parts = " / ".join(f"{k} {round(100 * v)}%" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))
    label = f"{source} {parts} (FLOP-weighted)" if len(shares) > 1 else f"{source} {next(iter(shares))}"
    return MixedPeak(
        peak_flops_per_second=peak,
        shares=shares,
        source=label,
        bf16_peak_flops_per_second=peaks.get("bf16"),
    )


def mfu(model_flops_per_second: float, peak_flops_per_second: float | None) -> float | None:
    """Achieved model FLOP/s over a peak (the FLOP-weighted one, or the BF16 one for "MFU vs BF16 peak")."""
    if peak_flops_per_second is None or not peak_flops_per_second > 0:
        return None
    return model_flops_per_second / peak_flops_per_second
