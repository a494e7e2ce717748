"""The monitor's options checked at construction (a clear one-line error naming the option and the fix), and
the default run id."""

from __future__ import annotations

import hashlib
import math
import os
import time
from typing import Any

import torch

from monitor.errors import InputError

# The options check_inputs looks at (MFUMonitor passes these of its arguments).
CHECKED = (
    "flops_per_token", "seq_len", "peak_flops", "port", "alert_below", "alert_after", "on_alert",
    "on_figures", "warmup_steps", "window_steps", "window_seconds", "log_every", "tick_seconds",
    "token_budget", "model", "optimizer", "recompute", "causal", "run", "tls", "log_path", "file_sd_dir",
    "registry", "timer", "addr", "rank", "world_size", "first_step",
)  # fmt: skip


def check_inputs(**kw: Any) -> None:
    def positive(name: str, value: Any, fix: str, *, allow_zero: bool = False) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(name, f"must be a number, got {value!r}", fix)
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an int beyond any float
            finite = False
        if not finite:
            raise InputError(name, f"must be a finite number, got {_short(value)}", fix)
        if value < 0 or (value == 0 and not allow_zero):
            raise InputError(
                name, f"must be {'non-negative' if allow_zero else 'positive'}, got {value!r}", fix
            )

    positive("flops_per_token", kw["flops_per_token"], "pass training FLOPs per token, e.g. 6 * params")
    positive("peak_flops", kw["peak_flops"], "pass the device's dense peak in FLOP/s, e.g. 989e12")
    positive("window_seconds", kw["window_seconds"], "pass e.g. window_seconds=60")
    positive("alert_after", kw["alert_after"], "pass seconds, e.g. alert_after=600", allow_zero=True)
    positive("tick_seconds", kw["tick_seconds"], "pass seconds, e.g. tick_seconds=2", allow_zero=True)
    for name in ("seq_len", "window_steps", "log_every", "token_budget"):
        v = kw[name]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise InputError(name, f"must be a positive integer, got {v!r}", f"pass e.g. {name}=...")
    for name, fix in (
        ("first_step", "pass the index of the run's next optimizer step, e.g. first_step=1000"),
        ("rank", "pass this process's rank, e.g. rank=0"),
    ):
        v = kw[name]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise InputError(name, f"must be a non-negative integer, got {v!r}", fix)
    size = kw["world_size"]
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise InputError("world_size", f"must be a positive integer, got {size!r}", "pass e.g. world_size=8")
    if size is not None and kw["rank"] is not None and kw["rank"] >= size:
        raise InputError(
            "rank", f"{kw['rank']} is not below world_size {size}", "pass 0 <= rank < world_size"
        )
    w = kw["warmup_steps"]
    if isinstance(w, bool) or not isinstance(w, int) or w < 0:
        raise InputError(
            "warmup_steps", f"must be a non-negative integer, got {w!r}", "pass e.g. warmup_steps=3"
        )
    port = kw["port"]
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
        raise InputError(
            "port", f"must be an integer 0..65535, got {port!r}", "pass e.g. port=9400 (0: any free)"
        )
    a = kw["alert_below"]
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 <= a <= 1:
        raise InputError(
            "alert_below", f"must be an MFU between 0 and 1, got {a!r}", "pass e.g. alert_below=0.25"
        )
    if kw["on_alert"] is not None and not callable(kw["on_alert"]):
        raise InputError("on_alert", "must be callable", "pass a function taking one AlertEvent")
    if kw["on_figures"] is not None and not callable(kw["on_figures"]):
        fix = "pass a function taking (figures: dict, step: int)"
        raise InputError("on_figures", "must be callable", fix)
    if kw["recompute"] not in (False, True, None, "none", "full", "selective"):
        raise InputError(
            "recompute", f"must be False, 'full' or 'selective', got {kw['recompute']!r}",
            "pass recompute='full' (whole layers checkpointed) or 'selective' (attention only)",
        )  # fmt: skip
    if not isinstance(kw["causal"], bool):
        raise InputError(
            "causal", f"must be True or False, got {kw['causal']!r}", "pass causal=True or False"
        )
    _check_objects(kw)
    model = kw["model"]
    if model is not None and not isinstance(model, torch.nn.Module):
        raise InputError(
            "model", f"must be a torch.nn.Module, got {type(model).__name__}", "pass the model you train"
        )
    opt = kw["optimizer"]
    if opt is not None and not hasattr(opt, "register_step_post_hook"):
        fix = "pass a torch.optim.Optimizer, or omit it and call mon.step(tokens=n) after each step"
        raise InputError("optimizer", f"{type(opt).__name__} has no register_step_post_hook", fix)


def unwrap_optimizer(optimizer: Any) -> Any:
    """The optimizer whose ``step`` really runs: a wrapper that subclasses ``torch.optim.Optimizer`` without
    its hook state (Accelerate's ``AcceleratedOptimizer``: its own ``step`` runs every micro-batch, the inner
    one only when gradients are synchronised) is replaced by the optimizer it wraps (``.optimizer``)."""
    inner = getattr(optimizer, "optimizer", None)
    if isinstance(inner, torch.optim.Optimizer) and not hasattr(optimizer, "_optimizer_step_post_hooks"):
        return inner
    return optimizer


TLS_OPTIONS = ("certfile", "keyfile", "client_cafile", "client_capath", "client_auth_required")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_objects(kw: dict[str, Any]) -> None:
    """The options that are names, paths and objects: each of the type it must be, or an error naming it."""
    run = kw["run"]
    if run is not None and (not isinstance(run, str) or not run.strip()):
        raise InputError("run", f"must be a non-empty string, got {_short(run)}", "pass run='my-run-name'")
    if not isinstance(kw["addr"], str) or not kw["addr"]:
        raise InputError(
            "addr", f"must be an address string, got {_short(kw['addr'])}", "pass addr='127.0.0.1'"
        )
    for name in ("log_path", "file_sd_dir"):
        value = kw[name]
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise InputError(
                name, f"must be a path, got {_short(value)}", f"pass {name}='runs/...' or a Path"
            )
    tls = kw["tls"]
    if tls is not None:
        if not isinstance(tls, dict):
            raise InputError(
                "tls", f"must be a dict, got {_short(tls)}", "pass tls={'certfile': ..., 'keyfile': ...}"
            )
        unknown = sorted(set(map(str, tls)) - set(TLS_OPTIONS))
        if unknown:
            raise InputError(
                "tls",
                f"unknown option(s) {', '.join(unknown)}",
                f"use prometheus-client's: {', '.join(TLS_OPTIONS)}",
            )
    registry = kw["registry"]
    if registry is not None and not (hasattr(registry, "register") and hasattr(registry, "collect")):
        raise InputError(
            "registry", f"must be a prometheus_client CollectorRegistry, got {_short(registry)}",
            "pass registry=prometheus_client.CollectorRegistry() or leave it out",
        )  # fmt: skip
    timer = kw["timer"]
    if timer is not None and not (
        callable(getattr(timer, "mark", None)) and callable(getattr(timer, "elapsed", None))
    ):
        raise InputError(
            "timer", f"must be a timer backend (mark() and elapsed()), got {_short(timer)}",
            "leave timer out: CUDA events on a CUDA model, the host clock otherwise",
        )  # fmt: skip


def default_run_id() -> str:
    """A run id every rank of one launch agrees on: MFU_RUN, torchrun's rendezvous id, or one from the master
    address; a local timestamp for a single process. Pass ``run=`` for a stable name."""
    explicit = os.environ.get("MFU_RUN")
    if explicit:
        return explicit
    elastic = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if elastic and elastic != "none":
        return elastic
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and os.environ.get("MASTER_PORT"):
        key = f"{os.environ.get('MASTER_ADDR', '')}:{os.environ['MASTER_PORT']}"
        return "run-" + hashlib.sha1(key.encode()).hexdigest()[:10]
    return time.strftime("run-%Y%m%d-%H%M%S", time.localtime()) + f"-{os.getpid()}"
