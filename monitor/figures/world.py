"""Run-wide figures from each rank's snapshot (what one all-reduce at a log tick sums and maximises), and the
window's MFU loss split, which needs the slowest rank's pre-backward time from that reduce.

Pure: the caller does the all-reduce (``live/distributed.py``) and passes its results in.
"""

from __future__ import annotations

import math

from monitor.figures.attribution import MfuLoss, attribute
from monitor.figures.snapshot import Snapshot, WorldFigures
from monitor.figures.window import StepSample, utilization


def own_pre_backward(snap: Snapshot) -> float | None:
    """This rank's mean pre-backward seconds over its recent post-warm-up steps (None if none measured)."""
    own = [x.pre_backward_seconds for x in snap.recent if not x.warmup and x.pre_backward_seconds is not None]
    return math.fsum(own) / len(own) if own else None


def rank_contribution(snap: Snapshot) -> tuple[dict[str, float], dict[str, float]]:
    """(values to sum, values to take the maximum of) over ranks, from this rank's snapshot. Unknown figures
    enter the sums as 0 with a matching ``*_known``/``*_rated`` count, so the run can tell "every rank knows"
    from "some rank does not"."""
    peak = snap.peak_flops_per_second
    busy = own_pre_backward(snap)
    sums = {
        "tokens_total": float(snap.tokens_total),
        "model_flops_total": snap.model_flops_total,
        "tokens_per_second": snap.tokens_per_second or 0.0,
        "model_flops_per_second": snap.model_flops_per_second or 0.0,
        "peak": peak or 0.0,
        "known": 1.0 if peak else 0.0,
        "pre_backward_seconds": busy or 0.0,
        "pre_backward_known": 1.0 if busy is not None else 0.0,
        "tokens_rated": 1.0 if snap.tokens_per_second else 0.0,
        "flops_rated": 1.0 if snap.model_flops_per_second else 0.0,
    }
    maxes = {"step_seconds": snap.step_seconds or 0.0, "pre_backward_seconds": busy or 0.0}
    return sums, maxes


def world_figures(
    sums: dict[str, float], maxes: dict[str, float], *, world_size: int, as_of_step: int
) -> WorldFigures:
    """The run's figures from the summed and maximised rank contributions.

    Run MFU = sum of model FLOP rates / sum of peaks. A run-wide rate exists only once every rank has a
    windowed rate: a rank still in warm-up would otherwise add 0 and make the run read slow (no number rather
    than a wrong one); likewise the peak sum needs every rank's peak."""
    n = world_size
    peak_sum = sums["peak"] if round(sums["known"]) == n else None
    busy_all = round(sums["pre_backward_known"]) == n  # every rank measured its pre-backward time
    mfps = sums["model_flops_per_second"] if round(sums["flops_rated"]) == n else None
    tps = sums["tokens_per_second"] if round(sums["tokens_rated"]) == n else None
    return WorldFigures(
        as_of_step=as_of_step,
        world_size=n,
        tokens_total=int(sums["tokens_total"]),
        model_flops_total=sums["model_flops_total"],
        tokens_per_second=tps,
        model_flops_per_second=mfps,
        peak_flops_per_second=peak_sum,
        mfu=utilization(mfps, peak_sum),
        max_step_seconds=maxes["step_seconds"] if maxes["step_seconds"] > 0 else None,
        # the slowest rank's pre-backward time, when every rank measured one
        max_pre_backward_seconds=maxes["pre_backward_seconds"] if busy_all else None,
        mean_pre_backward_seconds=sums["pre_backward_seconds"] / n if busy_all else None,
    )


def window_mfu_loss(
    window: list[StepSample],
    peak: float | None,
    *,
    world: WorldFigures | None,
    clock_ratio: float | None,
) -> MfuLoss | None:
    """The window's MFU gap split into causes (``attribution.attribute``): input wait and padding from the
    steps, throttling from the last NVML clock reading, stragglers from the last all-reduce."""
    if not window or peak is None:
        return None
    nan = math.nan
    straggler = None
    own = [s.pre_backward_seconds for s in window if s.pre_backward_seconds is not None]
    if world is not None and world.max_pre_backward_seconds is not None and own:
        # this rank waited, each step, for the slowest rank's pre-backward work (window means)
        straggler = max(0.0, world.max_pre_backward_seconds - math.fsum(own) / len(own))
    return attribute(
        [s.seconds for s in window],
        peak,
        [s.model_flops for s in window],
        hardware_flops=[s.hardware_flops for s in window],
        input_wait=[nan if s.input_wait_seconds is None else s.input_wait_seconds for s in window],
        straggler_wait=straggler,
        clock_ratio=clock_ratio,
        real_fraction=[
            nan if s.real_tokens is None or not s.tokens else s.real_tokens / s.tokens for s in window
        ],
    )
