"""`mfu import KIND FILE --out LOG`: another tool's training log as our JSONL run log, for `mfu analyze`."""

from __future__ import annotations

import argparse

from monitor.cli._output import add_json_flag, check_output, console, print_json, writing
from monitor.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    from monitor.analysis.importers import KINDS

    parser = subparsers.add_parser(
        "import",
        help="convert a Trainer / Lightning / torchtitan / Megatron log into a run log for `mfu analyze`",
        description=(
            "Convert another tool's training log into our JSONL run log. Kinds: hf-trainer "
            "(trainer_state.json), lightning-csv (CSVLogger metrics.csv with ThroughputMonitor columns), "
            "torchtitan and megatron (console logs). FLOPs and peak come from the log where it has them; "
            "your flags override them."
        ),
    )
    parser.add_argument("kind", choices=KINDS, metavar="KIND", help=f"one of: {', '.join(KINDS)}")
    parser.add_argument("file", metavar="FILE", help="the log file (or the folder holding it)")
    parser.add_argument("--out", required=True, metavar="LOG", help="JSONL run log to write")
    parser.add_argument("--run", dest="run_name", help="run name (default: from the file or folder name)")
    flops = parser.add_mutually_exclusive_group()
    flops.add_argument("--flops-per-token", type=float, help="training model FLOPs per token")
    flops.add_argument("--model", metavar="PRESET", help="model preset for the FLOPs model (needs --seq-len)")
    flops.add_argument(
        "--config", metavar="PATH", help="Hugging Face config.json for the FLOPs (needs --seq-len)"
    )
    parser.add_argument("--seq-len", type=int, help="sequence length (tokens per sample)")
    parser.add_argument("--causal", action="store_true", help="FLOPs model: count causal attention only")
    peak = parser.add_mutually_exclusive_group()
    peak.add_argument("--peak-tflops", type=float, help="peak dense TFLOP/s per device")
    peak.add_argument("--gpu", metavar="NAME", help="accelerator name for the peak (see `mfu hardware`)")
    parser.add_argument("--dtype", default=None, help="dtype for --gpu's peak (default bf16)")
    parser.add_argument("--num-gpus", type=int, help="devices of the run, where the log does not say")
    add_json_flag(parser)
    parser.set_defaults(run=run)


def _flops_per_token(args: argparse.Namespace) -> tuple[float | None, str | None]:
    if args.flops_per_token is not None:
        return args.flops_per_token, None
    if args.model is None and args.config is None:
        return None, None
    if args.seq_len is None:
        flag = "--model" if args.model else "--config"
        raise InputError("--seq-len", f"needed with {flag} to count attention FLOPs", "e.g. --seq-len 4096")
    from monitor.model.flops import flops_per_token
    from monitor.planning.resolve import model_spec

    spec = model_spec(args.config, args.model)
    name = args.model if args.model is not None else args.config
    return flops_per_token(spec, args.seq_len, causal=args.causal).training, name


def _peak(args: argparse.Namespace) -> tuple[float | None, str | None]:
    if args.peak_tflops is not None:
        if not args.peak_tflops > 0:
            raise InputError("--peak-tflops", f"must be positive, got {args.peak_tflops}", "e.g. 989")
        return args.peak_tflops * 1e12, None
    if args.gpu is None:
        return None, None
    from monitor.hardware.catalog import catalogue_peak

    value, accelerator = catalogue_peak(args.gpu, args.dtype or "bf16")
    return value, accelerator.name


def run(args: argparse.Namespace) -> int:
    from monitor.analysis.importers import ImportOptions, import_log, to_records, write_records

    flops, model = _flops_per_token(args)
    peak, device = _peak(args)
    options = ImportOptions(
        run=args.run_name,
        flops_per_token=flops,
        peak_flops_per_second=peak,
        num_gpus=args.num_gpus,
        seq_len=args.seq_len,
        dtype=args.dtype or ("bf16" if args.gpu else None),
        device=device,
    )
    out_path = check_output(args.out, "--out", inputs=[args.file])
    imported = import_log(args.kind, args.file, options)
    records = to_records(imported, options)
    with writing(out_path, "--out"):
        path = write_records(records, out_path)
    tokens = round(sum(i.tokens for i in imported.intervals))
    steps = sum(i.span for i in imported.intervals)
    result = {
        "out": str(path),
        "kind": imported.kind,
        "run": imported.run,
        "model": model,
        "intervals": len(imported.intervals),
        "steps": steps,
        "tokens": tokens,
        "devices": imported.devices,
        "flops_per_token": imported.flops_per_token,
        "flops_source": imported.flops_source,
        "peak_flops_per_second": imported.peak_flops_per_second,
        "peak_source": imported.peak_source,
        "time_source": imported.time_source,
        "notes": imported.notes,
    }
    if args.json:
        print_json(result)
        return 0
    out = console()
    out.print(
        f"wrote {len(records)} records to {path}: {len(imported.intervals)} intervals, {steps} steps, "
        f"{tokens:,} tokens, {imported.devices} device(s)",
        markup=False,
    )
    for note in imported.notes:
        out.print(f"note: {note}", markup=False)
    return 0
