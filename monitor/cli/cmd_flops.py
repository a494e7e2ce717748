"""`mfu flops (--config PATH | --model PRESET) --seq-len S [--causal]`: parameters and FLOPs per token."""

from __future__ import annotations

import argparse

from monitor.cli._output import add_json_flag, console, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "flops",
        help="parameters and FLOPs per token of a model (exact, with a breakdown)",
        description=(
            "Exact parameter counts and FLOPs per token (forward, training, hardware) of a Hugging Face "
            "config or a preset, with a breakdown by component. Default convention: full S×S attention, "
            "as eager attention computes and PaLM's 6N + 12·L·H·Q·T counts; --causal counts the tokens "
            "actually attended (and sliding windows)."
        ),
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", metavar="PATH", help="a Hugging Face config.json (or its folder)")
    source.add_argument("--model", metavar="PRESET", help="a preset name, e.g. llama-2-7b (see --list)")
    source.add_argument("--list", action="store_true", help="list the presets and exit")
    parser.add_argument("--seq-len", type=int, metavar="S", help="tokens per sequence (required)")
    parser.add_argument(
        "--causal",
        action="store_true",
        help="charge attention for tokens actually attended (causal, windows)",
    )
    parser.add_argument(
        "--no-window", action="store_true", help="with --causal: ignore sliding windows (causal mask only)"
    )
    parser.add_argument(
        "--recompute",
        choices=["none", "full", "selective"],
        default="none",
        help="activation recomputation: adds to hardware FLOPs (HFU), not model FLOPs",
    )
    parser.add_argument(
        "--frozen",
        action="append",
        metavar="PATTERN",
        help="frozen parameter group(s), e.g. embedding, 'layers.0', 'layers.*.q' (repeatable)",
    )
    add_json_flag(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from monitor.errors import InputError
    from monitor.model.presets import list_presets, preset_info

    if args.list:
        names = list_presets()
        if args.json:
            print_json({"presets": [{"name": n, "source": preset_info(n)["source"]} for n in names]})
        else:
            for name in names:
                console().print(name)
        return 0
    if args.config is None and args.model is None:
        raise InputError("--config/--model", "missing", "pass --config PATH or --model PRESET (see --list)")
    if args.seq_len is None:
        raise InputError("--seq-len", "missing", "pass the training sequence length, e.g. --seq-len 4096")
    if args.seq_len <= 0:
        raise InputError("--seq-len", f"must be positive, got {args.seq_len}", "pass e.g. --seq-len 4096")
    from monitor.model.summary import figures_for

    figures = figures_for(
        config=args.config,
        preset=args.model,
        seq_len=args.seq_len,
        causal=args.causal,
        sliding_window=False if args.no_window else None,
        recompute=args.recompute,
        frozen=args.frozen,
    )
    if args.json:
        print_json(figures.as_json())
        return 0
    _table(figures.as_json())
    return 0


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3f} {unit}"
    return f"{x:.1f} "


def _table(data: dict) -> None:
    from rich.table import Table

    out = console()
    f, p = data["flops_per_token"], data["params"]
    conv = data["conventions"]
    out.print(
        f"[bold]{data['model']}[/bold] ({data['model_type']}, {data['method']}) at S = {data['seq_len']:,}; "
        f"attention {conv['attention']}"
        + (", sliding windows" if conv["sliding_window"] else "")
        + (f", frozen {', '.join(conv['frozen'])}" if conv["frozen"] else "")
    )
    params = Table(title="Parameters", title_justify="left")
    params.add_column("count")
    params.add_column("exact", justify="right")
    for key in ("total", "active", "embedding", "non_embedding"):
        params.add_row(key.replace("_", "-"), f"{p[key]:,}")
    out.print(params)
    table = Table(title="Forward FLOPs per token", title_justify="left")
    table.add_column("component")
    table.add_column("FLOPs", justify="right")
    table.add_column("share", justify="right")
    for name, value in f["breakdown"].items():
        table.add_row(name, _si(value) + "FLOP", f"{100 * f['breakdown_shares'][name]:.1f}%")
    out.print(table)
    totals = Table(title="Per token", title_justify="left")
    totals.add_column("figure")
    totals.add_column("FLOPs", justify="right")
    totals.add_column("× forward", justify="right")
    for key, label in (("forward", "forward"), ("training", "training (model FLOPs, MFU)")):
        totals.add_row(label, _si(f[key]) + "FLOP", f"{f[key] / f['forward']:.3f}")
    if conv["recompute"] != "none":
        totals.add_row(f"hardware ({conv['recompute']} recompute, HFU)", _si(f["hardware"]) + "FLOP",
                       f"{f['hardware'] / f['forward']:.3f}")  # fmt: skip
    for key, value in data["comparison"].items():
        totals.add_row(
            f"[dim]{key.replace('_', ' ')}[/dim]", _si(value) + "FLOP", f"{value / f['forward']:.3f}"
        )
    out.print(totals)
