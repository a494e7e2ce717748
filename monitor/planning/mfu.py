"""Offline MFU: throughput ↔ model FLOPs utilization, and the time and cost of a training run.

MFU = achieved model FLOP/s ÷ peak FLOP/s (Chowdhery et al. 2022, "PaLM", appendix B), where achieved model
FLOP/s = tokens/s (aggregate over all devices) × training FLOPs per token and the peak is per device ×
devices. Raw mode uses PaLM's model FLOPs per token 6N + 12·L·H·Q·T with H·Q = d_model (full S×S attention,
no causal halving). Pure functions of plain numbers: no torch, no I/O.
"""

from __future__ import annotations

from pydantic import BaseModel

from monitor.planning._inputs import fraction, positive, positive_int


def palm_flops_per_token(params: float, layers: int, hidden: int, seq_len: int) -> float:
    """PaLM appendix B: 6N + 12·L·H·Q·T training FLOPs per token (H·Q = attention width, here ``hidden``)."""
    n = positive("--params", params, "pass the parameter count, e.g. 7e9")
    num_layers = positive_int("--layers", layers)
    width = positive_int("--hidden", hidden)
    seq = positive_int("--seq-len", seq_len)
    return 6.0 * n + 12.0 * num_layers * width * seq


class MfuEstimate(BaseModel):
    """Throughput and utilization; the time and cost when a token count and a price are given."""

    mfu: float
    tokens_per_second: float
    flops_per_token: float
    achieved_flops_per_second: float
    peak_flops_per_second: float  # all devices together
    peak_flops_per_device: float
    num_devices: int
    train_tokens: float | None = None
    train_seconds: float | None = None
    train_days: float | None = None
    device_hours: float | None = None
    price_per_device_hour: float | None = None
    cost_usd: float | None = None


def _with_run_cost(
    estimate: MfuEstimate, train_tokens: float | None, price_per_device_hour: float | None
) -> MfuEstimate:
    if train_tokens is None:
        if price_per_device_hour is not None:
            positive("--price-per-hour", price_per_device_hour)
        return estimate
    tokens = positive("--train-tokens", train_tokens, "pass the number of training tokens, e.g. 1e12")
    seconds = tokens / estimate.tokens_per_second
    device_hours = seconds / 3600.0 * estimate.num_devices
    update: dict[str, float | None] = {
        "train_tokens": tokens,
        "train_seconds": seconds,
        "train_days": seconds / 86400.0,
        "device_hours": device_hours,
    }
    if price_per_device_hour is not None:
        price = positive(
            "--price-per-hour", price_per_device_hour, "pass the price of one device-hour in dollars"
        )
        update["price_per_device_hour"] = price
        update["cost_usd"] = device_hours * price
    return estimate.model_copy(update=update)


def mfu_from_throughput(
    tokens_per_second: float,
    flops_per_token: float,
    peak_flops_per_device: float,
    num_devices: int = 1,
    *,
    train_tokens: float | None = None,
    price_per_device_hour: float | None = None,
) -> MfuEstimate:
    """MFU of ``tokens_per_second`` (aggregate over ``num_devices``) at ``flops_per_token`` training FLOPs."""
    rate = positive("--tokens-per-second", tokens_per_second, "pass the aggregate tokens/s over all devices")
    per_token = positive("flops_per_token", flops_per_token)
    peak = positive("--peak-tflops", peak_flops_per_device, "pass --gpu NAME or --peak-tflops X")
    devices = positive_int("--num-gpus", num_devices)
    achieved = rate * per_token
    estimate = MfuEstimate(
        mfu=achieved / (peak * devices),
        tokens_per_second=rate,
        flops_per_token=per_token,
        achieved_flops_per_second=achieved,
        peak_flops_per_second=peak * devices,
        peak_flops_per_device=peak,
        num_devices=devices,
    )
    return _with_run_cost(estimate, train_tokens, price_per_device_hour)


def throughput_for_mfu(
    target_mfu: float,
    flops_per_token: float,
    peak_flops_per_device: float,
    num_devices: int = 1,
    *,
    train_tokens: float | None = None,
    price_per_device_hour: float | None = None,
) -> MfuEstimate:
    """The aggregate tokens/s that ``target_mfu`` means: MFU × peak × devices ÷ FLOPs per token."""
    utilization = fraction("--target-mfu", target_mfu)
    per_token = positive("flops_per_token", flops_per_token)
    peak = positive("--peak-tflops", peak_flops_per_device, "pass --gpu NAME or --peak-tflops X")
    devices = positive_int("--num-gpus", num_devices)
    achieved = utilization * peak * devices
    estimate = MfuEstimate(
        mfu=utilization,
        tokens_per_second=achieved / per_token,
        flops_per_token=per_token,
        achieved_flops_per_second=achieved,
        peak_flops_per_second=peak * devices,
        peak_flops_per_device=peak,
        num_devices=devices,
    )
    return _with_run_cost(estimate, train_tokens, price_per_device_hour)
