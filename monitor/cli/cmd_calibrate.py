"""`mfu calibrate`: measure this machine's achievable matmul FLOP/s for a dtype."""

from __future__ import annotations

import argparse
from typing import Any

from monitor.cli._output import add_json_flag, console, print_json
from monitor.hardware.calibrate import CALIBRATABLE, cache_dir, calibrate


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="measure this machine's achievable matmul FLOP/s (a peak for devices the catalogue lacks)",
        description="Times n x n matmuls (2·n³ FLOPs each) and reports the best batch's rate; the result is "
        "cached for runs on this machine, where it is labelled 'calibrated'.",
    )
    parser.add_argument(
        "--dtype", default=None, help=f"{', '.join(CALIBRATABLE)} (default fp32 on cpu, bf16 on cuda)"
    )
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="where to measure (default cpu)"
    )
    parser.add_argument(
        "--size", type=int, default=None, help="matrix size n (default 1024 on cpu, 8192 on cuda)"
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="time spent measuring (default 1.0)")
    parser.add_argument("--no-cache", action="store_true", help="do not store the result")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    result = calibrate(
        dtype, device=args.device, size=args.size, seconds=args.seconds, cache=not args.no_cache
    )
    if args.json:
        print_json(result)
        return 0
    out = console()
    giga = 1e9
    out.print(
        f"{result.device_name} ({result.device}, {result.threads} threads): {result.dtype} matmul "
        f"{result.flops_per_second / giga:,.1f} GFLOP/s best batch, "
        f"{result.median_flops_per_second / giga:,.1f} median, "
        f"{result.min_flops_per_second / giga:,.1f} slowest; n={result.matrix_size}, "
        f"{result.repeats} matmuls in {result.seconds:.2f} s"
    )
    if result.cached:
        out.print(f"cached in {cache_dir()} for runs on this machine (source 'calibrated')")
    elif result.cache_error:
        out.print(f"not cached: {result.cache_error} — set MFU_MONITOR_CACHE_DIR to a folder you can write")
    return 0
