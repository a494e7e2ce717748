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


@dataclass(frozen=True)
class LossSums:
    """The sums the split is made of (FLOPs, or seconds x peak), over any set of steps; sums of parts add up
    (``+``), so a long run can be summed a chunk at a time. ``known`` holds the causes some step measured."""

    capacity: float = 0.0  # sum of seconds x peak
    model: float = 0.0  # sum of model FLOPs
    hardware: float = 0.0  # sum of hardware FLOPs (the model FLOPs where unknown)
    input_wait: float = 0.0
    stragglers: float = 0.0
    throttling: float = 0.0
    at_clock: float = 0.0  # sum of work seconds x clock ratio x peak
    padding: float = 0.0
    known: frozenset[str] = frozenset()

    def __add__(self, other: LossSums) -> LossSums:
        fields = ("capacity", "model", "hardware", "input_wait", "stragglers", "throttling", "at_clock",
                  "padding")  # fmt: skip
        values = {f: getattr(self, f) + getattr(other, f) for f in fields}
        return LossSums(**values, known=self.known | other.known)


def loss_sums(
    seconds: ArrayLike,
    peak: ArrayLike,
    model_flops: ArrayLike,
    *,
    hardware_flops: ArrayLike | None = None,
    input_wait: ArrayLike | None = None,
    straggler_wait: ArrayLike | None = None,
    clock_ratio: ArrayLike | None = None,
    real_fraction: ArrayLike | None = None,
) -> LossSums:
    """The sums of the module docstring's terms over some steps (one entry per step and rank; scalars
    broadcast; NaN = unknown). Steps without a positive time and peak are left out."""
    secs = np.atleast_1d(np.asarray(seconds, dtype=np.float64))
    n = secs.shape[0]
    peaks = _column(peak, n)
    flops = _column(model_flops, n)
    if peaks is None or flops is None or n == 0:
        return LossSums()
    ok = np.isfinite(secs) & np.isfinite(peaks) & np.isfinite(flops) & (secs > 0) & (peaks > 0)
    every = bool(ok.all())
    if not every:
        secs, peaks, flops = secs[ok], peaks[ok], flops[ok]
    if secs.shape[0] == 0:
        return LossSums()
    flops = np.maximum(flops, 0.0)

    def pick(values: ArrayLike | None) -> NDArray[np.float64] | None:
        col = _column(values, n)
        if col is None:
            return None
        if not every:
            col = col[ok]
        return col if np.isfinite(col).any() else None

    wait_col, strag_col, clock_col = pick(input_wait), pick(straggler_wait), pick(clock_ratio)
    hw_col, real_col = pick(hardware_flops), pick(real_fraction)
    known = {
        name
        for name, col in (("input_wait", wait_col), ("stragglers", strag_col), ("throttling", clock_col),
                          ("recomputation", hw_col), ("padding", real_col))
        if col is not None
    }  # fmt: skip

    # Times, each clamped into what is left of the step, so that no cause can exceed its step.
    m = secs.shape[0]
    wait = np.clip(_known(wait_col, 0.0, m), 0.0, secs)
    strag = np.clip(_known(strag_col, 0.0, m), 0.0, secs - wait)
    work = secs - wait - strag
    clock = np.clip(_known(clock_col, 1.0, m), 0.0, 1.0)
    # hardware FLOPs never below the model FLOPs; unknown -> the model FLOPs (no recomputation seen)
    hardware = flops if hw_col is None else np.maximum(np.where(np.isfinite(hw_col), hw_col, flops), flops)
    padding = 0.0
    if real_col is not None:
        real = np.clip(_known(real_col, 1.0, m), 0.0, 1.0)
        padding = float((flops * (1.0 - real)).sum())
    return LossSums(
        capacity=float((secs * peaks).sum()),
        model=float(flops.sum()),
        hardware=float(hardware.sum()),
        input_wait=float((wait * peaks).sum()),
        stragglers=float((strag * peaks).sum()),
        throttling=float((work * (1.0 - clock) * peaks).sum()),
        at_clock=float((work * clock * peaks).sum()),
        padding=padding,
        known=frozenset(known),
    )


def split(sums: LossSums) -> MfuLoss | None:
    """The sums as points of the peak (module docstring); None when the capacity is zero (no MFU)."""
    capacity = sums.capacity
    if not capacity > 0:
        return None
    mfu = sums.model / capacity

    def points(name: str, value: float) -> float | None:
        return value / capacity if name in sums.known else None

    padding = points("padding", sums.padding)
    return MfuLoss(
        mfu=mfu,
        input_wait=points("input_wait", sums.input_wait),
        stragglers=points("stragglers", sums.stragglers),
        throttling=points("throttling", sums.throttling),
        recomputation=points("recomputation", sums.hardware - sums.model),
        unexplained=(sums.at_clock - sums.hardware) / capacity,
        padding=padding,
        useful_mfu=None if padding is None else mfu - padding,
    )


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
    """Split 1 - MFU of a set of steps into causes (module docstring): ``split(loss_sums(...))``. One entry
    per step (per rank); scalars broadcast; ``real_fraction`` = real / processed tokens. None when the
    capacity (seconds x peak) is unknown or zero — no MFU, no split."""
    return split(
        loss_sums(
            seconds,
            peak,
            model_flops,
            hardware_flops=hardware_flops,
            input_wait=input_wait,
            straggler_wait=straggler_wait,
            clock_ratio=clock_ratio,
            real_fraction=real_fraction,
        )
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
