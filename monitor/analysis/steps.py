"""Merge a run's step records over ranks into one row per step index (numpy, vectorised).

Conventions (../shared/CONTRACTS.md, "analyze"):
- a step's wall time is the slowest rank's ``step_seconds`` (the step is done when the last rank is);
- a step's tokens and model FLOPs are the sums over the ranks that reported it;
- a step's MFU is sum(model FLOPs) / (step time x sum(peak FLOP/s of those ranks)) — the ratio of the sums,
  never the mean of per-rank ratios (PaLM, Chowdhery et al. 2022, appendix B: achieved model FLOP/s over peak
  FLOP/s);
- the same (rank, step) twice: the first record read is kept, the others counted as ``repeated_step``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitor.analysis.read import RunLog

Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


@dataclass(frozen=True)
class StepTable:
    """One row per step index, sorted by step; plus the deduplicated per-record columns for per-rank
    analysis."""

    step: Ints  # step index (the last optimizer step a row covers)
    span: Ints  # optimizer steps the row covers (1 unless imported from a tool that logs every N steps)
    time_end: Floats  # unix seconds the step ended (latest rank)
    seconds: Floats  # step wall time: the slowest rank's step_seconds
    tokens: Floats  # sum over ranks
    flops: Floats  # model FLOPs, sum over ranks
    peak: Floats  # sum of the reporting ranks' peak FLOP/s; NaN if any of them is unknown
    nranks: Ints  # ranks that reported the step
    slowest_rank: Ints  # rank with the longest step_seconds
    # per record (deduplicated, sorted by step then rank)
    rec_rank: Ints
    rec_step_row: Ints  # row of the step table each record belongs to
    rec_seconds: Floats
    repeated: int  # records dropped as repeats of a (rank, step) already seen

    def __len__(self) -> int:
        return int(self.step.shape[0])

    @property
    def mfu(self) -> Floats:
        """Per-step MFU (NaN where the peak is unknown or the step took no time)."""
        denominator = self.seconds * self.peak
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self.flops / denominator
        out[~(denominator > 0)] = np.nan
        return out

    @property
    def tokens_per_second(self) -> Floats:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self.tokens / self.seconds
        out[~(self.seconds > 0)] = np.nan
        return out

    @property
    def time_start(self) -> Floats:
        return self.time_end - self.seconds


def peaks_by_rank(log: RunLog, override: float | None = None) -> dict[int, float]:
    """Peak FLOP/s each rank's records stand for: run_start's per-device peak x its ``devices`` (an import's
    record can stand for several devices), else the peak implied by the records' own mfu, else
    ``override``."""
    peaks: dict[int, float] = {}
    ranks = set(log.starts) | set(log.derived_peaks)
    for rank in ranks:
        start = log.starts.get(rank, {})
        devices = start.get("devices", 1)
        devices = devices if isinstance(devices, int) and devices >= 1 else 1
        peak = start.get("peak_flops_per_second")
        if isinstance(peak, (int, float)) and peak > 0:
            peaks[rank] = float(peak) * devices
        elif rank in log.derived_peaks:
            peaks[rank] = log.derived_peaks[rank]
        elif override is not None:
            peaks[rank] = override * devices
    return peaks


def build_step_table(log: RunLog, peak_override: float | None = None) -> StepTable:
    """Merge the run's records by step index. ``peak_override`` (FLOP/s per device) fills ranks without a
    peak."""
    cols = log.columns
    rank = np.frombuffer(cols.rank, dtype=np.int64) if len(cols) else np.zeros(0, np.int64)
    step = np.frombuffer(cols.step, dtype=np.int64) if len(cols) else np.zeros(0, np.int64)
    time = np.frombuffer(cols.time, dtype=np.float64) if len(cols) else np.zeros(0)
    tokens = np.frombuffer(cols.tokens, dtype=np.float64) if len(cols) else np.zeros(0)
    seconds = np.frombuffer(cols.seconds, dtype=np.float64) if len(cols) else np.zeros(0)
    flops = np.frombuffer(cols.flops, dtype=np.float64) if len(cols) else np.zeros(0)
    span = np.frombuffer(cols.span, dtype=np.int64) if len(cols) else np.zeros(0, np.int64)

    # sort by step, then rank, then arrival (lexsort is stable and sorts by the last key first)
    order = np.lexsort((np.arange(rank.shape[0]), rank, step))
    rank, step = rank[order], step[order]
    first = np.ones(order.shape[0], dtype=bool)
    if order.shape[0] > 1:
        first[1:] = (step[1:] != step[:-1]) | (rank[1:] != rank[:-1])
    keep = order[first]
    repeated = int(order.shape[0] - keep.shape[0])
    rank, step = rank[first], step[first]
    time, tokens, seconds, flops, span = time[keep], tokens[keep], seconds[keep], flops[keep], span[keep]

    peak_of = peaks_by_rank(log, peak_override)
    if peak_of:
        known_ranks = np.fromiter(peak_of.keys(), dtype=np.int64, count=len(peak_of))
        known_peaks = np.fromiter(peak_of.values(), dtype=np.float64, count=len(peak_of))
        sorter = np.argsort(known_ranks)
        known_ranks, known_peaks = known_ranks[sorter], known_peaks[sorter]
        pos = np.clip(np.searchsorted(known_ranks, rank), 0, known_ranks.shape[0] - 1)
        peak = np.where(known_ranks[pos] == rank, known_peaks[pos], np.nan)
    else:
        peak = np.full(rank.shape[0], np.nan)

    n = step.shape[0]
    if n == 0:
        empty_f = np.zeros(0)
        empty_i = np.zeros(0, np.int64)
        return StepTable(
            *(empty_i, empty_i, empty_f, empty_f, empty_f, empty_f, empty_f, empty_i, empty_i),
            rec_rank=empty_i,
            rec_step_row=empty_i,
            rec_seconds=empty_f,
            repeated=repeated,
        )
    boundary = np.ones(n, dtype=bool)
    boundary[1:] = step[1:] != step[:-1]
    starts = np.flatnonzero(boundary)
    row = np.cumsum(boundary) - 1

    step_seconds = np.maximum.reduceat(seconds, starts)
    # slowest rank: within each step, the record whose seconds equals the max (first such rank)
    is_max = seconds == step_seconds[row]
    idx = np.flatnonzero(is_max)
    slow_rows, first_idx = np.unique(row[idx], return_index=True)
    slowest = np.zeros(starts.shape[0], dtype=np.int64)
    slowest[slow_rows] = rank[idx[first_idx]]

    return StepTable(
        step=step[starts],
        span=np.maximum.reduceat(span, starts),
        time_end=np.maximum.reduceat(time, starts),
        seconds=step_seconds,
        tokens=np.add.reduceat(tokens, starts),
        flops=np.add.reduceat(flops, starts),
        peak=np.add.reduceat(peak, starts),
        nranks=np.diff(np.append(starts, n)),
        slowest_rank=slowest,
        rec_rank=rank,
        rec_step_row=row,
        rec_seconds=seconds,
        repeated=repeated,
    )
