"""One self-contained HTML report of an analysis: tables, and plots as inline base64 PNG.

Self-contained: no script, no stylesheet or font from elsewhere, no network; a Content-Security-Policy forbids
scripts and any outside request, so even a mistake in escaping could not run code. Every text shown (run
names, file paths, notes, alert messages) goes through ``html.escape``.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from monitor.analysis.plots import mfu_loss_png, ranks_png, step_time_png, timeline_png
from monitor.analysis.summary import AnalysisResult, MfuLossOut, RunSummary, describe_counts
from monitor.figures.attribution import LABELS, OF_WHAT, TITLES

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; } h3 { margin-top: 1.4rem; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f4f4f4; }
img { max-width: 100%; height: auto; display: block; margin: 0.6rem 0; }
.note { color: #8a5300; } .muted { color: #777; } .bad { color: #b00020; font-weight: 600; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: float | int | None, kind: str = "num") -> str:
    """A number for people: None as an em dash; kinds pct (a fraction), s (seconds), int, num."""
    if value is None:
        return "—"
    if kind == "pct":
        return f"{100.0 * value:.1f}%"
    if kind == "s":
        if value >= 3600:
            return f"{value / 3600:.2f} h"
        if value >= 120:
            return f"{value / 60:.1f} min"
        return f"{value:.3g} s"
    if kind == "int":
        return f"{int(value):,}"
    if abs(value) >= 1e6:
        return f"{value:.4g}"
    return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"


def side_by_side_rows(runs: Sequence[RunSummary]) -> list[tuple[str, list[str]]]:
    """(label, one cell per run) rows shared by the HTML table and the terminal table."""

    def row(label: str, cells: Iterable[str]) -> tuple[str, list[str]]:
        return label, list(cells)

    def dist(stats: Any, kind: str) -> Iterable[str]:
        return (
            f"{fmt(s.median, kind)} [{fmt(s.p10, kind)} – {fmt(s.p90, kind)}]"
            for s in (getattr(r, stats) for r in runs)
        )

    return [
        row("model / device", (f"{r.model or '—'} / {r.device or '—'}" for r in runs)),
        row("ranks (world size)", (f"{r.ranks} ({r.world_size or '—'})" for r in runs)),
        row("steps (warm-up)", (f"{fmt(r.steps, 'int')} ({fmt(r.warmup_steps, 'int')})" for r in runs)),
        row("tokens", (fmt(r.tokens, "int") for r in runs)),
        row("duration", (fmt(r.duration_seconds, "s") for r in runs)),
        row("tokens/s overall", (fmt(r.tokens_per_second.overall) for r in runs)),
        row("tokens/s median [p10 – p90]", dist("tokens_per_second", "num")),
        row(
            "MFU overall (wall clock)",
            (f"{fmt(r.mfu.overall, 'pct')} ({fmt(r.mfu.wall, 'pct')})" for r in runs),
        ),
        row("MFU mean", (fmt(r.mfu.mean, "pct") for r in runs)),
        row("MFU median [p10 – p90]", dist("mfu", "pct")),
        row("step time median [p10 – p90]", dist("step_seconds", "s")),
        row(
            "below threshold",
            (
                f"{fmt(r.below_threshold_seconds, 's')} ({fmt(r.below_threshold_share, 'pct')})"
                if r.below_threshold_seconds is not None
                else "—"
                for r in runs
            ),
        ),
        row("low-MFU episodes", (fmt(r.low_mfu_episodes_total, "int") for r in runs)),
        row(
            "tensor-core activity (GPM)",
            (
                fmt(r.tensor_active.median, "pct") + (" — below MFU" if r.tensor_active.suspect else "")
                if r.tensor_active is not None
                else "—"
                for r in runs
            ),
        ),
        row(
            "MFU lost most to",
            (r.mfu_loss.verdict if r.mfu_loss is not None and r.mfu_loss.largest else "—" for r in runs),
        ),
        row("stalls (time lost)", (f"{r.stalls_total} ({fmt(r.stall_lost_seconds, 's')})" for r in runs)),
        row("stragglers", (", ".join(map(str, r.stragglers)) or "none" for r in runs)),
        row("alerts (firing)", (f"{r.alerts.count} ({r.alerts.firing})" for r in runs)),
    ]


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    out = ["<table><thead><tr>", *(f"<th>{esc(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for cells in rows:
        out.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def _when(unix: float) -> str:
    # imports of logs without a wall clock (Trainer, Lightning) count seconds from the start of training
    if unix < 1e9:
        return f"t+{fmt(unix, 's')}"
    return dt.datetime.fromtimestamp(unix, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def loss_rows(scopes: Sequence[MfuLossOut | None]) -> list[list[str]]:
    """Rows of the MFU-loss table: MFU, each cause's points (— where not measured), useful MFU."""
    rows = [["MFU", *(fmt(s.mfu if s else None, "pct") for s in scopes)]]
    for cause in LABELS:
        cells = [fmt(getattr(s, cause) if s else None, "pct") for s in scopes]
        rows.append([f"{TITLES[cause]} ({OF_WHAT[cause]})", *cells])
    rows.append(["useful MFU (without padding)", *(fmt(s.useful_mfu if s else None, "pct") for s in scopes)])
    return rows


def _loss_section(summary: RunSummary) -> str:
    if summary.mfu_loss is None:
        return ""
    head = ["points of peak FLOPs", "measured steps"]
    scopes = [summary.mfu_loss]
    if summary.mfu_loss_low_mfu is not None:
        head.append("low-MFU episodes")
        scopes.append(summary.mfu_loss_low_mfu)
    parts = [
        "<h3>Where the MFU gap goes</h3>",
        f"<p>{esc(summary.mfu_loss.verdict)}. The causes and the unexplained rest add up to 100% − MFU; "
        "padding is inside the MFU (see docs/attribution.md). — : not measured in this log.</p>",
        _table(head, loss_rows(scopes)),
    ]
    return "".join(parts)


def _run_section(summary: RunSummary, png: bytes) -> str:
    parts = [f"<h2>Run {esc(summary.run)}</h2>"]
    files = ", ".join(summary.files)
    parts.append(f'<p class="muted">files: {esc(files)}</p>')
    for note in summary.notes:
        parts.append(f'<p class="note">{esc(note)}</p>')
    parts.append(_img(png, f"MFU and tokens/s over time for run {summary.run}"))
    parts.append(_loss_section(summary))
    if summary.low_mfu_episodes:
        parts.append(
            f"<h3>Low-MFU episodes (MFU below {esc(fmt(summary.threshold, 'pct'))}; "
            f"{summary.low_mfu_episodes_total} in all, longest {len(summary.low_mfu_episodes)} listed)</h3>"
        )
        parts.append(
            _table(
                ["start step", "end step", "steps", "duration", "mean MFU", "started"],
                (
                    [
                        e.start_step,
                        e.end_step,
                        e.steps,
                        fmt(e.seconds, "s"),
                        fmt(e.mean_mfu, "pct"),
                        _when(e.start_time),
                    ]
                    for e in summary.low_mfu_episodes
                ),
            )
        )
    if summary.stalls:
        parts.append(
            f"<h3>Stalls ({summary.stalls_total}; {esc(fmt(summary.stall_lost_seconds, 's'))} lost)</h3>"
        )
        parts.append(
            _table(
                ["step", "after step", "interval", "typical", "lost", "at"],
                (
                    [
                        s.step,
                        s.previous_step if s.previous_step is not None else "—",
                        fmt(s.seconds, "s"),
                        fmt(s.expected_seconds, "s"),
                        fmt(s.lost_seconds, "s"),
                        _when(s.time),
                    ]
                    for s in summary.stalls
                ),
            )
        )
    if len(summary.rank_stats) > 1:
        parts.append("<h3>Ranks</h3>")
        parts.append(
            _table(
                ["rank", "steps", "median step", "mean step", "slowest in", "vs ranks' median", "straggler"],
                (
                    [
                        r.rank,
                        r.steps,
                        fmt(r.median_step_seconds, "s"),
                        fmt(r.mean_step_seconds, "s"),
                        fmt(r.slowest_share, "pct"),
                        fmt(r.relative_step_time),
                        "yes" if r.straggler else "",
                    ]
                    for r in summary.rank_stats
                ),
            )
        )
    if summary.alerts.count:
        parts.append(f"<h3>Alerts ({summary.alerts.count}; {summary.alerts.firing} firing)</h3>")
        parts.append(
            _table(
                ["time", "rank", "kind", "state", "MFU", "message"],
                (
                    [
                        _when(a["time"]) if isinstance(a.get("time"), (int, float)) else "—",
                        a.get("rank"),
                        a.get("kind"),
                        a.get("state"),
                        fmt(a.get("mfu"), "pct"),
                        a.get("message") or "",
                    ]
                    for a in summary.alerts.items
                ),
            )
        )
    return "".join(parts)


def render_html(result: AnalysisResult, title: str = "MFU report") -> str:
    analysis = result.analysis
    runs = analysis.runs
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}: {esc(', '.join(r.run for r in runs))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        '<p class="muted">',
        esc(
            f"threshold {fmt(analysis.options['threshold'], 'pct')}, "
            f"warm-up {analysis.options['warmup']} steps, "
            f"stall: interval > {analysis.options['stall_factor']}x the median step. "
            "MFU = model FLOPs / (step time x peak FLOP/s), summed over ranks; "
            "step time is the slowest rank's."
        ),
        "</p>",
        "<h2>Runs side by side</h2>",
        _table(["", *(r.run for r in runs)], ([label, *cells] for label, cells in side_by_side_rows(runs))),
    ]
    if analysis.skipped_total:
        parts.append(
            f'<p class="bad">{esc(analysis.skipped_total)} log record(s) skipped: '
            f"{esc(describe_counts(analysis.skipped))}</p>"
        )
    if any(r.mfu_loss is not None for r in runs):
        parts.append("<h2>Where the peak went</h2>")
        parts.append(_img(mfu_loss_png(runs), "stacked bars: MFU and the causes of the MFU gap per run"))
    for summary, table in zip(runs, result.tables, strict=True):
        parts.append(_run_section(summary, timeline_png(summary, table)))
    parts.append("<h2>Step-time distribution</h2>")
    parts.append(_img(step_time_png(runs, result.tables), "histogram of step times per run"))
    parts.append("<h2>Ranks compared</h2>")
    parts.append(_img(ranks_png(runs), "median step time per rank"))
    parts.append(
        "<h2>Files</h2>"
        + _table(
            ["path", "lines", "records", "skipped"],
            ([f.path, f.lines, f.records, describe_counts(f.skipped) or "0"] for f in analysis.files),
        )
    )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(result: AnalysisResult, out: str | os.PathLike[str]) -> Path:
    path = Path(out)
    if path.is_dir():
        from monitor.errors import InputError

        raise InputError("--html", f"{path} is a directory", "pass a file name such as report.html")
    path.write_text(render_html(result), encoding="utf-8")
    return path
