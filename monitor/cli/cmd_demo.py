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
        "--seconds", type=float, default=None, help="how long to train, instead of --steps (default 60)"
    )
    p.add_argument("--port", type=int, default=9400, help="/metrics port (default 9400; a free one if busy)")
    p.add_argument("--no-serve", action="store_true", help="do not serve /metrics")
    p.add_argument("--log", default=None, help="run log path (default runs/demo-<time>.jsonl)")
    p.add_argument(
        "--batch-size", type=int, default=8, help="sequences per step (default 8, 128 tokens each)"
    )
    p.add_argument("--no-live", action="store_true", help="no live view (just the summary)")
    p.set_defaults(run=run)


MAX_SECONDS = 86_400.0  # a day: the demo is not a training run


def run(args: argparse.Namespace) -> int:
    if args.steps is not None and args.steps <= 0:
        raise InputError("--steps", f"must be positive, got {args.steps}", "pass e.g. --steps 100")
    if args.steps is not None and args.seconds is not None:
        raise InputError("--seconds", "given with --steps: the demo trains for one or the other", "pass one")
    seconds = 60.0 if args.seconds is None else args.seconds
    if not 0 < seconds <= MAX_SECONDS:  # also NaN and infinity
        raise InputError(
            "--seconds",
            f"must be above 0 and at most {MAX_SECONDS:g}, got {seconds}",
            "pass e.g. --seconds 60",
        )
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
        seconds=seconds,
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
        label = result.peak_note or result.peak_source
        con.print(
            f"  MFU {percent(result.mfu)} of a {si(result.peak_flops_per_second, 'FLOP/s')} peak — {label}",
            markup=False,
        )
        if result.mfu is not None and result.mfu > 1:
            con.print(
                "  [red]impossible: MFU above 100% — the peak is too low (a matmul rate measured while the "
                "machine was busy?) or the FLOPs model too high; run `mfu calibrate` on a quiet machine[/red]"
            )
    if result.loss_first is not None and result.loss_last is not None:
        con.print(f"  loss {result.loss_first:.3f} → {result.loss_last:.3f}")
    if result.log_path is not None:
        con.print(f"  run log: {result.log_path}   (try: mfu analyze {result.log_path})", markup=False)
    else:
        con.print("  no run log: it could not be written (see the warning above)")
    return 0
