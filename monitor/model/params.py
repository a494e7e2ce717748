"""Parameter counts from a ModelSpec: exact integers, one canonical name per weight group.

Canonical names (used by ``flops_per_token(frozen=...)`` and :func:`frozen_from_param_names`):

- ``embedding`` (token table; also the LM head when tied), ``position_embedding`` (learned positions),
  ``lm_head`` (untied output projection), ``final_norm``;
- per layer ``layers.<i>.<part>``, with ``<part>`` one of ``attn_norm``, ``attn_out_norm``, ``mlp_norm``,
  ``mlp_out_norm``, ``q``, ``k``, ``v``, ``o``, ``q_norm``, ``k_norm`` (GQA); ``q_a``, ``q_a_norm``, ``q``,
  ``kv_a``,
  ``kv_a_norm``, ``kv_b``, ``o`` (MLA); ``gate``, ``up``, ``down`` (dense MLP); ``router``, ``experts.gate``,
  ``experts.up``, ``experts.down``, ``shared.gate``, ``shared.up``, ``shared.down``, ``shared_gate`` (MoE).

Conventions: a parameter is a trainable tensor element of the Hugging Face implementation
(``sum(p.numel())``); norm weights and biases count (non-embedding); buffers (rotary tables, DeepSeek-V3's
router score bias) do not.
``embedding`` = token table + learned position table + the untied LM head (the "non-embedding" count of Kaplan
et al. 2020 and of Qwen's model cards excludes all three). ``active`` = parameters a token touches: every
routed expert it is not sent to is left out (``num_experts - top_k`` per MoE layer).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from monitor.model.spec import ModelSpec

EMBEDDING_PARTS = ("embedding", "position_embedding", "lm_head")


class ParamCount(BaseModel):
    """Exact parameter counts (see the module docstring for what each includes)."""

    model_config = ConfigDict(frozen=True)

    total: int
    active: int
    embedding: int
    non_embedding: int
    active_non_embedding: int


def layer_param_sizes(spec: ModelSpec, layer: int) -> dict[str, int]:
    """Elements per canonical weight group of one layer (names without the ``layers.<i>.`` prefix).

    Biases are separate entries named ``<group>.bias``: a frozen bias with a trainable weight, or the
    reverse, costs different backward FLOPs.
    """
    h = spec.hidden_size
    sizes: dict[str, int] = {}

    def linear(name: str, n_in: int, n_out: int, bias: bool) -> None:
        sizes[name] = n_in * n_out
        if bias:
            sizes[name + ".bias"] = n_out

    def norm(name: str, width: int) -> None:
        sizes[name] = width
        if spec.norm == "layernorm":  # LayerNorm has a weight and a bias; RMSNorm only a weight
            sizes[name + ".bias"] = width

    if spec.norm_placement in ("pre", "sandwich"):
        norm("attn_norm", h)
    if spec.norm_placement in ("post", "sandwich"):
        norm("attn_out_norm", h)

    nh, nkv, d, dv = spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.v_head_dim
    if spec.mla is None:
        linear("q", h, nh * d, spec.qkv_bias)
        linear("k", h, nkv * d, spec.qkv_bias)
        linear("v", h, nkv * dv, spec.qkv_bias)
        if spec.qk_norm == "head":
            sizes["q_norm"] = d
            sizes["k_norm"] = d
        elif spec.qk_norm == "projection":
            sizes["q_norm"] = nh * d
            sizes["k_norm"] = nkv * d
    else:
        mla = spec.mla
        if mla.q_lora_rank is None:
            linear("q", h, nh * d, False)
        else:
            linear("q_a", h, mla.q_lora_rank, spec.qkv_bias)
            sizes["q_a_norm"] = mla.q_lora_rank
            linear("q", mla.q_lora_rank, nh * d, False)
        linear("kv_a", h, mla.kv_lora_rank + mla.qk_rope_head_dim, spec.qkv_bias)
        sizes["kv_a_norm"] = mla.kv_lora_rank
        linear("kv_b", mla.kv_lora_rank, nh * (mla.qk_nope_head_dim + dv), False)
    linear("o", nh * dv, h, spec.o_bias)

    if spec.norm_placement in ("pre", "sandwich"):
        norm("mlp_norm", h)
    if spec.norm_placement in ("post", "sandwich"):
        norm("mlp_out_norm", h)

    if spec.moe is not None and spec.is_moe_layer(layer):
        moe = spec.moe
        e, ie = moe.num_experts, moe.expert_intermediate_size
        linear("router", h, e, moe.router_bias)
        if spec.mlp_gated:
            sizes["experts.gate"] = e * h * ie
        sizes["experts.up"] = e * h * ie
        sizes["experts.down"] = e * ie * h
        if moe.shared_intermediate_size:
            si = moe.shared_intermediate_size
            if spec.mlp_gated:
                linear("shared.gate", h, si, spec.mlp_bias)
            linear("shared.up", h, si, spec.mlp_bias)
            linear("shared.down", si, h, spec.mlp_bias)
            if moe.shared_expert_gate:
                sizes["shared_gate"] = h
    else:
        i = spec.intermediate_size
        if spec.mlp_gated:
            linear("gate", h, i, spec.mlp_bias)
        linear("up", h, i, spec.mlp_bias)
        linear("down", i, h, spec.mlp_bias)
    return sizes


def param_sizes(spec: ModelSpec) -> dict[str, int]:
    """Elements per canonical weight group of the whole model, in execution order."""
    h = spec.hidden_size
    sizes: dict[str, int] = {"embedding": spec.vocab_size * h}
    if spec.position_embeddings:
        sizes["position_embedding"] = spec.position_embeddings * h
    for layer in range(spec.num_layers):
        for part, n in layer_param_sizes(spec, layer).items():
            sizes[f"layers.{layer}.{part}"] = n
    if spec.final_norm:
        sizes["final_norm"] = h
        if spec.norm == "layernorm":
            sizes["final_norm.bias"] = h
    if not spec.tie_word_embeddings:
        sizes["lm_head"] = spec.vocab_size * h
    return sizes


def count_params(spec: ModelSpec) -> ParamCount:
    """Total, active-per-token, embedding and non-embedding parameter counts of ``spec``."""
    sizes = param_sizes(spec)
    total = sum(sizes.values())
    embedding = sum(n for name, n in sizes.items() if name in EMBEDDING_PARTS)
    inactive = 0
    if spec.moe is not None:
        moe = spec.moe
        per_expert = (3 if spec.mlp_gated else 2) * spec.hidden_size * moe.expert_intermediate_size
        inactive = len(moe.layers) * (moe.num_experts - moe.top_k) * per_expert
    return ParamCount(
        total=total,
        active=total - inactive,
        embedding=embedding,
        non_embedding=total - embedding,
        active_non_embedding=total - inactive - embedding,
    )
