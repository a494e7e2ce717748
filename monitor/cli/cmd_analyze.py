"""`mfu analyze LOG... [--threshold 0.25] [--warmup 10] [--html OUT]`: where the hardware time of logged runs
went."""

from __future__ import annotations

import argparse
import sys

from monitor.cli._output import add_json_flag, console, print_json
from monitor.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="summarise run logs: throughput, MFU and why it is low, low-MFU episodes, stalls, stragglers",
        description=(
            "Summarise one or more JSONL run logs (ranks of a run merge by step; different runs "
            "side by side): tokens/s and MFU after warm-up, the MFU gap split into measured causes, time "
            "below the threshold, low-MFU episodes, stalls, straggler ranks, alerts. Bad lines are skipped, "
            "counted and reported in one warning."
        ),
    )
    parser.add_argument("logs", nargs="+", metavar="LOG", help="JSONL run log(s); one file per rank is fine")
    parser.add_argument(
        "--threshold", type=float, default=0.25, help="MFU below this is low (fraction; 0.25)"
    )
    parser.add_argument("--warmup", type=int, default=10, help="first steps left out of rates and MFU (10)")
    parser.add_argument("--html", metavar="OUT", help="also write a self-contained HTML report with plots")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        help="peak TFLOP/s per device, for logs that lack one (e.g. 989 for H100 bf16)",
    )
    parser.add_argument("--stall-factor", type=float, default=5.0, help="stall: interval > this x median (5)")
    parser.add_argument(
        "--straggler-tolerance",
        type=float,
        default=0.10,
        help="straggler: median step this much slower (0.10)",
    )
    parser.add_argument(
        "--max-listed", type=int, default=50, help="episodes/stalls/alerts listed per run (50)"
    )
    parser.add_argument(
        "--per-file", action="store_true", help="keep each file's runs apart even if names match"
    )
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from monitor.analysis.summary import AnalyzeOptions, analyze, skipped_warning

    options = AnalyzeOptions(
        threshold=args.threshold,
        warmup=args.warmup,
        stall_factor=args.stall_factor,
        straggler_tolerance=args.straggler_tolerance,
        peak_flops_per_second=args.peak_tflops * 1e12 if args.peak_tflops is not None else None,
        max_listed=args.max_listed,
        per_file=args.per_file,
    )
    result = analyze(args.logs, options)
    warning = skipped_warning(result.analysis)
    if warning:
        print(f"mfu analyze: warning: {warning}", file=sys.stderr)
    html_path = None
    if args.html:
        try:
            from monitor.analysis.report import write_html
        except ImportError as exc:  # matplotlib is the optional "plots" extra
            raise InputError(
                "--html", f"the report needs matplotlib ({exc})", "pip install 'mfu-monitor[plots]'"
            ) from exc

        html_path = str(write_html(result, args.html))
    if args.json:
        out = result.analysis.model_dump(mode="json")
        out["html"] = html_path
        print_json(out)
        return 0
    _print_human(result, html_path)
    return 0


def _print_human(result: object, html_path: str | None) -> None:
    from rich.table import Table
    from rich.text import Text

    from monitor.analysis.report import fmt, side_by_side_rows
    from monitor.analysis.summary import AnalysisResult

    assert isinstance(result, AnalysisResult)
    runs = result.analysis.runs
    out = console()
    table = Table(title="Runs (after warm-up)", title_justify="left")
    table.add_column("")
    for r in runs:
        table.add_column(Text(r.run), justify="right")  # Text: a run name is never read as markup
    for label, cells in side_by_side_rows(runs):
        table.add_row(label, *(Text(c) for c in cells))
    out.print(table)
    for r in runs:
        lines = [Text(f"{r.run}: ", style="bold") + Text(note) for note in r.notes]
        if r.mfu_loss is not None and r.mfu_loss.largest:
            lines.append(Text(f"{r.run}: MFU lost most to {r.mfu_loss.verdict}"))
        for e in r.low_mfu_episodes[:5]:
            lines.append(
                Text(
                    f"{r.run}: low MFU steps {e.start_step}–{e.end_step} for {fmt(e.seconds, 's')} "
                    f"(mean {fmt(e.mean_mfu, 'pct')})"
                )
            )
        for s in r.stalls[:5]:
            lines.append(
                Text(
                    f"{r.run}: stall before step {s.step}: {fmt(s.seconds, 's')} "
                    f"(typical {fmt(s.expected_seconds, 's')})"
                )
            )
        for line in lines:
            out.print(line)
    if html_path:
        out.print(Text(f"HTML report: {html_path}"))
