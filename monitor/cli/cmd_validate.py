"""`mfu validate`: our figures against published ones, with tolerances; exit 1 if a gated check fails."""

from __future__ import annotations

import argparse
from typing import Any

from monitor.cli._output import add_json_flag, console, print_json


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "validate",
        help="check our figures against the literature (exit 1 if any gated check fails)",
        description="PaLM table 3 MFU, Chinchilla approach 3 (and table 3, reported), Epoch's refit, "
        "Kaplan's allocation, preset parameter counts. Gated checks fail the command; reported ones "
        "show the difference only.",
    )
    add_json_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from monitor.planning.validate import run_checks

    report = run_checks()
    if args.json:
        print_json(report)
    else:
        _print(report.model_dump())
    return 0 if report.ok else 1


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.4g}"
    return f"{value:.4f}".rstrip("0").rstrip(".")


def _print(report: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="mfu validate: ours against published figures")
    for col in ("check", "ours", "published", "±", "result"):
        table.add_column(col)
    for c in report["checks"]:
        result = ("[green]pass[/green]" if c["ok"] else "[red]FAIL[/red]") if c["gated"] else "report"
        table.add_row(c["name"], _fmt(c["ours"]), _fmt(c["published"]), _fmt(c["tolerance"]), result)
    con = console()
    con.print(table)
    failed = [c for c in report["checks"] if not c["ok"]]
    gated = sum(1 for c in report["checks"] if c["gated"])
    con.print(f"{gated - len(failed)}/{gated} gated checks pass; sources and notes: `mfu validate --json`")
    for c in failed:
        con.print(f"[red]FAIL[/red] {c['name']}: {c['note']} ({c['source']})")
