"""`mfu scaling`: compute-optimal model size and tokens, a run's verdict, and what a dollar budget buys."""

from __future__ import annotations

import argparse
from typing import Any

from monitor.cli._output import add_json_flag, console, print_json
from monitor.errors import InputError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "scaling",
        help="scaling laws: compute-optimal N and D, run verdicts, budget → compute",
        description="Compute-optimal parameters and tokens for a compute budget (C = 6·N·D) under "
        "chinchilla (Hoffmann et al. 2022, approach 3), epoch (Besiroglu et al. 2024) or kaplan "
        "(Kaplan et al. 2020). Give --compute FLOPs, or --budget-usd with a device, MFU and price; "
        "--params with --tokens judges a run; --known-runs judges GPT-3, Gopher, Chinchilla, LLaMA, Llama 3.",
    )
    p.add_argument("--compute", type=float, help="training compute in FLOPs, e.g. 5.76e23")
    p.add_argument("--law", default="chinchilla", help="chinchilla (default), epoch or kaplan")
    p.add_argument("--compare", action="store_true", help="show every law side by side")
    budget = p.add_argument_group("dollar budget → compute")
    budget.add_argument("--budget-usd", type=float, help="budget in dollars")
    budget.add_argument("--gpu", help="device name from the catalogue")
    budget.add_argument(
        "--peak-tflops", type=float, help="dense peak per device in TFLOP/s (instead of --gpu)"
    )
    budget.add_argument("--dtype", default="bf16", help="compute dtype of the peak (default bf16)")
    budget.add_argument("--num-gpus", type=float, default=1, help="devices (sets the wall-clock time)")
    budget.add_argument("--mfu", type=float, help="expected MFU in (0, 1], e.g. 0.4")
    budget.add_argument("--price-per-hour", type=float, help="dollars per device-hour")
    run_group = p.add_argument_group("judge a run")
    run_group.add_argument("--params", type=float, help="parameters N of a run")
    run_group.add_argument("--tokens", type=float, help="training tokens D of a run")
    p.add_argument("--known-runs", action="store_true", help="judge the published runs")
    add_json_flag(p)
    p.set_defaults(run=run)


def _budget(args: argparse.Namespace) -> dict[str, Any] | None:
    from monitor.planning.resolve import device_peak
    from monitor.planning.scaling import compute_from_budget

    if args.budget_usd is None:
        for flag, value in (("--mfu", args.mfu), ("--price-per-hour", args.price_per_hour)):
            if value is not None:
                raise InputError(flag, "only used with --budget-usd", "add --budget-usd or drop it")
        return None
    if args.compute is not None:
        raise InputError("--compute/--budget-usd", "both given", "pass one of --compute or --budget-usd")
    if args.mfu is None:
        raise InputError("--mfu", "a budget needs the MFU you expect", "add --mfu, e.g. 0.4")
    if args.price_per_hour is None:
        raise InputError(
            "--price-per-hour", "a budget needs a price", "add --price-per-hour in $/device-hour"
        )
    peak = device_peak(args.gpu, args.peak_tflops, args.dtype)
    result = compute_from_budget(
        args.budget_usd, args.price_per_hour, peak.flops_per_second, args.mfu, args.num_gpus
    )
    return {**result.model_dump(), "device": peak.device, "dtype": peak.dtype}


def run(args: argparse.Namespace) -> int:
    from monitor.planning.scaling import LAWS, assess_known_runs, assess_run, compute_optimal, get_law

    law = get_law(args.law)
    out: dict[str, Any] = {
        "law": law.name,
        "law_source": law.source,
        "param_convention": law.param_convention,
    }
    budget = _budget(args)
    compute = budget["compute"] if budget is not None else args.compute
    if budget is not None:
        out["budget"] = budget
    if (args.params is None) != (args.tokens is None):
        raise InputError("--params/--tokens", "judging a run needs both", "pass --params N and --tokens D")
    if compute is None and args.params is None and not args.known_runs:
        raise InputError(
            "--compute",
            "nothing to compute",
            "pass --compute FLOPs, --budget-usd ..., --params/--tokens or --known-runs",
        )
    if compute is not None:
        best = compute_optimal(compute, law.name)
        out.update(
            compute=best.compute,
            params=best.params,
            tokens=best.tokens,
            tokens_per_param=best.tokens_per_param,
            predicted_loss=best.predicted_loss,
        )
        if args.compare:
            out["compare"] = [compute_optimal(compute, name).model_dump() for name in LAWS]
    if args.params is not None:
        out["run"] = assess_run(args.params, args.tokens, law.name).model_dump()
    if args.known_runs:
        names = list(LAWS) if args.compare else [law.name]
        out["known_runs"] = [r.model_dump() for name in names for r in assess_known_runs(name)]
    if args.json:
        print_json(out)
        return 0
    _print(out)
    return 0


def _print(out: dict[str, Any]) -> None:
    from rich.table import Table

    con = console()
    con.print(f"law: [bold]{out['law']}[/bold] — {out['law_source']}; N = {out['param_convention']}")
    if "budget" in out:
        b = out["budget"]
        con.print(
            f"budget ${b['budget_usd']:,.0f} at ${b['price_per_device_hour']:.2f}/device-hour = "
            f"{b['device_hours']:,.0f} device-hours ({b['wall_clock_hours']:,.0f} h on {b['num_devices']} "
            f"× {b['device'] or 'given peak'}) at MFU {b['mfu']:.0%} → C = {b['compute']:.3g} FLOPs"
        )
    if "params" in out:
        loss = out["predicted_loss"]
        con.print(
            f"C = {out['compute']:.3g} FLOPs → N = {out['params']:.3g} parameters, "
            f"D = {out['tokens']:.3g} tokens "
            f"({out['tokens_per_param']:.1f} tokens/parameter), predicted loss "
            f"{'n/a' if loss is None else f'{loss:.3f}'} nats/token"
        )
    if "compare" in out:
        table = Table(title="laws compared")
        for col in ("law", "params", "tokens", "tokens/param", "loss"):
            table.add_column(col)
        for a in out["compare"]:
            table.add_row(
                a["law"],
                f"{a['params']:.3g}",
                f"{a['tokens']:.3g}",
                f"{a['tokens_per_param']:.1f}",
                f"{a['predicted_loss']:.3f}",
            )
        con.print(table)
    runs = ([out["run"]] if "run" in out else []) + out.get("known_runs", [])
    if runs:
        table = Table(title="runs against the compute-optimal allocation at their compute (C = 6ND)")
        for col in ("run", "law", "N", "D", "D/N", "opt. N", "opt. D", "loss", "opt.", "verdict"):
            table.add_column(col, no_wrap=col in ("run", "verdict"))
        for r in runs:
            opt = r["optimal"]
            table.add_row(
                r["name"] or "this run", r["law"][:5], _si(r["params"]), _si(r["tokens"]),
                f"{r['tokens_per_param']:.0f}", _si(opt["params"]), _si(opt["tokens"]),
                f"{r['predicted_loss']:.3f}", f"{opt['predicted_loss']:.3f}", r["verdict"],
            )  # fmt: skip
        con.print(table)


def _si(value: float) -> str:
    """175e9 -> '175B', 1.4e12 -> '1.4T' (three significant digits)."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"
