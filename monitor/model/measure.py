"""Measured FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one forward+backward on the meta device.

For model types the analytic model does not know, and for the live monitor when it gets a bare ``nn.Module``.
torch and transformers are imported lazily, inside the functions, so the rest of ``monitor.model`` stays
torch-free.

What is counted is what FlopCounterMode counts: matmuls, convolutions and fused attention kernels, 2 FLOPs per
multiply-accumulate. Nothing runs on the real device and no weight is copied: parameters are replaced by meta
tensors of the same shape (and ``requires_grad``) through ``torch.func.functional_call``.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from monitor.errors import InputError
from monitor.model.flops import FlopsPerToken
from monitor.model.params import ParamCount

if TYPE_CHECKING:  # pragma: no cover
    import torch


class MeasureError(RuntimeError):
    """The module cannot be measured on the meta device (data-dependent control flow, custom kernels, ...)."""


def _output_tensor(out: Any) -> torch.Tensor:
    import torch

    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, dict):
        for value in out.values():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                return value
    raise MeasureError(f"the module returned {type(out).__name__}, not a tensor or an output with logits")


def _lm_head_names(model: Any) -> set[str]:
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if head is None:
        return set()
    return {name for name, module in model.named_modules() if module is head}


def _takes(model: Any, name: str) -> bool:
    """Whether ``model``'s forward names a parameter ``name``."""
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def measure_module(model: torch.nn.Module, seq_len: int, *, batch_size: int = 1) -> FlopsPerToken:
    """Forward and training FLOPs per token of ``model`` on ``batch_size`` x ``seq_len`` token ids, measured
    on meta (the ids are meta tensors: their values never matter).

    Parameters with ``requires_grad=False`` stay frozen (no weight-gradient FLOPs). Raises
    :class:`MeasureError` when the module cannot run on the meta device (e.g. mixture-of-experts routing,
    which needs real values).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    for field, value in (("seq_len", seq_len), ("batch_size", batch_size)):
        if value <= 0:
            raise InputError(field, f"must be positive, got {value}", f"pass a positive {field}")
    state: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        state[name] = torch.empty_like(p, device="meta").requires_grad_(p.requires_grad)
    for name, b in model.named_buffers():
        state[name] = torch.empty_like(b, device="meta")
    ids = torch.zeros(batch_size, seq_len, dtype=torch.long, device="meta")
    kwargs: dict[str, Any] = {}
    if _takes(model, "attention_mask"):
        # A mask of ones: no padding, no packed documents. Without one, transformers looks for packed
        # documents in the position ids when no cache is used (training), which reads values: impossible on
        # meta. The mask itself costs no matmul FLOPs.
        kwargs["attention_mask"] = torch.ones(batch_size, seq_len, dtype=torch.long, device="meta")
    head_names = _lm_head_names(model)
    try:
        with FlopCounterMode(display=False) as fwd_counter:
            out = torch.func.functional_call(model, state, (ids,), kwargs, tie_weights=True, strict=False)
            loss = _output_tensor(out).float().sum()
        if loss.requires_grad:
            with FlopCounterMode(display=False) as bwd_counter:
                loss.backward()
            backward = float(bwd_counter.get_total_flops())
        else:
            backward = 0.0
    except MeasureError:
        raise
    except Exception as exc:  # data-dependent ops, device checks, custom kernels
        raise MeasureError(
            f"cannot run {type(model).__name__} on the meta device ({type(exc).__name__}: {exc}"[:300] + ")"
        ) from exc
    tokens = batch_size * seq_len
    forward = float(fwd_counter.get_total_flops())
    counts = fwd_counter.get_flop_counts()
    # FlopCounterMode keys modules as "<RootClass>.<qualified name>".
    root = type(model).__name__
    head = sum(sum(counts.get(f"{root}.{n}", {}).values()) for n in head_names)
    breakdown = {"layers": (forward - head) / tokens, "lm_head": head / tokens}
    return FlopsPerToken(
        forward=forward / tokens,
        training=(forward + backward) / tokens,
        hardware=(forward + backward) / tokens,
        breakdown=breakdown,
        seq_len=seq_len,
        causal=False,
        method="measured",
    )


def _count_model_params(model: Any) -> ParamCount:
    total = sum(p.numel() for p in model.parameters())
    seen: set[int] = set()
    embedding = 0
    modules = [model.get_input_embeddings(), model.get_output_embeddings()]
    modules += [m for m in model.modules() if type(m).__name__ == "Embedding" and m not in modules]
    for module in modules:
        if module is None:
            continue
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                embedding += p.numel()
    return ParamCount(
        total=total,
        active=total,
        embedding=embedding,
        non_embedding=total - embedding,
        active_non_embedding=total - embedding,
    )


def build_meta_model(config: Any) -> Any:
    """The transformers causal LM for ``config`` (dict, path or config object) on meta, eager kernels."""
    import torch

    try:
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError:  # pragma: no cover - depends on the environment
        raise InputError(
            "model_type",
            "not supported without transformers",
            "install transformers to measure other model types",
        ) from None
    from monitor.model.hf_config import load_config_dict

    if not hasattr(config, "to_dict"):
        raw = load_config_dict(config)
        model_type = raw.pop("model_type", None)
        try:
            config = AutoConfig.for_model(model_type, **raw)
        except (ValueError, KeyError):
            raise InputError(
                "model_type",
                f"{model_type!r} is unknown to transformers",
                "check the spelling, or update transformers",
            ) from None
    config._attn_implementation = "eager"
    config._experts_implementation = "eager"
    with torch.device("meta"):
        try:
            return AutoModelForCausalLM.from_config(config)
        except ValueError as exc:
            raise InputError(
                "model_type", f"no causal-LM class for it ({exc})"[:200], "pass a decoder model"
            ) from None


def measure_hf_config(config: Any, seq_len: int) -> tuple[FlopsPerToken, ParamCount]:
    """Measured FLOPs per token and exact parameter counts of a Hugging Face config of any model type (meta
    device).

    ``active`` equals ``total`` here: which experts a token uses cannot be known without running real values.
    """
    model = build_meta_model(config)
    flops = measure_module(model, seq_len)
    return flops, _count_model_params(model)
