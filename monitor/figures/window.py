"""Windowed rates over resolved steps: pure functions of plain values (no torch, no clocks).

A step's ``seconds`` is the time from the previous step's end to this step's end (the first step: from its
first forward), so data loading and any other host work between steps count: throughput is what the run
achieved. MFU follows PaLM (Chowdhery et al. 2022, appendix B): achieved model FLOP/s over the device's peak
FLOP/s, with model FLOPs = tokens × training FLOPs per token (no recomputation); HFU uses the hardware FLOPs
(with recomputation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple


class StepSample(NamedTuple):
    """One completed step on this rank, as the monitor resolved it at log or scrape time (a tuple: cheap to
    make once per step)."""

    step: int  # 0-based index of the optimizer step on this rank
    tokens: int  # tokens processed (padding included: the device computed them)
    real_tokens: int | None  # non-padding tokens from attention_mask; None without a mask
    seq_len: int | None
    seconds: float  # previous step end -> this step end (device time on CUDA, host clock on CPU)
    end_time: float  # unix seconds at step end (host clock)
    forward_start_time: (
        float | None
    )  # unix seconds at this step's first forward (host clock); None in manual mode
    input_wait_seconds: (
        float | None
    )  # previous step end -> this step's first forward (host): waiting for data
    model_flops: float  # tokens × training FLOPs per token
    hardware_flops: float  # tokens × hardware FLOPs per token (with recomputation when configured)
    warmup: bool  # left out of rates
    # host time from the first forward to the start of the last backward (the work before the gradient sync,
    # where faster ranks wait for the slowest); None when not seen (CUDA, manual mode without a forward)
    pre_backward_seconds: float | None = None


@dataclass(frozen=True)
class Rates:
    steps: int
    tokens: int
    seconds: float
    tokens_per_second: float | None
    model_flops_per_second: float | None
    hardware_flops_per_second: float | None
    step_seconds: float | None  # mean step time in the window


EMPTY = Rates(0, 0, 0.0, None, None, None, None)


def select_window(
    samples: Sequence[StepSample], *, max_steps: int, max_age_seconds: float, now: float
) -> list[StepSample]:
    """The last ``max_steps`` post-warm-up steps that ended within ``max_age_seconds`` of ``now`` (unix s).

    The most recent post-warm-up step is always kept, so a run with steps longer than the time window still
    has a rate; a stalled run shows through ``seconds_since_last_step`` and the last-step timestamp, not
    through a zero rate.
    """
    live = [s for s in samples if not s.warmup]
    if not live:
        return []
    recent = live[-max_steps:] if max_steps > 0 else live
    inside = [s for s in recent if now - s.end_time <= max_age_seconds]
    return inside or [recent[-1]]


def rates(samples: Iterable[StepSample]) -> Rates:
    """Sums over durations, never a mean of per-step rates (a slow step weighs what it cost)."""
    n = tokens = 0
    seconds = model = hardware = 0.0
    for s in samples:
        n += 1
        tokens += s.tokens
        seconds += s.seconds
        model += s.model_flops
        hardware += s.hardware_flops
    if n == 0 or seconds <= 0.0:
        return Rates(n, tokens, seconds, None, None, None, None)
    return Rates(n, tokens, seconds, tokens / seconds, model / seconds, hardware / seconds, seconds / n)


def utilization(flops_per_second: float | None, peak_flops_per_second: float | None) -> float | None:
    """Achieved over peak (PaLM appendix B); None when either is unknown: no number beats a wrong one."""
    if flops_per_second is None or peak_flops_per_second is None or peak_flops_per_second <= 0:
        return None
    value = flops_per_second / peak_flops_per_second
    return value if math.isfinite(value) else None


def eta_seconds(tokens_done: int, token_budget: int | None, tokens_per_second: float | None) -> float | None:
    """Seconds until ``token_budget`` tokens at the current rate; None without a budget or a rate."""
    if token_budget is None or not tokens_per_second or tokens_per_second <= 0:
        return None
    return max(0.0, (token_budget - tokens_done) / tokens_per_second)


# Step-duration histogram buckets (seconds): a 1-2.5-5 ladder from 1 ms to 10 min, wide enough for a
# tiny CPU step and a large pipeline-parallel step alike.
STEP_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
