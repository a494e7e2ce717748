"""Plots for the HTML report, drawn with matplotlib's Agg backend into PNG bytes (no display, no global
pyplot state).

Long runs are reduced to at most ``MAX_POINTS`` buckets of consecutive steps (mean per bucket, with the
bucket's min-max band), so a million-step run draws as fast as a short one and the page stays small.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter
from numpy.typing import NDArray

from monitor.analysis.steps import StepTable
from monitor.analysis.summary import MfuLossOut, RunSummary
from monitor.figures.attribution import TITLES

MAX_POINTS = 1500
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def label(text: str, limit: int = 48) -> str:
    """A run name as plain text for matplotlib: ``$`` would start mathtext; long names are shortened."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def bucket(
    x: NDArray[np.float64], y: NDArray[np.float64], max_points: int = MAX_POINTS
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """(x mean, y mean, y min, y max) over buckets of consecutive points, ignoring NaN in y."""
    n = x.shape[0]
    if n <= max_points:
        return x, y, y, y
    edges = np.linspace(0, n, max_points + 1).astype(np.int64)[:-1]
    finite = np.isfinite(y)
    y0 = np.where(finite, y, 0.0)
    counts = np.add.reduceat(finite.astype(np.float64), edges)
    sizes = np.diff(np.append(edges, n)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        y_mean = np.add.reduceat(y0, edges) / counts
    y_min = np.fmin.reduceat(np.where(finite, y, np.nan), edges)
    y_max = np.fmax.reduceat(np.where(finite, y, np.nan), edges)
    x_mean = np.add.reduceat(x, edges) / sizes
    return x_mean, y_mean, y_min, y_max


def _time_unit(seconds: float) -> tuple[float, str]:
    if seconds < 180:
        return 1.0, "seconds"
    if seconds < 3 * 3600:
        return 60.0, "minutes"
    return 3600.0, "hours"


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96)
    return buffer.getvalue()


def timeline_png(summary: RunSummary, table: StepTable) -> bytes:
    """MFU and tokens/s over time since the run's first step, with the threshold, warm-up, episodes and
    stalls."""
    origin = float(table.time_start.min()) if len(table) else 0.0
    elapsed = table.time_end - origin
    scale, unit = _time_unit(float(elapsed.max()) if len(table) else 0.0)
    x = elapsed / scale
    mfu = table.mfu
    has_mfu = bool(np.isfinite(mfu).any())
    fig = Figure(figsize=(10, 5.6 if has_mfu else 3.2), layout="constrained")
    axes = fig.subplots(2 if has_mfu else 1, 1, sharex=True, squeeze=False)[:, 0]
    panels: list[tuple[str, NDArray[np.float64], float]] = []
    if has_mfu:
        panels.append(("MFU (%)", mfu * 100.0, summary.threshold * 100.0))
    panels.append(("tokens/s (all ranks)", table.tokens_per_second, float("nan")))
    warmup_end = None
    if summary.measured_from_step is not None and len(table):
        in_warmup = (table.step - table.span + 1) < summary.measured_from_step
        if in_warmup.any():
            warmup_end = float(x[in_warmup].max())
    for ax, (name, values, threshold) in zip(axes, panels, strict=True):
        xm, ym, lo, hi = bucket(x, values)
        # steps-pre: a value holds from the previous point's end to its own end (a step, or a logged interval)
        ax.fill_between(xm, lo, hi, color=_COLORS[0], alpha=0.18, linewidth=0, step="pre")
        ax.plot(xm, ym, color=_COLORS[0], linewidth=1.0, drawstyle="steps-pre")
        if np.isfinite(threshold):
            ax.axhline(threshold, color="#d62728", linestyle="--", linewidth=1.0, label="threshold")
        for episode in summary.low_mfu_episodes:
            ax.axvspan(
                (episode.start_time - origin) / scale,
                (episode.end_time - origin) / scale,
                color="#d62728",
                alpha=0.15,
                linewidth=0,
            )
        for stall in summary.stalls:
            ax.axvline((stall.time - origin) / scale, color="#7f7f7f", linestyle=":", linewidth=1.0)
        if warmup_end is not None:
            ax.axvspan(0, warmup_end, color="#bbbbbb", alpha=0.3, linewidth=0)
        ax.set_ylabel(name)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].set_title(
        f"{label(summary.run)} — shaded red: low-MFU episodes, grey: warm-up, dotted: stalls", fontsize=10
    )
    axes[-1].set_xlabel(f"time since first step ({unit})")
    return _png(fig)


def step_time_png(summaries: list[RunSummary], tables: list[StepTable]) -> bytes:
    """Histogram of step wall time (slowest rank) per run, measured steps only, on a log axis."""
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax = fig.subplots()
    plotted = False
    per_run: list[tuple[RunSummary, NDArray[np.float64], str]] = []
    for i, (summary, table) in enumerate(zip(summaries, tables, strict=True)):
        if not len(table) or summary.measured_from_step is None:
            continue
        measured = (table.step - table.span + 1) >= summary.measured_from_step
        values = (table.seconds / table.span)[measured]
        values = values[np.isfinite(values) & (values > 0)]
        if values.shape[0]:
            per_run.append((summary, values, _COLORS[i % len(_COLORS)]))
    if per_run:
        lo = min(float(v.min()) for _, v, _ in per_run)
        hi = max(float(v.max()) for _, v, _ in per_run)
        bins = np.geomspace(lo * 0.98, hi * 1.02, 60).tolist()
        for summary, values, color in per_run:
            ax.hist(values, bins=bins, histtype="step", linewidth=1.4, color=color, label=label(summary.run))
        plotted = True
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("step time, slowest rank (seconds, log scale)")
    ax.set_ylabel("steps")
    ax.grid(True, alpha=0.3)
    if plotted:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no measured steps", ha="center", va="center", transform=ax.transAxes)
    return _png(fig)


def ranks_png(summaries: list[RunSummary]) -> bytes:
    """Median step time per rank for each run; stragglers in red."""
    multi = [s for s in summaries if s.rank_stats]
    rows = max(1, len(multi))
    fig = Figure(figsize=(10, 2.4 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    if not multi:
        axes[0].text(0.5, 0.5, "no per-rank data", ha="center", va="center", transform=axes[0].transAxes)
        return _png(fig)
    for ax, summary in zip(axes, multi, strict=True):
        ranks = [r.rank for r in summary.rank_stats]
        medians = [r.median_step_seconds for r in summary.rank_stats]
        colors = ["#d62728" if r.straggler else _COLORS[0] for r in summary.rank_stats]
        positions = np.arange(len(ranks))
        ax.bar(positions, medians, color=colors)
        if len(ranks) <= 32:
            ax.set_xticks(positions, [str(r) for r in ranks])
        ax.set_title(f"{label(summary.run)} — median step time per rank (red: straggler)", fontsize=10)
        ax.set_ylabel("seconds")
        ax.set_xlabel("rank")
        ax.grid(True, axis="y", alpha=0.3)
    return _png(fig)


# Segments of the MFU-loss bar, left to right: what was achieved, then what was lost (docs/attribution.md).
_LOSS_SEGMENTS: tuple[tuple[str, str, str], ...] = (
    ("useful", "useful MFU", "#2ca02c"),
    ("padding", TITLES["padding"], "#98df8a"),
    ("recomputation", TITLES["recomputation"], "#9467bd"),
    ("throttling", TITLES["throttling"], "#d62728"),
    ("stragglers", TITLES["stragglers"], "#ff7f0e"),
    ("input_wait", TITLES["input_wait"], "#1f77b4"),
    ("unexplained", TITLES["unexplained"], "#c7c7c7"),
)


def _loss_values(loss: MfuLossOut) -> dict[str, float]:
    useful = loss.useful_mfu if loss.useful_mfu is not None else loss.mfu
    values = {"useful": useful, "padding": loss.padding or 0.0}
    for key in ("recomputation", "throttling", "stragglers", "input_wait"):
        values[key] = getattr(loss, key) or 0.0
    values["unexplained"] = max(0.0, loss.unexplained)  # a negative remainder is listed in the table
    return values


def mfu_loss_png(summaries: list[RunSummary]) -> bytes:
    """One stacked bar per run (and per run's low-MFU episodes): the peak FLOPs split into useful MFU,
    padding and each cause of the gap, in percent of the peak."""
    bars: list[tuple[str, MfuLossOut]] = []
    for s in summaries:
        if s.mfu_loss is not None:
            bars.append((label(s.run, 36), s.mfu_loss))
        if s.mfu_loss_low_mfu is not None:
            bars.append((label(s.run, 24) + " (low-MFU episodes)", s.mfu_loss_low_mfu))
    fig = Figure(figsize=(10, 0.55 * max(1, len(bars)) + 1.6), layout="constrained")
    ax = fig.subplots()
    if not bars:
        ax.text(0.5, 0.5, "no MFU (peak unknown)", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _png(fig)
    positions = np.arange(len(bars))[::-1]
    left = np.zeros(len(bars))
    for key, name, color in _LOSS_SEGMENTS:
        widths = np.array([_loss_values(loss)[key] * 100.0 for _, loss in bars])
        if not widths.any():
            continue
        ax.barh(positions, widths, left=left, color=color, label=name, height=0.6)
        for y, x0, w in zip(positions, left, widths, strict=True):
            if w >= 4:
                ax.text(x0 + w / 2, y, f"{w:.0f}", ha="center", va="center", fontsize=8)
        left += widths
    ax.set_yticks(positions, [name for name, _ in bars])
    ax.set_xlim(0, max(100.0, float(left.max())))
    ax.set_xlabel("% of peak FLOPs (the bar's first segment is the MFU)")
    ax.set_title("Where the peak went: MFU and the measured causes of the gap", fontsize=10)
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25 if len(bars) < 3 else -0.12))
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)
