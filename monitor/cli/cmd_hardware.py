"""`mfu hardware`: the peak catalogue, the devices on this machine, and a lookup by name."""

from __future__ import annotations

import argparse
from typing import Any

from monitor.cli._output import add_json_flag, console, print_json
from monitor.hardware.catalog import Accelerator, all_accelerators, lookup, suggestions
from monitor.hardware.detect import detect_accelerator
from monitor.hardware.dtypes import DTYPES, normalize_dtype
from monitor.hardware.nvml import open_backend


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "hardware",
        help="accelerator peaks: the catalogue, this machine's devices, a lookup by name",
        description="Dense peak FLOP/s per device and dtype, each with its source. Without --name: the "
        "catalogue and the devices found here (NVML). With --name: that device's peak (exit 1 when unknown).",
    )
    parser.add_argument("--name", metavar="DEVICE_NAME", help='a device name, e.g. "H100 SXM" or "NVIDIA L4"')
    parser.add_argument("--dtype", default="bf16", help=f"compute dtype: {', '.join(DTYPES)} (default bf16)")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def _peaks(acc: Accelerator) -> dict[str, float | None]:
    return {dtype: acc.peak(dtype) for dtype in DTYPES}


def _entry(acc: Accelerator) -> dict[str, Any]:
    return {
        "key": acc.key,
        "name": acc.name,
        "vendor": acc.vendor,
        "peak_flops_per_second": _peaks(acc),
        "pci_device_ids": [f"{i:#06x}" for i in acc.pci_device_ids],
        "driver_names": list(acc.driver_names),
        "source": acc.source,
    }


def run(args: argparse.Namespace) -> int:
    dtype = normalize_dtype(args.dtype, field="--dtype")
    if args.name is not None:
        return _lookup(args.name, dtype, as_json=args.json)
    backend = open_backend()
    devices = [detect_accelerator(dtype, index=i, backend=backend) for i in range(backend.device_count())]
    if args.json:
        print_json(
            {
                "dtype": dtype,
                "catalog": [_entry(acc) for acc in all_accelerators()],
                "nvml": {"available": backend.available, "reason": backend.reason},
                "devices": devices,
            }
        )
        return 0
    from rich.table import Table

    out = console()
    table = Table(
        title=f"Dense peaks, TFLOP/s (TOPS for int8); — no such unit, ? not verified; {dtype} in bold"
    )
    table.add_column("device", no_wrap=True)
    for d in DTYPES:
        table.add_column(d, justify="right", style="bold" if d == dtype else None, no_wrap=True, min_width=6)
    table.add_column("PCI ids")
    for acc in all_accelerators():
        cells = []
        for d in DTYPES:
            unit = acc.has_unit(d)
            value = acc.peak(d)
            cells.append("?" if unit is None else "—" if value is None else f"{value / 1e12:g}")
        table.add_row(acc.name, *cells, " ".join(f"{i:04x}" for i in acc.pci_device_ids))
    out.print(table)
    if not devices:
        out.print(f"No NVIDIA GPU found here: {backend.reason}.")
        out.print("For a run on this machine, measure a rate with `mfu calibrate` or pass peak_flops.")
    for info in devices:
        peak = (
            "unknown" if info.peak_flops_per_second is None else f"{info.peak_flops_per_second / 1e12:,.1f}"
        )
        out.print(
            f"GPU {info.index}: {info.device} — {dtype} peak {peak} TFLOP/s ({info.source}): {info.detail}"
        )
        if info.warning:
            out.print(f"  warning: {info.warning}")
    return 0


def _lookup(name: str, dtype: str, *, as_json: bool) -> int:
    acc = lookup(name)
    peak = acc.peak(dtype) if acc else None
    if acc is None:
        close = suggestions(name)
        reason = f"unknown device {name!r}" + (
            f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        )
    elif peak is None:
        close = []
        has = acc.has_unit(dtype)
        reason = (
            f"{acc.name} has no {dtype} units" if has is False else f"{acc.name}: no verified {dtype} figure"
        )
    else:
        close, reason = [], None
    if as_json:
        print_json(
            {
                "device": acc.name if acc else name,
                "peak_flops_per_second": peak,
                "dtype": dtype,
                "key": acc.key if acc else None,
                "source": acc.source if acc else None,
                "reason": reason,
                "suggestions": close,
            }
        )
    elif peak is not None and acc is not None:
        console().print(f"{acc.name}: {dtype} dense peak {peak / 1e12:,.1f} TFLOP/s ({acc.source})")
    else:
        console().print(f"{reason} — no peak; pass the figure yourself (peak_flops / --peak-tflops)")
    return 0 if peak is not None else 1
