"""Pure functions over step arrays: distributions, runs of low MFU, stalls, stragglers (numpy only, no
I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]
Bools = NDArray[np.bool_]


def distribution(values: Floats) -> dict[str, float | None]:
    """mean, median, p10, p90, min, max of the finite values (None for all when there are none).

    Percentiles by linear interpolation between order statistics (numpy's default, Hyndman & Fan type 7).
    """
    finite = values[np.isfinite(values)]
    if finite.shape[0] == 0:
        return {"mean": None, "median": None, "p10": None, "p90": None, "min": None, "max": None}
    p10, median, p90 = np.percentile(finite, [10, 50, 90])
    return {
        "mean": float(finite.mean()),
        "median": float(median),
        "p10": float(p10),
        "p90": float(p90),
        "min": float(finite.min()),
        "max": float(finite.max()),
    }


def true_runs(mask: Bools) -> tuple[Ints, Ints]:
    """Start and end indices (both inclusive) of each maximal run of consecutive True values."""
    if mask.shape[0] == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    change = np.diff(padded)
    starts = np.flatnonzero(change == 1)
    ends = np.flatnonzero(change == -1) - 1
    return starts.astype(np.int64), ends.astype(np.int64)


@dataclass(frozen=True)
class Episode:
    """A maximal run of consecutive measured steps whose MFU is below the threshold."""

    first: int  # row index of the first step
    last: int  # row index of the last step
    seconds: float  # step time summed over the episode
    mean_mfu: float  # sum(FLOPs) / sum(step time x peak) over the episode


def low_mfu_episodes(
    mfu: Floats, threshold: float, seconds: Floats, flops: Floats, peak: Floats
) -> list[Episode]:
    """Episodes of MFU < threshold over consecutive rows (rows with unknown MFU break an episode)."""
    below = np.isfinite(mfu) & (mfu < threshold)
    starts, ends = true_runs(below)
    if starts.shape[0] == 0:
        return []
    cum_seconds = np.concatenate(([0.0], np.cumsum(seconds)))
    cum_flops = np.concatenate(([0.0], np.cumsum(flops)))
    cum_capacity = np.concatenate(([0.0], np.cumsum(np.where(below, seconds * peak, 0.0))))
    out = []
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        secs = float(cum_seconds[end + 1] - cum_seconds[start])
        capacity = float(cum_capacity[end + 1] - cum_capacity[start])
        achieved = float(cum_flops[end + 1] - cum_flops[start])
        out.append(Episode(start, end, secs, achieved / capacity if capacity > 0 else math.nan))
    return out


@dataclass(frozen=True)
class Stall:
    """A step whose wall interval since the previous step ended is far beyond the typical step."""

    row: int  # row index of the step that ended the gap
    interval: float  # seconds from the previous step's end to this step's end
    expected: float  # typical interval for this row (median per-step interval x steps covered)


def stalls(time_end: Floats, seconds: Floats, span: Ints, factor: float) -> list[Stall]:
    """Rows whose end-to-end interval exceeds ``factor`` x the median per-step interval.

    The interval of row i is time_end[i] - time_end[i-1] (the first row: its own step time), so it catches
    time lost both inside a step (a hang, a slow collective) and between steps (checkpointing, evaluation,
    data loading).
    """
    n = time_end.shape[0]
    if n == 0:
        return []
    interval = np.empty(n)
    interval[0] = seconds[0]
    interval[1:] = np.diff(time_end)
    per_step = interval / span
    typical = float(np.median(per_step[np.isfinite(per_step)])) if n else math.nan
    if not typical > 0:
        return []
    expected = typical * span
    rows = np.flatnonzero(interval > factor * expected)
    return [Stall(int(r), float(interval[r]), float(expected[r])) for r in rows.tolist()]


@dataclass(frozen=True)
class RankStats:
    rank: int
    steps: int
    median_seconds: float
    mean_seconds: float
    slowest_share: float  # share of the multi-rank steps in which this rank had the longest step time
    relative: float  # median_seconds / lower median over ranks of median_seconds


def rank_stats(rec_rank: Ints, rec_seconds: Floats, slowest_rank: Ints, nranks: Ints) -> list[RankStats]:
    """Per-rank step-time figures from per-record arrays (see ``rank_stats_from``)."""
    if rec_rank.shape[0] == 0:
        return []
    order = np.lexsort((rec_seconds, rec_rank))
    ranks_sorted = rec_rank[order]
    secs_sorted = rec_seconds[order]
    ranks, starts, counts = np.unique(ranks_sorted, return_index=True, return_counts=True)
    figures = []
    for rank, start, count in zip(ranks.tolist(), starts.tolist(), counts.tolist(), strict=True):
        chunk = secs_sorted[start : start + count]  # already sorted within the rank
        figures.append((rank, count, float(np.median(chunk)), float(chunk.mean())))
    return rank_stats_from(figures, slowest_rank, nranks)


def rank_stats_from(
    figures: list[tuple[int, int, float, float]], slowest_rank: Ints, nranks: Ints
) -> list[RankStats]:
    """Per-rank step-time figures from each rank's (rank, records, median, mean step seconds), by rank, and
    the step table's slowest rank and rank count per step; ``relative`` compares each rank's median step
    time to the ranks' median."""
    if not figures:
        return []
    multi = nranks > 1
    multi_steps = int(multi.sum())
    slow_ranks, slow_n = np.unique(slowest_rank[multi], return_counts=True)
    slow_counts = dict(zip(slow_ranks.tolist(), slow_n.tolist(), strict=True))
    medians = [median for _, _, median, _ in figures]
    # the lower median: with two ranks, the faster one (a plain median would split the difference and halve
    # the straggler's excess); with many ranks, about the median
    overall = float(np.percentile(medians, 50, method="lower"))
    return [
        RankStats(
            rank=rank,
            steps=count,
            median_seconds=median,
            mean_seconds=mean,
            slowest_share=float(slow_counts.get(rank, 0)) / multi_steps if multi_steps else math.nan,
            relative=median / overall if overall > 0 else math.nan,
        )
        for rank, count, median, mean in figures
    ]
