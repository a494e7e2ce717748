"""`mfu analyze LOG... [--threshold 0.25] [--warmup N] [--html OUT] [--sql QUERY] [--parquet OUT]`: where the
hardware time of logged runs went."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from monitor.cli._output import add_json_flag, check_output, console, print_json, writing
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
    parser.add_argument(
        "logs",
        nargs="+",
        metavar="LOG",
        help="JSONL run log(s): files (.jsonl, .gz, .zst), folders of per-rank logs, globs ('runs/*.jsonl')",
    )
    parser.add_argument(
        "--threshold", type=float, default=0.25, help="MFU below this is low (fraction; 0.25)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="first steps left out of rates and MFU (default: the log's warmup_steps, else 10)",
    )
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
    parser.add_argument(
        "--sql",
        metavar="QUERY",
        help="print the result of a SQL query over the views steps, records and run_info (docs/analysis.md) "
        "instead of the summary",
    )
    parser.add_argument(
        "--parquet", metavar="OUT", help="also write the merged step table (view steps) to Parquet"
    )
    parser.add_argument(
        "--memory-limit",
        default="2GB",
        help="memory the engine may use before it spills to a temporary folder (2GB; e.g. 500MB, 8GB)",
    )
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from monitor.analysis.summary import AnalyzeOptions, open_logs, skipped_warning, summarize_store

    options = AnalyzeOptions(
        threshold=args.threshold,
        warmup=args.warmup,
        stall_factor=args.stall_factor,
        straggler_tolerance=args.straggler_tolerance,
        peak_flops_per_second=args.peak_tflops * 1e12 if args.peak_tflops is not None else None,
        max_listed=args.max_listed,
        per_file=args.per_file,
    )
    if not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", args.memory_limit.strip(), flags=re.IGNORECASE):
        raise InputError("--memory-limit", f"not a size: {args.memory_limit!r}", "e.g. 2GB or 500MB")
    for flag, target in (("--html", args.html), ("--parquet", args.parquet)):
        if target:
            check_output(target, flag, inputs=args.logs)
    import duckdb

    try:
        with open_logs(args.logs, options, memory_limit=args.memory_limit) as store:
            result = summarize_store(store, options)
            warning = skipped_warning(result.analysis)
            if warning:
                print(f"mfu analyze: warning: {warning}", file=sys.stderr)
            parquet_path = None
            if args.parquet:
                with writing(args.parquet, "--parquet"):
                    parquet_path = str(store.export_parquet(args.parquet))
            if args.sql:
                columns, rows = store.sql(args.sql)
                if args.json:
                    print_json({"columns": columns, "rows": [list(r) for r in rows], "parquet": parquet_path})
                else:
                    _print_rows(columns, rows)
                    if parquet_path:
                        console().print(plain_text(f"Parquet: {parquet_path}"))
                return 0
    except duckdb.OutOfMemoryException:
        raise InputError(
            "--memory-limit",
            f"the analysis engine ran out of memory within {args.memory_limit}",
            "raise it, e.g. --memory-limit 2GB",
        ) from None
    html_path = None
    if args.html:
        try:
            from monitor.analysis.report import write_html
        except ImportError as exc:  # matplotlib is the optional "plots" extra
            raise InputError(
                "--html", f"the report needs matplotlib ({exc})", "pip install 'mfu-monitor[plots]'"
            ) from exc

        with writing(args.html, "--html"):
            html_path = str(write_html(result, args.html))
    if args.json:
        out = result.analysis.model_dump(mode="json")
        out["html"] = html_path
        out["parquet"] = parquet_path
        print_json(out)
        return 0
    _print_human(result, html_path, parquet_path)
    return 0


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """Text for the terminal: control characters (escape sequences, carriage returns, bidi overrides) from
    run or model names are dropped, so a log cannot move the cursor or recolour the screen."""
    return _CONTROL.sub("", str(text))


def plain_text(text: object, style: str = "") -> Any:
    from rich.text import Text

    return Text(printable(text), style=style)


def _print_rows(columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    from rich.table import Table

    table = Table()
    for name in columns:
        table.add_column(plain_text(name))
    for row in rows:
        table.add_row(*(plain_text("NULL" if v is None else v) for v in row))
    console().print(table)


def _print_human(result: object, html_path: str | None, parquet_path: str | None = None) -> None:
    from rich.table import Table

    from monitor.analysis.report import fmt, side_by_side_rows
    from monitor.analysis.summary import AnalysisResult

    assert isinstance(result, AnalysisResult)
    runs = result.analysis.runs
    out = console()
    table = Table(title="Runs (after warm-up)", title_justify="left")
    table.add_column("")
    for r in runs:
        table.add_column(plain_text(r.run), justify="right")  # Text: a run name is never read as markup
    for label, cells in side_by_side_rows(runs):
        table.add_row(label, *(plain_text(c) for c in cells))
    out.print(table)
    for r in runs:
        lines = [plain_text(f"{r.run}: ", style="bold") + plain_text(note) for note in r.notes]
        if r.mfu_loss is not None and r.mfu_loss.largest:
            lines.append(plain_text(f"{r.run}: MFU lost most to {r.mfu_loss.verdict}"))
        for e in r.low_mfu_episodes[:5]:
            lines.append(
                plain_text(
                    f"{r.run}: low MFU steps {e.start_step}–{e.end_step} for {fmt(e.seconds, 's')} "
                    f"(mean {fmt(e.mean_mfu, 'pct')})"
                )
            )
        for s in r.stalls[:5]:
            lines.append(
                plain_text(
                    f"{r.run}: stall before step {s.step}: {fmt(s.seconds, 's')} "
                    f"(typical {fmt(s.expected_seconds, 's')})"
                )
            )
        for line in lines:
            out.print(line)
    if html_path:
        out.print(plain_text(f"HTML report: {html_path}"))
    if parquet_path:
        out.print(plain_text(f"Parquet: {parquet_path}"))
