"""`mfu estimate`: tokens/s → MFU, or a target MFU → tokens/s; with the time and cost to train D tokens."""

from __future__ import annotations

import argparse
from typing import Any

from monitor.cli._output import add_json_flag, console, print_json
from monitor.errors import InputError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "estimate",
        help="MFU from throughput (or throughput for a target MFU), training time and cost",
        description="MFU = tokens/s × training FLOPs per token ÷ (peak per device × devices) "
        "(PaLM, appendix B). "
        "Model: --config, --model, or raw --params/--layers/--hidden (6N + 12·L·H·S FLOPs per token).",
    )
    model = p.add_argument_group("model (one of)")
    model.add_argument("--config", help="path to a Hugging Face config.json")
    model.add_argument("--model", help="preset name (see `mfu flops --help`)")
    model.add_argument("--params", type=float, help="raw mode: parameter count N")
    model.add_argument("--layers", type=float, help="raw mode: layers L")
    model.add_argument("--hidden", type=float, help="raw mode: attention width H (heads × head dim)")
    p.add_argument("--seq-len", type=float, required=True, help="sequence length S in tokens")
    p.add_argument("--causal", action="store_true", help="halve attention-score FLOPs (default: full S×S)")
    rate = p.add_mutually_exclusive_group(required=True)
    rate.add_argument("--tokens-per-second", type=float, help="aggregate tokens/s over all devices")
    rate.add_argument("--target-mfu", type=float, help="a target MFU in (0, 1]: gives the tokens/s it means")
    p.add_argument("--gpu", help="device name from the catalogue (`mfu hardware`)")
    p.add_argument("--peak-tflops", type=float, help="dense peak per device in TFLOP/s (instead of --gpu)")
    p.add_argument("--num-gpus", type=float, default=1, help="number of devices (default 1)")
    p.add_argument("--dtype", default="bf16", help="compute dtype of the peak (default bf16)")
    p.add_argument("--train-tokens", type=float, help="tokens to train: adds time and device-hours")
    p.add_argument(
        "--price-per-hour", type=float, help="dollars per device-hour: adds the cost (needs --train-tokens)"
    )
    add_json_flag(p)
    p.set_defaults(run=run)


def _flops_per_token(args: argparse.Namespace) -> tuple[float, dict[str, Any]]:
    from monitor.planning._inputs import positive_int
    from monitor.planning.mfu import palm_flops_per_token

    raw = [args.params, args.layers, args.hidden]
    seq_len = positive_int("--seq-len", args.seq_len)
    if any(v is not None for v in raw):
        if args.config is not None or args.model is not None:
            raise InputError(
                "--params", "raw mode mixed with --config/--model", "pass one way of giving the model"
            )
        if any(v is None for v in raw):
            raise InputError(
                "--params/--layers/--hidden", "raw mode needs all three", "pass N, L and H together"
            )
        if args.causal:
            raise InputError(
                "--causal", "not defined for raw mode (PaLM's formula is full S×S)", "drop --causal"
            )
        flops = palm_flops_per_token(args.params, args.layers, args.hidden, seq_len)
        return flops, {"model": None, "params": args.params, "convention": "6N + 12·L·H·S (PaLM appendix B)"}
    from monitor.model.flops import flops_per_token
    from monitor.model.params import count_params
    from monitor.planning.resolve import model_spec

    spec = model_spec(args.config, args.model)
    fpt = flops_per_token(spec, seq_len, causal=args.causal)
    convention = "causal attention" if args.causal else "full S×S attention"
    return fpt.training, {"model": spec.label, "params": count_params(spec).total, "convention": convention}


def run(args: argparse.Namespace) -> int:
    from monitor.planning.mfu import mfu_from_throughput, throughput_for_mfu
    from monitor.planning.resolve import device_peak

    flops, model_info = _flops_per_token(args)
    peak = device_peak(args.gpu, args.peak_tflops, args.dtype)
    if args.price_per_hour is not None and args.train_tokens is None:
        raise InputError("--price-per-hour", "a price needs a token count", "add --train-tokens D")
    kwargs = {"train_tokens": args.train_tokens, "price_per_device_hour": args.price_per_hour}
    if args.target_mfu is not None:
        est = throughput_for_mfu(args.target_mfu, flops, peak.flops_per_second, args.num_gpus, **kwargs)
    else:
        est = mfu_from_throughput(
            args.tokens_per_second, flops, peak.flops_per_second, args.num_gpus, **kwargs
        )
        if est.mfu > 1:
            raise InputError(
                "--tokens-per-second",
                f"implies MFU {est.mfu:.0%}, above the devices' peak",
                "check it is the aggregate over --num-gpus devices, and the --dtype and peak of the device",
            )
    out = {
        **est.model_dump(),
        **model_info,
        "device": peak.device,
        "dtype": peak.dtype,
        "peak_source": peak.source,
        "mode": "target-mfu" if args.target_mfu is not None else "throughput",
    }
    if args.json:
        print_json(out)
        return 0
    _print_table(out)
    return 0


def _print_table(out: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="MFU estimate", show_header=False)
    rows: list[tuple[str, str]] = [
        ("model", str(out["model"] or f"raw, N = {out['params']:.4g}")),
        ("FLOPs per token (training)", f"{out['flops_per_token']:.4g}  [{out['convention']}]"),
        ("device", f"{out['device'] or 'given peak'} × {out['num_devices']}, {out['dtype']}"),
        ("peak per device", f"{out['peak_flops_per_device'] / 1e12:.1f} TFLOP/s"),
        ("tokens/s (all devices)", f"{out['tokens_per_second']:,.0f}"),
        ("achieved model FLOP/s", f"{out['achieved_flops_per_second']:.4g}"),
        ("MFU", f"{out['mfu']:.1%}"),
    ]
    if out["train_tokens"] is not None:
        rows += [
            ("train tokens", f"{out['train_tokens']:.4g}"),
            ("wall clock", f"{out['train_days']:.2f} days"),
            ("device-hours", f"{out['device_hours']:,.0f}"),
        ]
    if out["cost_usd"] is not None:
        rows.append(("cost", f"${out['cost_usd']:,.0f} at ${out['price_per_device_hour']:.2f}/device-hour"))
    for key, value in rows:
        table.add_row(key, value)
    console().print(table)
