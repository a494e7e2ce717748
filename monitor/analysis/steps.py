"""Merge a run's step records over ranks into one row per step index: the step table and its conventions.

``mfu analyze`` merges in its engine (``monitor.analysis.engine``, the same conventions in SQL); the numpy
merge here (``build_step_table``, over the reference reader's columns) is the reference it is tested against.

Conventions (``mfu analyze``'s documented contract):
- a step's wall time is the slowest rank's ``step_seconds`` (the step is done when the last rank is);
- a step's tokens and model FLOPs are the sums over the ranks that reported it;
- a step's MFU is sum(model FLOPs) / (step time x sum(peak FLOP/s of those ranks)) — the ratio of the sums,
  never the mean of per-rank ratios (PaLM, Chowdhery et al. 2022, appendix B: achieved model FLOP/s over peak
  FLOP/s);
- the same (rank, step) twice: the first record read is kept, the others counted as ``repeated_step``.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from monitor.analysis.read import RunLog, StepColumns

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
    repeated: int = 0  # records dropped as repeats of a (rank, step) already seen
    # per record (deduplicated, sorted by step then rank): kept by the in-memory merge below only; the
    # engine's merge (``monitor.analysis.engine``) keeps records in its database instead
    rec_rank: Ints | None = None
    rec_step_row: Ints | None = None  # row of the step table each record belongs to
    rec_seconds: Floats | None = None
    # where each kept record sits in the run's columns (for the optional fields of the MFU-loss split)
    rec_index: Ints | None = None
    columns: StepColumns | None = None
    # peak FLOP/s per rank the rows' ``peak`` sums (``peaks_by_rank``); ranks without one are absent
    rank_peaks: dict[int, float] = field(default_factory=dict)

    def rec_column(self, name: str, start: int = 0, stop: int | None = None) -> Floats | None:
        """Records ``start:stop`` (record order) of a float column (``StepColumns`` attribute), NaN where a
        record has no value; None when no record of the run has one (an optional field no record carries)."""
        if self.columns is None or self.rec_index is None:
            return None
        index = self.rec_index[start:stop]
        if name in ("tokens", "flops", "seconds", "time"):
            return np.frombuffer(getattr(self.columns, name), dtype=np.float64)[index]
        if not len(getattr(self.columns, name)):
            return None
        return self.columns.optional(name)[index]

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
    peak.

    Memory: the columns are viewed in place (``np.frombuffer``) and each is gathered into sorted order only
    while it is being reduced, so the peak stays near three 8-byte arrays per record beside the columns."""
    cols = log.columns
    peak_of = peaks_by_rank(log, peak_override)
    if len(cols) == 0:
        empty_f = np.zeros(0)
        empty_i = np.zeros(0, np.int64)
        return StepTable(
            *(empty_i, empty_i, empty_f, empty_f, empty_f, empty_f, empty_f, empty_i, empty_i),
            rec_rank=empty_i,
            rec_step_row=empty_i,
            rec_seconds=empty_f,
            repeated=0,
            rank_peaks=peak_of,
        )
    rank = np.frombuffer(cols.rank, dtype=np.int64)
    step = np.frombuffer(cols.step, dtype=np.int64)

    # sort by step, then rank, then arrival: a stable sort on one combined key (rank < 2**20, step < 2**43)
    if int(rank.max()) >= 1 << 20 or int(step.max()) >= 1 << 43:
        order = np.lexsort((rank, step))  # stable too, slower
    else:
        order = np.argsort((step << 20) | rank, kind="stable")
    sorted_step = step[order]
    sorted_rank = rank[order]
    first = np.ones(order.shape[0], dtype=bool)
    first[1:] = (sorted_step[1:] != sorted_step[:-1]) | (sorted_rank[1:] != sorted_rank[:-1])
    keep = order[first]
    del order
    repeated = int(first.shape[0] - keep.shape[0])
    rec_rank = sorted_rank[first]
    sorted_step = sorted_step[first]
    del sorted_rank, first

    n = keep.shape[0]
    boundary = np.ones(n, dtype=bool)
    boundary[1:] = sorted_step[1:] != sorted_step[:-1]
    starts = np.flatnonzero(boundary)
    row = np.cumsum(boundary) - 1
    del boundary
    steps = sorted_step[starts]
    del sorted_step

    def reduce(column: array, ufunc: np.ufunc, dtype: type) -> np.ndarray:
        return ufunc.reduceat(np.frombuffer(column, dtype=dtype)[keep], starts)

    rec_seconds = np.frombuffer(cols.seconds, dtype=np.float64)[keep]
    step_seconds = np.maximum.reduceat(rec_seconds, starts)
    # slowest rank: within each step, the record whose seconds equals the max (first such rank)
    idx = np.flatnonzero(rec_seconds == step_seconds[row])
    slow_rows, first_idx = np.unique(row[idx], return_index=True)
    slowest = np.zeros(starts.shape[0], dtype=np.int64)
    slowest[slow_rows] = rec_rank[idx[first_idx]]
    del idx

    if peak_of:
        known_ranks = np.fromiter(peak_of.keys(), dtype=np.int64, count=len(peak_of))
        known_peaks = np.fromiter(peak_of.values(), dtype=np.float64, count=len(peak_of))
        sorter = np.argsort(known_ranks)
        known_ranks, known_peaks = known_ranks[sorter], known_peaks[sorter]
        pos = np.clip(np.searchsorted(known_ranks, rec_rank), 0, known_ranks.shape[0] - 1)
        peak = np.add.reduceat(np.where(known_ranks[pos] == rec_rank, known_peaks[pos], np.nan), starts)
        del pos
    else:
        peak = np.full(starts.shape[0], np.nan)

    return StepTable(
        step=steps,
        span=reduce(cols.span, np.maximum, np.int64),
        time_end=reduce(cols.time, np.maximum, np.float64),
        seconds=step_seconds,
        tokens=reduce(cols.tokens, np.add, np.float64),
        flops=reduce(cols.flops, np.add, np.float64),
        peak=peak,
        nranks=np.diff(np.append(starts, n)),
        slowest_rank=slowest,
        rec_rank=rec_rank,
        rec_step_row=row,
        rec_seconds=rec_seconds,
        repeated=repeated,
        rec_index=keep,
        columns=cols,
        rank_peaks=peak_of,
    )
