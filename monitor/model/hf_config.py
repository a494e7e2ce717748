"""Hugging Face ``config.json`` -> ModelSpec, with each family's defaults applied as transformers applies
them.

Published config files leave defaults out, so a missing field takes the default of that family's
``configuration_<family>.py`` (transformers 5.x; the values are copied here so this path never imports
transformers). Where the modeling code derives a value (``head_dim = hidden_size // num_attention_heads``, the
sliding-window layer pattern), it is derived the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from monitor.errors import InputError, validation_problem
from monitor.model.spec import MLASpec, ModelSpec, MoESpec

_Cfg = Mapping[str, Any]


# Family defaults (transformers 5.x configuration_*.py). Only fields that change a FLOP or parameter count.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=None, head_dim=None, attention_bias=False,
                  mlp_bias=False, tie_word_embeddings=False),
    "mistral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=None, tie_word_embeddings=False,
                    sliding_window=4096),
    "mixtral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=None, tie_word_embeddings=False,
                    sliding_window=None, num_local_experts=8, num_experts_per_tok=2),
    "qwen2": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=None, head_dim=None, tie_word_embeddings=False,
                  use_sliding_window=False, sliding_window=4096, max_window_layers=28, layer_types=None),
    "qwen2_moe": dict(vocab_size=151936, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
                      num_attention_heads=16, num_key_value_heads=16, head_dim=None,
                      tie_word_embeddings=False, use_sliding_window=False, sliding_window=4096,
                      max_window_layers=28, layer_types=None,
                      decoder_sparse_step=1, moe_intermediate_size=1408, shared_expert_intermediate_size=5632,
                      num_experts_per_tok=4, num_experts=60, mlp_only_layers=None, qkv_bias=True),
    "qwen3": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=None, head_dim=128, attention_bias=False,
                  tie_word_embeddings=False, use_sliding_window=False, sliding_window=4096,
                  max_window_layers=28, layer_types=None),
    "qwen3_moe": dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=24,
                      num_attention_heads=32, num_key_value_heads=4, head_dim=None, attention_bias=False,
                      tie_word_embeddings=False, use_sliding_window=False, sliding_window=4096,
                      decoder_sparse_step=1, moe_intermediate_size=768, num_experts_per_tok=8,
                      num_experts=128, mlp_only_layers=None),
    "gemma": dict(vocab_size=256000, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=16, head_dim=256, attention_bias=False,
                  tie_word_embeddings=True),
    "gemma2": dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                   num_attention_heads=8, num_key_value_heads=4, head_dim=256, attention_bias=False,
                   tie_word_embeddings=True, sliding_window=4096, layer_types=None),
    "gemma3_text": dict(vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                        num_attention_heads=8, num_key_value_heads=4, head_dim=256, attention_bias=False,
                        tie_word_embeddings=True, sliding_window=4096, layer_types=None,
                        sliding_window_pattern=6),
    "phi3": dict(vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=None, head_dim=None, tie_word_embeddings=False,
                 sliding_window=None),
    "olmo2": dict(vocab_size=50304, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=None, head_dim=None, attention_bias=False,
                  tie_word_embeddings=False),
    "gpt2": dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
                 tie_word_embeddings=True),
    "gpt_neox": dict(vocab_size=50432, hidden_size=6144, num_hidden_layers=44, num_attention_heads=64,
                     intermediate_size=24576, attention_bias=True, use_parallel_residual=True,
                     tie_word_embeddings=False),
    "deepseek_v2": dict(vocab_size=102400, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                        num_attention_heads=32, attention_bias=False, tie_word_embeddings=False,
                        first_k_dense_replace=0, kv_lora_rank=512, q_lora_rank=1536, n_routed_experts=64,
                        n_shared_experts=2, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
                        num_experts_per_tok=None, moe_intermediate_size=1407),
    "deepseek_v3": dict(vocab_size=129280, hidden_size=7168, intermediate_size=18432, num_hidden_layers=61,
                        num_attention_heads=128, attention_bias=False, tie_word_embeddings=False,
                        first_k_dense_replace=3, kv_lora_rank=512, q_lora_rank=1536, n_routed_experts=256,
                        n_shared_experts=1, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
                        num_experts_per_tok=8, moe_intermediate_size=2048),
}  # fmt: skip

# transformers' attribute_map aliases: a config may use either name.
_ALIASES: dict[str, dict[str, str]] = {
    "mixtral": {"num_experts": "num_local_experts"},
    "qwen3_moe": {"num_local_experts": "num_experts"},
    "deepseek_v2": {"num_experts": "n_routed_experts", "num_local_experts": "n_routed_experts"},
    "deepseek_v3": {"num_experts": "n_routed_experts", "num_local_experts": "n_routed_experts"},
    "gpt2": {"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
             "max_position_embeddings": "n_positions"},
}  # fmt: skip

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_DEFAULTS)


# Bounds on a config's integers: far above any published model, low enough that the arithmetic stays instant
# (a layer count of 1e30 would build 1e30 per-layer entries).
MAX_LAYERS = 100_000
MAX_DIMENSION = 2**31 - 1
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "first_k_dense_replace")


class _Fields:
    """Fields of one config with the family's defaults; every bad value becomes an InputError naming it."""

    def __init__(self, model_type: str, raw: _Cfg) -> None:
        self.model_type = model_type
        self.values = dict(_DEFAULTS[model_type])
        aliases = _ALIASES.get(model_type, {})
        for key, value in raw.items():
            self.values[aliases.get(key, key)] = value

    def get(self, key: str) -> Any:
        return self.values.get(key)

    def integer(self, key: str, *, minimum: int = 1, optional: bool = False) -> Any:
        value = self.values.get(key)
        if value is None:
            if optional:
                return None
            raise InputError(
                key, f"missing (no default for model_type {self.model_type!r})", f"set {key} in the config"
            )
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise InputError(key, f"must be an integer, got {value!r}", f"set {key} to a whole number")
        if value < minimum:
            raise InputError(key, f"must be >= {minimum}, got {value}", f"set {key} to a positive value")
        limit = MAX_LAYERS if key in LAYER_KEYS else MAX_DIMENSION
        if value > limit:
            raise InputError(
                key, f"{value:.3g} is beyond any model (at most {limit:,})", f"check {key} in the config"
            )
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.values.get(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise InputError(key, f"must be true or false, got {value!r}", f"set {key} to true or false")
        return value

    def int_list(self, key: str) -> list[int]:
        value = self.values.get(key) or []
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) for v in value):
            raise InputError(
                key, f"must be a list of layer indices, got {value!r}", f"set {key} to e.g. [0, 1]"
            )
        return list(value)


def _heads(f: _Fields, hidden: int, *, head_dim_key: str | None = "head_dim") -> tuple[int, int, int]:
    heads = f.integer("num_attention_heads")
    kv = f.integer("num_key_value_heads", optional=True) or heads
    if heads % kv:
        raise InputError(
            "num_key_value_heads",
            f"{kv} does not divide num_attention_heads ({heads})",
            "use a number of key/value heads that divides the number of attention heads",
        )
    head_dim = f.integer(head_dim_key, optional=True) if head_dim_key else None
    if head_dim is None:
        if hidden % heads:
            raise InputError(
                "num_attention_heads",
                f"{heads} does not divide hidden_size ({hidden}) and no head_dim is given",
                "use a head count that divides hidden_size, or set head_dim",
            )
        head_dim = hidden // heads
    return heads, kv, head_dim


def _windows(f: _Fields, layers: int) -> tuple[int | None, ...] | None:
    """Per-layer sliding windows, derived as each family's config/modeling code derives them."""
    t = f.model_type
    explicit = f.get("layer_types")
    window = f.get("sliding_window")
    if t in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe") and not f.flag("use_sliding_window"):
        window = None
    if window is not None:
        window = f.integer("sliding_window")
    if explicit is not None:
        if not isinstance(explicit, list) or len(explicit) != layers:
            raise InputError(
                "layer_types", f"needs one entry per layer ({layers})", "fix or remove layer_types"
            )
        kinds = list(explicit)
    elif t in ("qwen2", "qwen3"):
        mwl = f.integer("max_window_layers", minimum=0)
        kinds = ["sliding_attention" if window is not None and i >= mwl else "full" for i in range(layers)]
    elif t == "qwen2_moe":
        mwl = f.integer("max_window_layers", minimum=0)
        kinds = ["sliding_attention" if (i + 1) % 2 and i < mwl and window else "full" for i in range(layers)]
    elif t == "gemma2":
        kinds = ["sliding_attention" if (i + 1) % 2 else "full" for i in range(layers)]
    elif t == "gemma3_text":
        pattern = f.integer("sliding_window_pattern")
        kinds = ["sliding_attention" if (i + 1) % pattern else "full" for i in range(layers)]
    else:  # mistral, mixtral, phi3, qwen3_moe: one window for every layer
        kinds = ["sliding_attention"] * layers
    if window is None:
        return None
    out = tuple(window if k == "sliding_attention" else None for k in kinds)
    return out if any(w is not None for w in out) else None


def _gqa(f: _Fields, name: str | None) -> tuple[dict[str, Any], int]:
    """The ModelSpec fields shared by the grouped-query-attention families (llama-like, Qwen MoE, Mixtral),
    and the layer count."""
    hidden = f.integer("hidden_size")
    layers = f.integer("num_hidden_layers")
    heads, kv, head_dim = _heads(f, hidden)
    fields: dict[str, Any] = dict(
        model_type=f.model_type,
        name=name,
        num_layers=layers,
        hidden_size=hidden,
        vocab_size=f.integer("vocab_size"),
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        v_head_dim=head_dim,
        intermediate_size=f.integer("intermediate_size"),
        tie_word_embeddings=f.flag("tie_word_embeddings"),
        layer_windows=_windows(f, layers),
    )
    return fields, layers


def _dense(f: _Fields, name: str | None) -> ModelSpec:
    t = f.model_type
    fields, _ = _gqa(f, name)
    attention_bias = f.flag("attention_bias")
    return ModelSpec(
        **fields,
        mlp_gated=True,
        mlp_bias=f.flag("mlp_bias"),
        qkv_bias=True if t == "qwen2" else attention_bias,
        o_bias=attention_bias and t != "qwen2",
        qk_norm={"qwen3": "head", "gemma3_text": "head", "olmo2": "projection"}.get(t, "none"),
        norm_placement={"gemma2": "sandwich", "gemma3_text": "sandwich", "olmo2": "post"}.get(t, "pre"),
    )


def _gpt2(f: _Fields, name: str | None) -> ModelSpec:
    hidden = f.integer("n_embd")
    heads = f.integer("n_head")
    if hidden % heads:
        raise InputError(
            "n_head", f"{heads} does not divide n_embd ({hidden})", "use a head count dividing n_embd"
        )
    inner = (
        f.integer("n_inner", optional=True) or 4 * hidden
    )  # modeling_gpt2: n_inner if not None else 4 * hidden
    return ModelSpec(
        model_type="gpt2",
        name=name,
        num_layers=f.integer("n_layer"),
        hidden_size=hidden,
        vocab_size=f.integer("vocab_size"),
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=hidden // heads,
        v_head_dim=hidden // heads,
        intermediate_size=inner,
        mlp_gated=False,
        mlp_bias=True,
        qkv_bias=True,
        o_bias=True,
        norm="layernorm",
        tie_word_embeddings=f.flag("tie_word_embeddings", True),
        position_embeddings=f.integer("n_positions"),
    )


def _gpt_neox(f: _Fields, name: str | None) -> ModelSpec:
    hidden = f.integer("hidden_size")
    heads, _, head_dim = _heads(f, hidden, head_dim_key=None)
    bias = f.flag("attention_bias", True)
    return ModelSpec(
        model_type="gpt_neox",
        name=name,
        num_layers=f.integer("num_hidden_layers"),
        hidden_size=hidden,
        vocab_size=f.integer("vocab_size"),
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=head_dim,
        v_head_dim=head_dim,
        intermediate_size=f.integer("intermediate_size"),
        mlp_gated=False,
        mlp_bias=True,  # dense_h_to_4h / dense_4h_to_h always carry biases
        qkv_bias=bias,
        o_bias=bias,
        norm="layernorm",
        tie_word_embeddings=f.flag("tie_word_embeddings"),
        parallel_residual=f.flag("use_parallel_residual", True),
    )


def _moe_layers(f: _Fields, layers: int) -> tuple[int, ...]:
    # modeling_qwen2_moe / qwen3_moe: sparse when not in mlp_only_layers and (i + 1) % decoder_sparse_step ==
    # 0
    step = f.integer("decoder_sparse_step")
    only_mlp = set(f.int_list("mlp_only_layers"))
    return tuple(i for i in range(layers) if i not in only_mlp and (i + 1) % step == 0)


def _qwen_moe(f: _Fields, name: str | None) -> ModelSpec:
    t = f.model_type
    fields, layers = _gqa(f, name)
    experts = f.integer("num_experts")
    moe = MoESpec(
        num_experts=experts,
        top_k=_top_k(f, experts),
        expert_intermediate_size=f.integer("moe_intermediate_size"),
        shared_intermediate_size=f.integer("shared_expert_intermediate_size", minimum=0)
        if t == "qwen2_moe"
        else 0,
        shared_expert_gate=t == "qwen2_moe",
        layers=_moe_layers(f, layers),
    )
    qkv_bias = f.flag("qkv_bias", True) if t == "qwen2_moe" else f.flag("attention_bias")
    return ModelSpec(
        **fields,
        qkv_bias=qkv_bias,
        o_bias=t == "qwen3_moe" and f.flag("attention_bias"),
        qk_norm="head" if t == "qwen3_moe" else "none",
        moe=moe,
    )


def _top_k(f: _Fields, experts: int) -> int:
    k = f.integer("num_experts_per_tok")
    if k > experts:
        raise InputError("num_experts_per_tok", f"{k} exceeds the number of experts ({experts})", "lower it")
    return int(k)


def _mixtral(f: _Fields, name: str | None) -> ModelSpec:
    fields, layers = _gqa(f, name)
    experts = f.integer("num_local_experts")
    return ModelSpec(
        **fields,
        moe=MoESpec(
            num_experts=experts,
            top_k=_top_k(f, experts),
            expert_intermediate_size=fields["intermediate_size"],
            layers=tuple(range(layers)),
        ),
    )


def _deepseek(f: _Fields, name: str | None) -> ModelSpec:
    hidden = f.integer("hidden_size")
    layers = f.integer("num_hidden_layers")
    heads = f.integer("num_attention_heads")
    nope = f.integer("qk_nope_head_dim", minimum=0)
    rope = f.integer("qk_rope_head_dim", minimum=0)
    v = f.integer("v_head_dim")
    if nope + rope == 0:
        raise InputError(
            "qk_nope_head_dim", "qk_nope_head_dim + qk_rope_head_dim is 0", "set positive head dims"
        )
    experts = f.integer("n_routed_experts")
    moe_inter = f.integer("moe_intermediate_size")
    first_dense = f.integer("first_k_dense_replace", minimum=0)
    bias = f.flag("attention_bias")
    return ModelSpec(
        model_type=f.model_type,
        name=name,
        num_layers=layers,
        hidden_size=hidden,
        vocab_size=f.integer("vocab_size"),
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=nope + rope,
        v_head_dim=v,
        intermediate_size=f.integer("intermediate_size"),
        qkv_bias=bias,
        o_bias=bias,
        tie_word_embeddings=f.flag("tie_word_embeddings"),
        mla=MLASpec(
            q_lora_rank=f.integer("q_lora_rank", optional=True),
            kv_lora_rank=f.integer("kv_lora_rank"),
            qk_nope_head_dim=nope,
            qk_rope_head_dim=rope,
            v_head_dim=v,
        ),
        moe=MoESpec(
            num_experts=experts,
            top_k=_top_k(f, experts),
            expert_intermediate_size=moe_inter,
            # modeling_deepseek_v2/v3: shared_experts = MLP(intermediate_size=moe_intermediate_size *
            # n_shared_experts)
            shared_intermediate_size=moe_inter * f.integer("n_shared_experts", minimum=0),
            layers=tuple(range(first_dense, layers)),
        ),
    )


_BUILDERS: dict[str, Callable[[_Fields, str | None], ModelSpec]] = {
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "mixtral": _mixtral,
    "qwen2_moe": _qwen_moe,
    "qwen3_moe": _qwen_moe,
    "deepseek_v2": _deepseek,
    "deepseek_v3": _deepseek,
}


def load_config_dict(config: Any) -> dict[str, Any]:
    """A plain dict from a dict, a path to ``config.json`` (or its folder), or a transformers config."""
    if isinstance(config, Mapping):
        return dict(config)
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        if path.is_dir():
            path = path / "config.json"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(
                str(path), "no such file", "pass the path of a Hugging Face config.json"
            ) from None
        except UnicodeDecodeError:
            raise InputError(str(path), "not a text file", "pass a Hugging Face config.json") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                str(path),
                f"not valid JSON ({exc.msg} at line {exc.lineno})",
                "pass a Hugging Face config.json",
            ) from None
        if not isinstance(data, dict):
            raise InputError(str(path), "is JSON but not an object", "pass a Hugging Face config.json")
        return data
    if hasattr(config, "to_dict"):
        return dict(config.to_dict())
    raise InputError(
        "config",
        f"unsupported type {type(config).__name__}",
        "pass a dict, a path to config.json or a config object",
    )


def spec_from_hf_config(config: Any, *, name: str | None = None) -> ModelSpec:
    """ModelSpec from a Hugging Face config (dict, path to ``config.json``, or ``PretrainedConfig``).

    Raises :class:`InputError` naming the field at fault, or listing the supported model types.
    """
    raw = load_config_dict(config)
    model_type = raw.get("model_type")
    if model_type == "gemma3" and isinstance(raw.get("text_config"), dict):
        # Gemma 3 multimodal checkpoints: the language model is text_config (the vision tower is not counted).
        raw = {**raw["text_config"], "model_type": "gemma3_text"}
        model_type = "gemma3_text"
    if not isinstance(model_type, str) or not model_type:
        raise InputError(
            "model_type", "missing", f"set model_type to one of: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    if model_type not in _DEFAULTS:
        raise InputError(
            "model_type",
            f"{model_type!r} has no analytic FLOPs model",
            f"use one of: {', '.join(SUPPORTED_MODEL_TYPES)}; other types are measured on the meta device "
            "with transformers installed (mfu flops --config does; so does MFUMonitor for a model)",
        )
    fields = _Fields(model_type, raw)
    builder = _BUILDERS.get(model_type, _dense)
    try:
        return builder(fields, name or raw.get("_name_or_path") or None)
    except ValidationError as exc:
        raise InputError("config", *validation_problem(exc)) from None
