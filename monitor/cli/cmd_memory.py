"""`mfu memory`: training memory per device (weights, gradients, optimizer, activations); does it fit."""

from __future__ import annotations

import argparse
from typing import Any

from monitor.cli._output import add_json_flag, console, print_json
from monitor.errors import InputError

GIB = 2**30


def register(subparsers: Any) -> None:
    from monitor.model.memory import OPTIMIZERS, PRECISIONS

    p = subparsers.add_parser(
        "memory",
        help="training memory per device and whether it fits a device",
        description="Bytes per device for weights, gradients, optimizer state (ZeRO 0-3) and activations "
        "(per-tensor accounting of the transformers Llama layer; Korthikanti et al. 2022 shown beside it).",
    )
    p.add_argument("--config", help="path to a Hugging Face config.json")
    p.add_argument("--model", help="preset name")
    p.add_argument("--seq-len", type=float, required=True, help="sequence length in tokens")
    p.add_argument(
        "--micro-batch", type=float, default=1, help="sequences per device per micro-step (default 1)"
    )
    p.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS, help="default adamw")
    p.add_argument(
        "--precision",
        default="mixed",
        choices=PRECISIONS,
        help="fp32; amp (autocast: fp32 weights, 16-bit activations); mixed (16-bit weights and grads, fp32 "
        "master + Adam state: 2+2+12 bytes); bf16 (everything bf16, no master). Default mixed",
    )
    p.add_argument("--zero", type=int, default=0, choices=(0, 1, 2, 3), help="ZeRO stage (shards over --dp)")
    p.add_argument("--tp", type=float, default=1, help="tensor-parallel size")
    p.add_argument("--pp", type=float, default=1, help="pipeline-parallel size")
    p.add_argument("--dp", type=float, default=1, help="data-parallel size")
    p.add_argument(
        "--recompute", action="store_true", help="full activation recomputation (checkpoint each layer)"
    )
    p.add_argument(
        "--flash-attention", action="store_true", help="flash/SDPA attention: no S×S scores stored"
    )
    p.add_argument(
        "--sequence-parallel", action="store_true", help="Megatron sequence parallelism: norms split by --tp"
    )
    p.add_argument("--gpu", help="device to check the fit against (catalogue name)")
    p.add_argument(
        "--device-memory-gb", type=float, help="device memory in GB (instead of, or to override, --gpu)"
    )
    add_json_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from monitor.model.memory import MemoryConfig, training_memory
    from monitor.planning._inputs import positive, positive_int
    from monitor.planning.resolve import model_spec

    spec = model_spec(args.config, args.model)
    config = MemoryConfig(
        seq_len=positive_int("--seq-len", args.seq_len),
        micro_batch=positive_int("--micro-batch", args.micro_batch),
        optimizer=args.optimizer,
        precision=args.precision,
        zero=args.zero,
        tp=positive_int("--tp", args.tp),
        pp=positive_int("--pp", args.pp),
        dp=positive_int("--dp", args.dp),
        recompute="full" if args.recompute else "none",
        flash_attention=args.flash_attention,
        sequence_parallel=args.sequence_parallel,
    )
    if config.zero > 0 and config.dp == 1:
        raise InputError(
            "--zero", "ZeRO shards over data-parallel ranks but --dp is 1", "pass --dp N (N > 1)"
        )
    est = training_memory(spec, config)
    capacity: float | None = None
    device: str | None = None
    if args.device_memory_gb is not None:
        capacity = positive("--device-memory-gb", args.device_memory_gb) * 1e9
        device = args.gpu
    elif args.gpu is not None:
        from monitor.hardware.catalog import resolve
        from monitor.planning.device_memory import device_capacity_bytes

        acc = resolve(args.gpu, field="--gpu")
        capacity = device_capacity_bytes(acc.key, args.gpu)
        device = acc.name
    out: dict[str, Any] = {"model": spec.label, **est.model_dump()}
    out["device"] = device
    out["device_memory_bytes"] = capacity
    out["fits"] = None if capacity is None else est.total_bytes <= capacity
    out["headroom_bytes"] = None if capacity is None else capacity - est.total_bytes
    if args.json:
        print_json(out)
        return 0
    _print(out)
    return 0


def _print(out: dict[str, Any]) -> None:
    from rich.table import Table

    c = out["config"]
    act = out["activations"]
    title = (
        f"{out['model']}: S={c['seq_len']} × micro-batch {c['micro_batch']}, "
        f"{c['optimizer']}, {c['precision']}, "
        f"ZeRO-{c['zero']}, tp={c['tp']} pp={c['pp']} dp={c['dp']}"
        f"{', recompute' if c['recompute'] == 'full' else ''}{', flash' if c['flash_attention'] else ''}"
    )
    table = Table(title=title)
    table.add_column("per device")
    table.add_column("GiB", justify="right")
    table.add_column("note")
    bpp = out["bytes_per_param"]
    table.add_row(
        "weights", f"{out['weights_bytes'] / GIB:.2f}", f"{bpp['weights']} B × {out['params_per_device']:.4g}"
    )
    table.add_row("gradients", f"{out['gradients_bytes'] / GIB:.2f}", f"{bpp['gradients']} B/param")
    table.add_row("optimizer state", f"{out['optimizer_bytes'] / GIB:.2f}", f"{bpp['optimizer']} B/param")
    table.add_row(
        "activations",
        f"{out['activations_bytes'] / GIB:.2f}",
        f"Korthikanti eq. 1 would say {act['korthikanti_bytes'] / GIB:.2f} (+ head)",
    )
    table.add_row("total", f"{out['total_bytes'] / GIB:.2f}", "")
    console().print(table)
    if not act["measured_family"]:
        console().print(
            "[yellow]activations: accounting measured on Llama-style layers; for this architecture it is an "
            "estimate (GPT-2: measured 28-51% low)[/yellow]"
        )
    if out["fits"] is not None:
        verdict = "fits" if out["fits"] else "does NOT fit"
        console().print(
            f"{verdict} in {out['device'] or 'the device'} ({out['device_memory_bytes'] / 1e9:.0f} GB): "
            "headroom "
            f"{out['headroom_bytes'] / GIB:.2f} GiB before buffers, fragmentation and the CUDA context"
        )
