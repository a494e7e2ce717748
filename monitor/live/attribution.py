"""Why is MFU low: the gap between a run's MFU and 100% split into measured causes (pure numpy, no torch).

One implementation for the live monitor (a rank's window of steps, at scrape time) and ``mfu analyze`` (a
run's step records): both pass per-step arrays to :func:`attribute`.

The split is a time budget in units of the device's peak (docs/attribution.md). For each step (one rank):

    T = step seconds; capacity = T x peak (the FLOPs the device could have done)
    W = input wait: host time from the previous step's end to this step's first forward (data loading, ...)
    S = straggler wait: the slowest rank's pre-backward time in this step minus this rank's
        (pre-backward = host time from the step's first forward to the start of its last backward, the work
        before the gradient synchronisation where the faster ranks wait)
    R = T - W - S: the time the rank worked
    c = SM clock / max SM clock (NVML), so the peak at the current clock is peak x c
        (monitor.hardware.detect.peak_at_clock: peak x min(1, clock / max clock))
    H, F = hardware FLOPs (with recomputation) and model FLOPs

and, summed over the steps and divided by the summed capacity, the points of the gap in a fixed order:

    input_wait    = W x peak / capacity
    stragglers    = S x peak / capacity
    throttling    = R x (1 - c) x peak / capacity
    recomputation = (H - F) / capacity                       (HFU - MFU)
    unexplained   = R x c x peak / capacity - H / capacity   (kernel efficiency, communication, the rest)

These five add up to exactly 1 - MFU (MFU = F / capacity). ``padding`` is not part of the gap: the monitor's
model FLOPs include padding tokens (the device computed them), so padding lowers the *useful* MFU instead:
padding = F x (1 - real / processed tokens) / capacity, and useful_mfu = MFU - padding. So the five causes,
padding and the useful MFU together add up to 1.

Unknown values (NaN or None: no forward hook, one rank only, no NVML, no attention mask) count as zero for
that step, so their time stays in ``unexplained``; a cause unknown for every step is None, never 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

# The causes of the gap in waterfall order (they and "unexplained" sum to 1 - MFU), then padding (within MFU).
CAUSES: tuple[str, ...] = ("input_wait", "stragglers", "throttling", "recomputation")
GAP_PARTS: tuple[str, ...] = (*CAUSES, "unexplained")
LABELS: tuple[str, ...] = (*GAP_PARTS, "padding")  # the `cause` label values of training_mfu_loss_ratio

# How the live view and the report name each cause.
TITLES: dict[str, str] = {
    "input_wait": "input pipeline",
    "stragglers": "waiting for slower ranks",
    "throttling": "clock throttling",
    "recomputation": "recomputation",
    "unexplained": "unexplained (kernels, communication)",
    "padding": "padding tokens",
}
# What a cause's points are a share of: the time causes are shares of step time exactly (W / T, S / T);
# throttling is step time at the reduced clock; recomputation and padding are shares of the peak FLOPs.
OF_WHAT: dict[str, str] = {
    "input_wait": "of step time",
    "stragglers": "of step time",
    "throttling": "of step time (lost clock)",
    "recomputation": "of peak FLOPs",
    "unexplained": "of peak FLOPs",
    "padding": "of peak FLOPs",
}


@dataclass(frozen=True)
class MfuLoss:
    """Points (fractions of the peak) of the MFU gap per cause; None = not measured."""

    mfu: float
    input_wait: float | None
    stragglers: float | None
    throttling: float | None
    recomputation: float | None
    unexplained: float
    padding: float | None
    useful_mfu: float | None  # MFU minus padding; None without an attention mask

    def shares(self) -> dict[str, float | None]:
        """Cause -> points, in LABELS order."""
        return {name: getattr(self, name) for name in LABELS}

    def largest(self) -> tuple[str, float] | None:
        """The measured cause (not unexplained) that costs the most, or None when none costs anything."""
        measured = [(n, v) for n in (*CAUSES, "padding") if (v := getattr(self, n)) is not None and v > 0]
        return max(measured, key=lambda item: item[1]) if measured else None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _column(values: ArrayLike | None, n: int) -> NDArray[np.float64] | None:
    """A per-step float column (a scalar is broadcast); None when absent or unknown everywhere."""
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"expected {n} values, got shape {arr.shape}")
    return None if not np.isfinite(arr).any() else arr


def _known(arr: NDArray[np.float64] | None, default: float, n: int) -> NDArray[np.float64]:
    """Unknown entries (NaN, or the whole column absent) replaced by ``default``."""
    if arr is None:
        return np.full(n, default)
    return np.where(np.isfinite(arr), arr, default)


def attribute(
    seconds: ArrayLike,
    peak: ArrayLike,
    model_flops: ArrayLike,
    *,
    hardware_flops: ArrayLike | None = None,
    input_wait: ArrayLike | None = None,
    straggler_wait: ArrayLike | None = None,
    clock_ratio: ArrayLike | None = None,
    real_fraction: ArrayLike | None = None,
) -> MfuLoss | None:
    """Split 1 - MFU of a set of steps into causes (module docstring). One entry per step (per rank);
    scalars broadcast. ``real_fraction`` = real / processed tokens. None when the capacity (seconds x peak)
    is unknown or zero — no MFU, no split."""
    secs = np.atleast_1d(np.asarray(seconds, dtype=np.float64))
    n = secs.shape[0]
    peaks = _column(peak, n)
    flops = _column(model_flops, n)
    if peaks is None or flops is None:
        return None
    ok = np.isfinite(secs) & np.isfinite(peaks) & np.isfinite(flops) & (secs > 0) & (peaks > 0)
    if not ok.any():
        return None
    secs, peaks, flops = secs[ok], peaks[ok], np.maximum(flops[ok], 0.0)
    capacity = float((secs * peaks).sum())
    if not capacity > 0:
        return None

    def pick(values: ArrayLike | None) -> NDArray[np.float64] | None:
        col = _column(values, n)
        if col is None:
            return None
        col = col[ok]
        return col if np.isfinite(col).any() else None

    wait_col, strag_col, clock_col = pick(input_wait), pick(straggler_wait), pick(clock_ratio)
    hw_col, real_col = pick(hardware_flops), pick(real_fraction)

    # Times, each clamped into what is left of the step, so that no cause can exceed its step.
    m = secs.shape[0]
    wait = np.clip(_known(wait_col, 0.0, m), 0.0, secs)
    strag = np.clip(_known(strag_col, 0.0, m), 0.0, secs - wait)
    work = secs - wait - strag
    clock = np.clip(_known(clock_col, 1.0, m), 0.0, 1.0)
    # hardware FLOPs never below the model FLOPs; unknown -> the model FLOPs (no recomputation seen)
    hardware = flops if hw_col is None else np.maximum(np.where(np.isfinite(hw_col), hw_col, flops), flops)

    mfu = float(flops.sum()) / capacity
    input_pts = float((wait * peaks).sum()) / capacity
    strag_pts = float((strag * peaks).sum()) / capacity
    throttle_pts = float((work * (1.0 - clock) * peaks).sum()) / capacity
    recompute_pts = float((hardware - flops).sum()) / capacity
    at_clock = float((work * clock * peaks).sum()) / capacity
    unexplained = at_clock - float(np.sum(hardware)) / capacity

    padding = useful = None
    if real_col is not None:
        real = np.clip(_known(real_col, 1.0, m), 0.0, 1.0)
        padding = float((flops * (1.0 - real)).sum()) / capacity
        useful = mfu - padding
    return MfuLoss(
        mfu=mfu,
        input_wait=input_pts if wait_col is not None else None,
        stragglers=strag_pts if strag_col is not None else None,
        throttling=throttle_pts if clock_col is not None else None,
        recomputation=recompute_pts if hw_col is not None else None,
        unexplained=unexplained,
        padding=padding,
        useful_mfu=useful,
    )


def verdict(loss: MfuLoss | None) -> str:
    """One line naming the largest measured cause: "input pipeline: 22% of step time"."""
    if loss is None:
        return "MFU loss: unknown (no peak or no FLOPs model)"
    top = loss.largest()
    if top is None:
        return f"no measured cause; {TITLES['unexplained']}: {loss.unexplained:.0%} of peak FLOPs"
    name, value = top
    return f"{TITLES[name]}: {value:.0%} {OF_WHAT[name]}"


def clock_ratio(sm_clock_hz: float | None, max_sm_clock_hz: float | None) -> float | None:
    """SM clock over its maximum, capped at 1 (detect.peak_at_clock's factor); None if either is unknown."""
    if not sm_clock_hz or not max_sm_clock_hz or sm_clock_hz < 0 or max_sm_clock_hz <= 0:
        return None
    return min(1.0, float(sm_clock_hz) / float(max_sm_clock_hz))
