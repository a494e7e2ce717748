"""One call from "a config or a preset" to its parameters and FLOPs per token: what ``mfu flops`` prints.

Supported model types go through the analytic model (no torch). Other model types are built with transformers
on the meta device and measured (``method: "measured"``) when transformers is installed; otherwise the error
lists the supported types.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from monitor.errors import InputError
from monitor.model.flops import FlopsPerToken, Recompute, flops_per_token, training_setup_from_parameters
from monitor.model.hf_config import SUPPORTED_MODEL_TYPES, load_config_dict, spec_from_hf_config
from monitor.model.params import ParamCount, count_params
from monitor.model.resolve import resolve_named_spec
from monitor.model.spec import ModelSpec


class ModelFigures(BaseModel):
    """A model's parameter counts and FLOPs per token, with the spec they came from (None when measured)."""

    model_config = ConfigDict(frozen=True)

    model: str
    model_type: str
    params: ParamCount
    flops_per_token: FlopsPerToken
    spec: ModelSpec | None = None

    def as_json(self) -> dict[str, Any]:
        """The ``mfu flops --json`` object."""
        f = self.flops_per_token
        spec = self.spec
        return {
            "model": self.model,
            "model_type": self.model_type,
            "method": f.method,
            "seq_len": f.seq_len,
            "params": self.params.model_dump(),
            "flops_per_token": {
                "forward": f.forward,
                "backward": f.backward,
                "training": f.training,
                "hardware": f.hardware,
                "breakdown": dict(f.breakdown),
                "breakdown_shares": f.shares(),
            },
            "conventions": {
                "attention": "causal (tokens attended)" if f.causal else "full S×S",
                "sliding_window": f.sliding_window,
                "recompute": f.recompute,
                "frozen": list(f.frozen),
                "counted": "matmuls only, 2 FLOPs per multiply-accumulate (as FlopCounterMode)",
            },
            "comparison": _comparison(self.params, f, spec),
        }


def _comparison(params: ParamCount, f: FlopsPerToken, spec: ModelSpec | None) -> dict[str, float]:
    """Training FLOPs per token by the common shortcuts, for reference."""
    out = {"6N": 6.0 * params.active}
    if spec is not None:
        # PaLM (Chowdhery et al. 2022, appendix B): 6N + 12·L·H·Q·T; here N = all (active) parameters,
        # H = query heads, Q = query/key head dim, T = sequence length (full S×S attention).
        attn = 12.0 * spec.num_layers * spec.num_heads * spec.head_dim * f.seq_len
        out["6N_plus_12LHQT"] = 6.0 * params.active + attn
    return out


def figures_for_spec(
    spec: ModelSpec,
    seq_len: int,
    *,
    causal: bool = False,
    sliding_window: bool | None = None,
    recompute: bool | Recompute = False,
    frozen: Iterable[str] | None = None,
) -> ModelFigures:
    flops = flops_per_token(
        spec, seq_len, causal=causal, sliding_window=sliding_window, recompute=recompute, frozen=frozen
    )
    return ModelFigures(
        model=spec.label,
        model_type=spec.model_type,
        params=count_params(spec),
        flops_per_token=flops,
        spec=spec,
    )


def figures_for(
    *,
    config: Any = None,
    preset: str | None = None,
    seq_len: int,
    causal: bool = False,
    sliding_window: bool | None = None,
    recompute: bool | Recompute = False,
    frozen: Iterable[str] | None = None,
) -> ModelFigures:
    """Figures for a Hugging Face config (dict, path, config object) or a preset name; exactly one of them."""
    if (config is None) == (preset is None):
        raise InputError("--config/--model", "give exactly one", "pass --config PATH or --model PRESET")
    conventions: dict[str, Any] = dict(
        causal=causal, sliding_window=sliding_window, recompute=recompute, frozen=frozen
    )
    if preset is not None:
        return figures_for_spec(resolve_named_spec(preset=preset), seq_len, **conventions)
    raw = load_config_dict(config)
    model_type = raw.get("model_type")
    if model_type in SUPPORTED_MODEL_TYPES or model_type in ("gemma3",) or not model_type:
        return figures_for_spec(resolve_named_spec(raw), seq_len, **conventions)
    if importlib.util.find_spec("transformers") is None:
        spec_from_hf_config(raw)  # raises the InputError listing the supported types
    if causal or recompute not in (False, None, "none") or frozen:
        raise InputError(
            "model_type",
            f"{model_type!r} is measured on the meta device, which counts full attention and all weights",
            "drop --causal/--recompute/--frozen, or use a supported model type: "
            + ", ".join(SUPPORTED_MODEL_TYPES),
        )
    from monitor.model.measure import MeasureError, measure_hf_config

    try:
        flops, params = measure_hf_config(config if hasattr(config, "to_dict") else raw, seq_len)
    except MeasureError as exc:
        raise InputError(
            "model_type", f"{model_type!r} could not be measured: {exc}", "use a supported type"
        ) from None
    name = raw.get("_name_or_path") or str(model_type)
    return ModelFigures(model=name, model_type=str(model_type), params=params, flops_per_token=flops)


def flops_for_model(
    model: Any,
    seq_len: int,
    *,
    spec: ModelSpec | None = None,
    causal: bool = False,
    recompute: bool | Recompute = False,
) -> FlopsPerToken:
    """FLOPs per token of a live model, with what it actually trains (for the live monitor).

    With a ``spec`` (or a Hugging Face ``model.config`` of a supported type) the analytic model is used, with
    frozen groups and LoRA adapters read from ``model.named_parameters()`` (``requires_grad``). Otherwise the
    module is measured once on the meta device (:func:`monitor.model.measure.measure_module`, which raises
    ``MeasureError`` when it cannot run there). Neither path touches the real device or copies weights.
    """
    config = getattr(model, "config", None)
    if spec is None and config is not None and hasattr(config, "to_dict"):
        raw = load_config_dict(config)
        if raw.get("model_type") in SUPPORTED_MODEL_TYPES:
            spec = spec_from_hf_config(raw)
    if spec is None:
        from monitor.model.measure import measure_module

        return measure_module(model, seq_len)
    setup = training_setup_from_parameters(spec, model.named_parameters())
    return flops_per_token(
        spec, seq_len, causal=causal, recompute=recompute, frozen=setup.frozen, adapters=setup.adapters
    )
