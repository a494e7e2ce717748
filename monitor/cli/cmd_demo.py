"""`mfu demo`: train a small GPT on generated text with the live monitor (the main job behind `make demo`)."""

from __future__ import annotations

import argparse
from typing import Any

from monitor.errors import InputError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train a small GPT with the live monitor: terminal view, /metrics, run log, summary",
        description="Train a small GPT-style model (a few million parameters) on generated text, on the "
        "CPU (a GPU when present), with MFUMonitor on: live view, Prometheus /metrics, JSONL run log, and "
        "a closing summary. About a minute by default.",
    )
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: train for --seconds)")
    p.add_argument(
        "--seconds", type=float, default=60.0, help="how long to train without --steps (default 60)"
    )
    p.add_argument("--port", type=int, default=9400, help="/metrics port (default 9400; a free one if busy)")
    p.add_argument("--no-serve", action="store_true", help="do not serve /metrics")
    p.add_argument("--log", default=None, help="run log path (default runs/demo-<time>.jsonl)")
    p.add_argument(
        "--batch-size", type=int, default=8, help="sequences per step (default 8, 128 tokens each)"
    )
    p.add_argument("--no-live", action="store_true", help="no live view (just the summary)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.steps is not None and args.steps <= 0:
        raise InputError("--steps", f"must be positive, got {args.steps}", "pass e.g. --steps 100")
    if not args.seconds > 0:  # also NaN
        raise InputError("--seconds", f"must be positive, got {args.seconds}", "pass e.g. --seconds 60")
    if not 0 <= args.port <= 65535:
        raise InputError("--port", f"must be 0..65535, got {args.port}", "pass e.g. --port 9400")
    if args.batch_size <= 0:
        raise InputError(
            "--batch-size", f"must be positive, got {args.batch_size}", "pass e.g. --batch-size 8"
        )

    from monitor.cli._output import console
    from monitor.demo import run_demo
    from monitor.export.terminal import duration, percent, si

    con = console()
    result = run_demo(
        steps=args.steps,
        seconds=args.seconds,
        port=None if args.no_serve else args.port,
        log_path=args.log,
        batch_size=args.batch_size,
        live=not args.no_live,
        console=con,
    )
    con.print()
    con.print("[bold]Summary[/bold]")
    con.print(f"  steps {result.steps}, tokens {result.tokens:,} in {duration(result.seconds)}")
    con.print(f"  tokens/s {si(result.tokens_per_second)} (last window)")
    con.print(
        f"  model FLOPs per token {si(result.flops_per_token)} (analytic ModelSpec, full S×S attention)"
    )
    if result.peak_flops_per_second is None:
        con.print("  MFU not shown: peak unknown")
    else:
        src = result.peak_source
        label = "measured (mfu calibrate)" if src == "calibrated" else src
        con.print(
            f"  MFU {percent(result.mfu)} of a {si(result.peak_flops_per_second, 'FLOP/s')} peak — {label}"
        )
    if result.loss_first is not None and result.loss_last is not None:
        con.print(f"  loss {result.loss_first:.3f} → {result.loss_last:.3f}")
    con.print(f"  run log: {result.log_path}   (try: mfu analyze {result.log_path})")
    return 0
