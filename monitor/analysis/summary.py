"""Summaries of logged runs: where the hardware time went (``mfu analyze``).

``analyze(paths, options)`` reads the logs (streaming), merges ranks by step (``monitor.analysis.steps``) and
returns an ``Analysis``: one ``RunSummary`` per run, side by side, plus the skipped-line counts. Each part of
a summary is one small function of the step table (``_throughput``, ``_below_threshold``, ``_stalls``,
``_ranks``, ``_alerts``), so a new section (the MFU-loss split, say) is one more function and one more
field.

Conventions (see docs/analysis.md):
- warm-up: the first ``warmup`` optimizer steps of a run (by step index) are left out of every rate and MFU
  figure, and of episodes and stalls; totals (``steps``, ``tokens``, ``duration_seconds``) count them;
- ``mfu.overall`` = sum(model FLOPs) / sum(step time x peak) over the measured steps (PaLM's MFU, Chowdhery et
  al. 2022, appendix B); ``mfu.wall`` uses wall-clock time instead, so gaps between steps count as idle;
  ``mfu.mean/median/p10/p90`` describe the per-step values;
- ``below_threshold_seconds``: step time of the measured steps whose MFU is below the threshold.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from monitor.analysis.engine import LogStore, expand_paths
from monitor.analysis.episodes import distribution, low_mfu_episodes, rank_stats_from, stalls
from monitor.analysis.read import SKIP_KINDS, RunLog
from monitor.analysis.steps import StepTable
from monitor.errors import InputError
from monitor.figures.attribution import LossSums, MfuLoss, loss_sums, split, verdict
from monitor.figures.tensor_activity import check_mfu_against_tensor_activity

DEFAULT_WARMUP = 10  # steps, for a run whose log does not say its warm-up


@dataclass(frozen=True)
class AnalyzeOptions:
    threshold: float = 0.25
    warmup: int | None = None  # None: each run's logged ``warmup_steps`` (run_start), else DEFAULT_WARMUP
    stall_factor: float = 5.0
    straggler_tolerance: float = 0.10
    peak_flops_per_second: float | None = None  # per device, for ranks whose log has none
    max_listed: int = 50  # episodes / stalls / alerts listed per run (the longest); totals count all
    per_file: bool = False

    def __post_init__(self) -> None:
        if not (0 < self.threshold <= 1):
            raise InputError(
                "--threshold", f"must be a fraction in (0, 1], got {self.threshold}", "e.g. 0.25"
            )
        if self.warmup is not None and self.warmup < 0:
            raise InputError(
                "--warmup", f"must be >= 0 steps, got {self.warmup}", "pass 0 to keep every step"
            )
        if not self.stall_factor > 1:
            raise InputError("--stall-factor", f"must be > 1, got {self.stall_factor}", "e.g. 5")
        if not self.straggler_tolerance > 0:
            raise InputError(
                "--straggler-tolerance",
                f"must be > 0, got {self.straggler_tolerance}",
                "e.g. 0.1 (10% slower)",
            )
        peak = self.peak_flops_per_second
        if peak is not None and not (peak > 0 and math.isfinite(peak)):
            raise InputError(  # the flag is in TFLOP/s, the option in FLOP/s: say it as the user typed it
                "--peak-tflops", f"must be a positive number, got {peak / 1e12:g}", "e.g. 989 for H100 bf16"
            )
        if self.max_listed < 1:
            raise InputError("--max-listed", f"must be >= 1, got {self.max_listed}", "e.g. 50")


class Distribution(BaseModel):
    mean: float | None = None
    median: float | None = None
    p10: float | None = None
    p90: float | None = None
    min: float | None = None
    max: float | None = None


class RateStats(Distribution):
    overall: float | None = Field(None, description="total over step time (MFU: FLOPs over step time x peak)")
    wall: float | None = Field(None, description="total over wall-clock time, gaps between steps included")


class Measured(BaseModel):
    steps: int
    tokens: int
    step_seconds: float
    wall_seconds: float


class MfuLossOut(BaseModel):
    """Points of peak FLOPs lost per cause (docs/attribution.md): input_wait + stragglers + throttling +
    recomputation + unexplained = 1 - mfu exactly; padding is the share of the peak that the MFU counts but
    spent on padding tokens (useful_mfu = mfu - padding). null = not measured in this log."""

    mfu: float
    input_wait: float | None = None
    stragglers: float | None = None
    throttling: float | None = None
    recomputation: float | None = None
    unexplained: float
    padding: float | None = None
    useful_mfu: float | None = None
    largest: str | None = Field(None, description="the measured cause that costs the most")
    verdict: str = ""

    @classmethod
    def of(cls, loss: MfuLoss | None) -> MfuLossOut | None:
        if loss is None:
            return None
        top = loss.largest()
        return cls(**loss.as_dict(), largest=top[0] if top else None, verdict=verdict(loss))


class EpisodeOut(BaseModel):
    start_step: int
    end_step: int
    steps: int
    seconds: float
    mean_mfu: float | None
    start_time: float
    end_time: float
    mfu_loss: MfuLossOut | None = None


class StallOut(BaseModel):
    step: int
    previous_step: int | None
    seconds: float = Field(description="wall time from the previous step's end to this step's end")
    expected_seconds: float
    lost_seconds: float
    time: float


class RankOut(BaseModel):
    rank: int
    steps: int
    median_step_seconds: float
    mean_step_seconds: float
    slowest_share: float | None
    relative_step_time: float | None
    straggler: bool


class TensorActivityOut(BaseModel):
    """The GPU's own tensor-core activity (NVML GPM, written at log ticks) beside the monitor's MFU."""

    records: int = Field(description="measured step records that carry a tensor-activity reading")
    median: float | None = Field(None, description="median tensor activity over those records (0..1)")
    mean: float | None = None
    mfu_median: float | None = Field(None, description="median MFU over the same records")
    mfu_above_records: int = Field(
        0, description="records whose MFU is above their tensor activity by more than 5 points"
    )
    suspect: bool = Field(
        False,
        description="the median MFU is above the median tensor activity by more than 5 points: the FLOPs "
        "model or the peak overcounts",
    )


class AlertsOut(BaseModel):
    count: int = 0
    firing: int = 0
    resolved: int = 0
    items: list[dict[str, Any]] = Field(default_factory=list)


class RunSummary(BaseModel):
    run: str
    files: list[str]
    model: str | None = None
    device: str | None = None
    dtype: str | None = None
    world_size: int | None = None
    ranks: int = 0
    peak_flops_per_second: float | None = Field(None, description="per device, when all ranks agree")
    flops_per_token: float | None = None
    steps: int = Field(0, description="optimizer steps, counted per step index (not per rank record)")
    tokens: int = Field(0, description="over all ranks, warm-up included")
    first_step: int | None = None
    last_step: int | None = None
    duration_seconds: float | None = None
    warmup: int = Field(DEFAULT_WARMUP, description="the warm-up setting used: --warmup, else the log's")
    warmup_source: str = Field("default", description="where `warmup` comes from: option, log or default")
    warmup_steps: int = Field(0, description="steps left out of rates and MFU as warm-up")
    measured_from_step: int | None = Field(None, description="first step index counted after the warm-up")
    measured: Measured | None = None
    step_seconds: Distribution = Field(default_factory=Distribution)
    tokens_per_second: RateStats = Field(default_factory=RateStats)
    mfu: RateStats = Field(default_factory=RateStats)
    mfu_suspect: bool = Field(False, description="a measured step's MFU is above 100%: wrong peak or FLOPs")
    monitor_errors: int = Field(0, description="errors the monitor counted (run_end, summed over ranks)")
    threshold: float
    below_threshold_seconds: float | None = None
    below_threshold_steps: int | None = None
    below_threshold_share: float | None = None
    low_mfu_episodes: list[EpisodeOut] = Field(default_factory=list)
    low_mfu_episodes_total: int = 0
    stalls: list[StallOut] = Field(default_factory=list)
    stalls_total: int = 0
    stall_lost_seconds: float = 0.0
    rank_stats: list[RankOut] = Field(default_factory=list)
    stragglers: list[int] = Field(default_factory=list)
    incomplete_steps: int = 0
    alerts: AlertsOut = Field(default_factory=AlertsOut)
    mfu_loss: MfuLossOut | None = Field(None, description="the measured steps' MFU gap split into causes")
    mfu_loss_low_mfu: MfuLossOut | None = Field(None, description="the same over all low-MFU episodes")
    tensor_active: TensorActivityOut | None = Field(
        None, description="NVML GPM tensor activity beside MFU; null when no record carries it"
    )
    end: dict[str, Any] | None = None
    notes: list[str] = Field(default_factory=list)


class FileOut(BaseModel):
    path: str
    lines: int
    records: int
    skipped: dict[str, int]


class Analysis(BaseModel):
    runs: list[RunSummary]
    skipped: dict[str, int]
    skipped_total: int
    files: list[FileOut]
    options: dict[str, Any]


@dataclass
class AnalysisResult:
    """The JSON-ready ``analysis`` and, for plots, each run's step table (same order as ``analysis.runs``)."""

    analysis: Analysis
    tables: list[StepTable] = field(default_factory=list)


def analyze(paths: Sequence[str | os.PathLike[str]], options: AnalyzeOptions | None = None) -> AnalysisResult:
    """Read and summarise run logs (files, folders of them, globs; plain, .gz or .zst). Raises
    ``InputError`` when no file holds a run record."""
    options = options or AnalyzeOptions()
    with open_logs(paths, options) as store:
        return summarize_store(store, options)


def open_logs(
    paths: Sequence[str | os.PathLike[str]], options: AnalyzeOptions, memory_limit: str = "2GB"
) -> LogStore:
    """The logs loaded into the engine (close it, or use ``with``), for ``summarize_store`` and queries;
    ``memory_limit`` (e.g. "2GB") bounds the engine's memory, beyond which it spills to a temporary folder."""
    if not paths:
        raise InputError("LOG", "no run log given", "pass one or more JSONL run logs")
    files = expand_paths(paths)
    store = LogStore(memory_limit=memory_limit)
    try:
        store.load(files, per_file=options.per_file)
    except BaseException:
        store.close()
        raise
    return store


def summarize_store(store: LogStore, options: AnalyzeOptions) -> AnalysisResult:
    runs: list[RunSummary] = []
    tables: list[StepTable] = []
    repeated_total = 0
    merged = store.step_tables(options.peak_flops_per_second)
    for name, log in store.runs.items():
        table = merged[name]
        repeated_total += table.repeated
        runs.append(summarize_run(log, table, options, store))
        tables.append(table)
    skipped: Counter[str] = Counter()
    for stats in store.files:
        skipped.update(stats.skipped)
    if repeated_total:
        skipped["repeated_step"] += repeated_total
    ordered = {kind: skipped[kind] for kind in SKIP_KINDS if skipped[kind]}
    if not runs:
        hint = f" ({sum(ordered.values())} line(s) skipped: {describe_counts(ordered)})" if ordered else ""
        raise InputError(
            "LOG",
            f"no run records found{hint}",
            "pass JSONL run logs written by MFUMonitor(log_path=...) or mfu import",
        )
    files = [
        FileOut(
            path=s.path, lines=s.lines, records=s.records, skipped={k: v for k, v in s.skipped.items() if v}
        )
        for s in store.files
    ]
    analysis = Analysis(
        runs=runs,
        skipped=ordered,
        skipped_total=sum(ordered.values()),
        files=files,
        options={
            "threshold": options.threshold,
            "warmup": options.warmup,
            "stall_factor": options.stall_factor,
            "straggler_tolerance": options.straggler_tolerance,
            "peak_flops_per_second": options.peak_flops_per_second,
        },
    )
    return AnalysisResult(analysis=analysis, tables=tables)


def skipped_warning(analysis: Analysis) -> str | None:
    """The one warning line about skipped lines, or None when nothing was skipped."""
    if not analysis.skipped_total:
        return None
    counts = describe_counts(analysis.skipped)
    return f"skipped {analysis.skipped_total} record(s): {counts} (see 'skipped' in --json)"


def describe_counts(counts: dict[str, int]) -> str:
    """Skip counts as text: "2 not_json, 1 torn_line"."""
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())


def summarize_run(log: RunLog, table: StepTable, options: AnalyzeOptions, store: LogStore) -> RunSummary:
    summary = RunSummary(run=log.name, files=list(log.files), threshold=options.threshold)
    _describe_run(summary, log, table, options, store.ranks.get(log.name, set()))
    if table.repeated:
        summary.notes.append(
            f"{table.repeated} repeated (rank, step) record(s) dropped; the first of each kept"
        )
    if len(table) == 0:
        summary.notes.append("no step records")
        _alerts(summary, log, options)
        return summary

    start = table.step - table.span + 1
    first_step = int(start.min())
    summary.steps = int(table.span.sum())
    summary.tokens = round(float(table.tokens.sum()))
    summary.first_step = first_step
    summary.last_step = int(table.step.max())
    summary.duration_seconds = float(table.time_end.max() - table.time_start.min())
    summary.incomplete_steps = int((table.nranks < summary.ranks).sum())
    if summary.incomplete_steps:
        summary.notes.append(
            f"{summary.incomplete_steps} step(s) miss some ranks' records; their MFU covers the ranks present"
        )
    if int(table.span.max()) > 1:
        summary.notes.append(
            "imported log: each record covers several steps, so distributions are over logged intervals"
        )

    summary.measured_from_step = first_step + summary.warmup
    measured = start >= summary.measured_from_step
    summary.warmup_steps = int(table.span[~measured].sum())
    if not measured.any():
        summary.notes.append(
            f"all {summary.steps} step(s) fall in the warm-up (--warmup {summary.warmup}): "
            "pass a smaller --warmup"
        )
        _alerts(summary, log, options)
        return summary
    if summary.monitor_errors and summary.tokens == 0:
        summary.notes.append(
            "the monitor counted no tokens: tokens/s and MFU are unknown (not 0) — see its errors above"
        )
        _alerts(summary, log, options)
        return summary

    rows = np.flatnonzero(measured)
    _throughput(summary, table, rows)
    _below_threshold(summary, table, rows, options)
    _stalls(summary, table, rows, options)
    _ranks(summary, table, options, store)
    _mfu_loss(summary, table, rows, options, store)
    _tensor_activity(summary, store)
    _alerts(summary, log, options)
    if summary.mfu.max is not None and summary.mfu.max > 1.0:
        summary.mfu_suspect = True
        summary.notes.append(
            f"impossible: wrong peak or FLOPs — MFU reaches {summary.mfu.max:.0%} (above 100%); "
            "check the peak (--peak-tflops) and the model's FLOPs per token"
        )
    return summary


def _describe_run(
    summary: RunSummary, log: RunLog, table: StepTable, options: AnalyzeOptions, ranks_seen: set[int]
) -> None:
    starts = [log.starts[r] for r in sorted(log.starts)]

    def common(key: str) -> Any:
        values = {s.get(key) for s in starts if s.get(key) is not None}
        return values.pop() if len(values) == 1 else None

    summary.model = common("model")
    summary.device = common("device")
    summary.dtype = common("dtype")
    summary.flops_per_token = common("flops_per_token")
    sizes = [s["world_size"] for s in starts if isinstance(s.get("world_size"), int)]
    summary.ranks = len(ranks_seen)
    summary.world_size = max(sizes) if sizes else (summary.ranks or None)
    per_device = {s.get("peak_flops_per_second") for s in starts}
    if len(per_device) == 1 and None not in per_device:
        summary.peak_flops_per_second = per_device.pop()
    elif not starts and options.peak_flops_per_second is not None:
        summary.peak_flops_per_second = options.peak_flops_per_second
    missing = sorted(r for r in ranks_seen if r not in table.rank_peaks)
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (" ..." if len(missing) > 8 else "")
        summary.notes.append(
            f"peak FLOP/s unknown for rank(s) {shown}: MFU not computed for their steps — pass --peak-tflops"
        )
    if log.ends:
        summary.end = log.ends[min(log.ends)]
        errors = [
            (r, e)
            for r, e in sorted(log.ends.items())
            if isinstance(e.get("errors"), int) and e["errors"] > 0
        ]
        summary.monitor_errors = sum(e["errors"] for _, e in errors)
        if errors:
            reasons = sorted({str(e.get("reason")) for _, e in errors})
            summary.notes.append(
                f"the monitor logged {summary.monitor_errors} error(s) on rank(s) "
                f"{', '.join(str(r) for r, _ in errors[:8])}{' ...' if len(errors) > 8 else ''} "
                f"(run_end reason: {', '.join(reasons)}): figures may be missing or incomplete — "
                "see the training log for the monitor's warning"
            )
    summary.warmup, summary.warmup_source = _warmup(log, options)


def _warmup(log: RunLog, options: AnalyzeOptions) -> tuple[int, str]:
    """The warm-up in steps: --warmup when given, else the run's logged ``warmup_steps`` (the largest over
    ranks), else ``DEFAULT_WARMUP``."""
    if options.warmup is not None:
        return options.warmup, "option"
    logged = [
        s["warmup_steps"]
        for s in log.starts.values()
        if type(s.get("warmup_steps")) is int and s["warmup_steps"] >= 0
    ]
    return (max(logged), "log") if logged else (DEFAULT_WARMUP, "default")


def _throughput(summary: RunSummary, table: StepTable, rows: np.ndarray) -> None:
    seconds = table.seconds[rows]
    tokens = float(table.tokens[rows].sum())
    flops = float(table.flops[rows].sum())
    step_seconds = float(seconds.sum())
    first = int(rows[0])
    wall_start = float(table.time_end[first - 1]) if first > 0 else float(table.time_start[first])
    wall = float(table.time_end[rows].max()) - wall_start
    summary.measured = Measured(
        steps=int(table.span[rows].sum()),
        tokens=round(tokens),
        step_seconds=step_seconds,
        wall_seconds=wall,
    )
    summary.step_seconds = Distribution(**distribution(seconds / table.span[rows]))
    rate = RateStats(**distribution(table.tokens_per_second[rows]))
    rate.overall = tokens / step_seconds if step_seconds > 0 else None
    rate.wall = tokens / wall if wall > 0 else None
    summary.tokens_per_second = rate

    mfu = RateStats(**distribution(table.mfu[rows]))
    capacity = table.seconds[rows] * table.peak[rows]
    if np.all(np.isfinite(capacity)) and capacity.sum() > 0:
        mfu.overall = flops / float(capacity.sum())
        total_peak = sum(table.rank_peaks.values())
        if wall > 0 and total_peak > 0:
            mfu.wall = flops / (wall * total_peak)
    summary.mfu = mfu


def _below_threshold(
    summary: RunSummary, table: StepTable, rows: np.ndarray, options: AnalyzeOptions
) -> None:
    mfu = table.mfu[rows]
    if not np.isfinite(mfu).any():
        return
    seconds = table.seconds[rows]
    below = np.isfinite(mfu) & (mfu < options.threshold)
    summary.below_threshold_seconds = float(seconds[below].sum())
    summary.below_threshold_steps = int(table.span[rows][below].sum())
    total = float(seconds.sum())
    summary.below_threshold_share = summary.below_threshold_seconds / total if total > 0 else None

    # episodes over consecutive measured rows
    episodes = low_mfu_episodes(mfu, options.threshold, seconds, table.flops[rows], table.peak[rows])
    summary.low_mfu_episodes_total = len(episodes)
    kept = sorted(episodes, key=lambda e: e.seconds, reverse=True)[: options.max_listed]
    kept.sort(key=lambda e: e.first)
    out = []
    for e in kept:
        first, last = int(rows[e.first]), int(rows[e.last])
        out.append(
            EpisodeOut(
                start_step=int(table.step[first] - table.span[first] + 1),
                end_step=int(table.step[last]),
                steps=int(table.span[first : last + 1].sum()),
                seconds=e.seconds,
                mean_mfu=e.mean_mfu if math.isfinite(e.mean_mfu) else None,
                start_time=float(table.time_start[first]),
                end_time=float(table.time_end[last]),
            )
        )
    summary.low_mfu_episodes = out


def _stalls(summary: RunSummary, table: StepTable, rows: np.ndarray, options: AnalyzeOptions) -> None:
    # intervals are measured over all rows (the first measured row's interval starts at the last warm-up
    # step's end)
    found = [
        s for s in stalls(table.time_end, table.seconds, table.span, options.stall_factor) if s.row >= rows[0]
    ]
    summary.stalls_total = len(found)
    summary.stall_lost_seconds = float(sum(s.interval - s.expected for s in found))
    kept = sorted(found, key=lambda s: s.interval - s.expected, reverse=True)[: options.max_listed]
    kept.sort(key=lambda s: s.row)
    summary.stalls = [
        StallOut(
            step=int(table.step[s.row]),
            previous_step=int(table.step[s.row - 1]) if s.row > 0 else None,
            seconds=s.interval,
            expected_seconds=s.expected,
            lost_seconds=s.interval - s.expected,
            time=float(table.time_end[s.row]),
        )
        for s in kept
    ]


def _ranks(summary: RunSummary, table: StepTable, options: AnalyzeOptions, store: LogStore) -> None:
    stats = rank_stats_from(store.rank_figures(summary.run), table.slowest_rank, table.nranks)
    out = []
    for s in stats:
        straggler = (
            len(stats) > 1 and math.isfinite(s.relative) and s.relative > 1 + options.straggler_tolerance
        )
        out.append(
            RankOut(
                rank=s.rank,
                steps=s.steps,
                median_step_seconds=s.median_seconds,
                mean_step_seconds=s.mean_seconds,
                slowest_share=s.slowest_share if math.isfinite(s.slowest_share) else None,
                relative_step_time=s.relative if math.isfinite(s.relative) else None,
                straggler=straggler,
            )
        )
    summary.rank_stats = out
    summary.stragglers = [r.rank for r in out if r.straggler]


_SPLIT_COLUMNS = {
    "input_wait": "input_wait_seconds",
    "real_tokens": "real_tokens",
    "hardware_flops": "hardware_flops",
    "sm_clock_ratio": "sm_clock_ratio",
    "pre_backward": "pre_backward_seconds",
}


class _LossInputs:
    """Per-record inputs of ``monitor.figures.attribution`` (one implementation, live and here), fetched
    from the engine a chunk of records at a time (sorted by step, then rank) so that a long log's split costs
    a few small arrays, not a dozen full ones.

    A record's time is its step's wall time (the slowest rank's, as ``mfu.overall`` uses), so the split of the
    measured steps adds up to 1 - ``mfu.overall``. The straggler wait of a record is the step's largest
    ``pre_backward_seconds`` over ranks minus its own (known only where at least two ranks logged it). A run
    none of whose records carries a split field, and whose ranks all have a peak, is split from the step
    table alone (the same sums: only the capacity and the model FLOPs are known)."""

    CHUNK = 1 << 16  # records per chunk (cut at step boundaries: a step's ranks stay together)

    def __init__(self, table: StepTable, store: LogStore, name: str) -> None:
        self.table = table
        self.store = store
        self.name = name
        self.peaks = table.rank_peaks
        known = store.split_fields.get(name, [])
        self.by_steps = not known and store.ranks.get(name, set()) <= set(self.peaks)
        # record offsets of the step rows: the records of row r are offsets[r]:offsets[r + 1]
        self.offsets = np.concatenate(([0], np.cumsum(table.nranks)))
        self.bounds: list[tuple[int, int]] = []  # step rows [start, stop) per chunk
        n, start = len(table), 0
        while start < n:
            stop = int(np.searchsorted(self.offsets, self.offsets[start] + self.CHUNK, side="right")) - 1
            stop = min(n, max(stop, start + 1))  # a step of more ranks than CHUNK goes whole
            self.bounds.append((start, stop))
            start = stop

    def _sums(self, rows: tuple[int, int], data: dict[str, np.ndarray], select: np.ndarray) -> LossSums:
        table = self.table
        start, stop = rows
        row = np.repeat(np.arange(start, stop), table.nranks[start:stop])
        ranks = data["rank"][select]
        unique, inverse = np.unique(ranks, return_inverse=True)
        peak = np.array([self.peaks.get(r, np.nan) for r in unique.tolist()], dtype=np.float64)[inverse]

        def column(name: str) -> np.ndarray | None:
            key = _SPLIT_COLUMNS.get(name, name)
            return data[key][select] if key in data else None

        flops = data["model_flops"][select]
        real = column("real_tokens")
        real_fraction = None
        if real is not None:
            tokens = data["tokens"][select]
            with np.errstate(divide="ignore", invalid="ignore"):
                real_fraction = np.where(tokens > 0, real / tokens, np.nan)
        straggler = None
        if "pre_backward_seconds" in data:
            pre = data["pre_backward_seconds"]
            starts = np.flatnonzero(np.diff(row, prepend=-1))
            group = np.cumsum(np.diff(row, prepend=-1) != 0) - 1
            known = np.add.reduceat(np.isfinite(pre).astype(np.int64), starts)
            with np.errstate(invalid="ignore"):
                slowest = np.fmax.reduceat(pre, starts)  # NaN-ignoring
            ok = (known[group] >= 2) & np.isfinite(pre)
            straggler = np.where(ok, slowest[group] - pre, np.nan)[select]
        return loss_sums(
            table.seconds[row[select]],
            peak,
            flops,
            hardware_flops=column("hardware_flops"),
            input_wait=column("input_wait"),
            straggler_wait=straggler,
            clock_ratio=column("sm_clock_ratio"),
            real_fraction=real_fraction,
        )

    def split_many(self, selects: list[np.ndarray]) -> list[MfuLossOut | None]:
        """The split over the step rows each boolean mask (one per step row) marks, in one pass."""
        table = self.table
        totals = [LossSums() for _ in selects]
        if self.by_steps:
            for i, select in enumerate(selects):
                if select.any():
                    totals[i] = loss_sums(table.seconds[select], table.peak[select], table.flops[select])
            return [MfuLossOut.of(split(t)) for t in totals]
        wanted = [b for b in self.bounds if any(s[b[0] : b[1]].any() for s in selects)]
        record_bounds = [(int(self.offsets[a]), int(self.offsets[b])) for a, b in wanted]
        chunks = self.store.record_chunks(self.name, record_bounds)
        for (start, stop), data in zip(wanted, chunks, strict=True):
            counts = table.nranks[start:stop]
            for i, select in enumerate(selects):
                rows = select[start:stop]
                if rows.any():
                    totals[i] = totals[i] + self._sums((start, stop), data, np.repeat(rows, counts))
        return [MfuLossOut.of(split(t)) for t in totals]


def _mfu_loss(
    summary: RunSummary, table: StepTable, rows: np.ndarray, options: AnalyzeOptions, store: LogStore
) -> None:
    """The MFU gap split into causes over the measured steps, over all low-MFU episodes, and per listed
    episode (one pass over the records for all of them)."""
    inputs = _LossInputs(table, store, summary.run)
    measured = np.zeros(len(table), dtype=bool)
    measured[rows] = True
    mfu = table.mfu
    low = measured & np.isfinite(mfu) & (mfu < options.threshold)
    selects = [measured, low]
    for episode in summary.low_mfu_episodes:
        # the episode's rows (steps are sorted)
        first = int(np.searchsorted(table.step, episode.start_step, side="left"))
        last = int(np.searchsorted(table.step, episode.end_step, side="right"))
        inside = np.zeros(len(table), dtype=bool)
        inside[first:last] = low[first:last]
        selects.append(inside)
    splits = inputs.split_many(selects)
    summary.mfu_loss = splits[0]
    if low.any():
        summary.mfu_loss_low_mfu = splits[1]
    for episode, loss in zip(summary.low_mfu_episodes, splits[2:], strict=True):
        episode.mfu_loss = loss


def _tensor_activity(summary: RunSummary, store: LogStore) -> None:
    """MFU against the tensor-core activity logged beside it (``monitor.figures.tensor_activity``): MFU
    cannot exceed the time share the tensor cores were busy, so a median MFU above the median activity
    (beyond the margin) means the FLOPs model or the peak overcounts."""
    assert summary.measured_from_step is not None
    n, median, mean, mfu, above = store.tensor_figures(summary.run, summary.measured_from_step)
    if not n:
        return
    check = check_mfu_against_tensor_activity(mfu, median)
    summary.tensor_active = TensorActivityOut(
        records=n,
        median=median,
        mean=mean,
        mfu_median=mfu,
        mfu_above_records=above,
        suspect=bool(check and check.suspect),
    )
    if check is not None and check.suspect:
        summary.notes.append(
            f"{check.detail} (medians over {n} records; {above} records above their own reading)"
        )


def _alerts(summary: RunSummary, log: RunLog, options: AnalyzeOptions) -> None:
    firing = sum(1 for a in log.alerts if a.get("state") == "firing")
    summary.alerts = AlertsOut(
        count=log.alert_count,
        firing=firing,
        resolved=sum(1 for a in log.alerts if a.get("state") == "resolved"),
        items=[
            {k: a.get(k) for k in ("time", "rank", "kind", "state", "mfu", "threshold", "since", "message")}
            for a in log.alerts[: options.max_listed]
        ],
    )
