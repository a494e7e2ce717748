"""ModelSpec: the architecture of a decoder-only transformer, as far as FLOPs and parameters depend on it.

One validated, frozen pydantic model. Build it from a Hugging Face config with
:func:`monitor.model.hf_config.spec_from_hf_config`, from a preset with
:func:`monitor.model.presets.load_preset`, or directly. Everything downstream (``params.py``, ``flops.py``,
``memory.py``) reads only this object.

Shapes follow the Hugging Face implementations: a layer is ``attention`` then ``mlp`` (or the two in parallel
for GPT-NeoX's parallel residual); attention projects ``hidden_size`` to ``num_heads * head_dim`` queries and
``num_kv_heads * head_dim`` keys and ``num_kv_heads * v_head_dim`` values (grouped-query attention), or uses
multi-head latent attention (``mla``); the MLP is gated (SwiGLU/GeGLU: gate, up, down) or not (up, down).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NormKind = Literal["rmsnorm", "layernorm"]
QKNorm = Literal["none", "head", "projection"]
NormPlacement = Literal["pre", "post", "sandwich"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MoESpec(_Frozen):
    """Mixture of experts in the MLP of the layers listed in ``layers`` (the others use the dense MLP).

    Each token goes through ``top_k`` of ``num_experts`` routed experts (each a gated or plain MLP of
    ``expert_intermediate_size``) and, when ``shared_intermediate_size`` > 0, one always-on shared MLP of that
    size (DeepSeek: ``n_shared_experts * moe_intermediate_size``; Qwen2-MoE:
    ``shared_expert_intermediate_size``), optionally scaled by a sigmoid gate ``hidden_size -> 1``
    (``shared_expert_gate``). The router is ``hidden_size -> num_experts`` (``router_bias`` adds a bias).
    """

    num_experts: int = Field(gt=0)
    top_k: int = Field(gt=0)
    expert_intermediate_size: int = Field(gt=0)
    shared_intermediate_size: int = Field(default=0, ge=0)
    shared_expert_gate: bool = False
    router_bias: bool = False
    layers: tuple[int, ...] = Field(description="indices of the layers whose MLP is the mixture of experts")

    @model_validator(mode="after")
    def _check(self) -> MoESpec:
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k ({self.top_k}) exceeds num_experts ({self.num_experts}); lower top_k")
        if len(set(self.layers)) != len(self.layers) or any(i < 0 for i in self.layers):
            raise ValueError("layers must be distinct non-negative layer indices")
        return self


class MLASpec(_Frozen):
    """Multi-head latent attention (DeepSeek-V2/V3).

    Queries: ``hidden -> q_lora_rank -> heads * (nope + rope)`` (or directly ``hidden -> heads * (nope +
    rope)`` when
    ``q_lora_rank`` is None, as in DeepSeek-V2-Lite). Keys/values: ``hidden -> kv_lora_rank + rope`` then
    ``kv_lora_rank -> heads * (nope + v)``. Output: ``heads * v -> hidden``.
    """

    q_lora_rank: int | None = Field(default=None, gt=0)
    kv_lora_rank: int = Field(gt=0)
    qk_nope_head_dim: int = Field(ge=0)
    qk_rope_head_dim: int = Field(ge=0)
    v_head_dim: int = Field(gt=0)


class ModelSpec(_Frozen):
    """A decoder-only transformer's architecture: what its FLOPs and parameter counts depend on."""

    model_type: str = Field(min_length=1)
    name: str | None = None
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0, description="query/key dimension per head (MLA: nope + rope)")
    v_head_dim: int = Field(gt=0, description="value dimension per head")
    intermediate_size: int = Field(gt=0, description="dense MLP width")
    mlp_gated: bool = True
    mlp_bias: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    qk_norm: QKNorm = Field(
        default="none",
        description="q/k RMSNorm weights: per head_dim (qwen3, gemma3) or per projection (olmo2)",
    )
    norm: NormKind = "rmsnorm"
    norm_placement: NormPlacement = Field(
        default="pre",
        description="pre: before attention and MLP (llama); post: on their outputs (olmo2); sandwich: both",
    )
    final_norm: bool = True
    tie_word_embeddings: bool = False
    position_embeddings: int = Field(default=0, ge=0, description="rows of a learned position table (gpt2)")
    parallel_residual: bool = False
    moe: MoESpec | None = None
    mla: MLASpec | None = None
    layer_windows: tuple[int | None, ...] | None = Field(
        default=None, description="sliding-window width per layer (None: full attention); None: all full"
    )

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) is not a multiple of num_kv_heads ({self.num_kv_heads});"
                " use a num_kv_heads that divides num_heads"
            )
        if self.mla is not None:
            if self.head_dim != self.mla.qk_nope_head_dim + self.mla.qk_rope_head_dim:
                raise ValueError("with mla, head_dim must equal qk_nope_head_dim + qk_rope_head_dim")
            if self.v_head_dim != self.mla.v_head_dim:
                raise ValueError("with mla, v_head_dim must equal mla.v_head_dim")
            if self.num_kv_heads != self.num_heads:
                raise ValueError("with mla, num_kv_heads must equal num_heads")
        if self.moe is not None and any(i >= self.num_layers for i in self.moe.layers):
            raise ValueError(f"moe.layers has an index >= num_layers ({self.num_layers})")
        if self.layer_windows is not None:
            if len(self.layer_windows) != self.num_layers:
                raise ValueError(f"layer_windows needs one entry per layer ({self.num_layers})")
            if any(w is not None and w <= 0 for w in self.layer_windows):
                raise ValueError("layer_windows entries must be positive or null")
        return self

    # Convenience views
    # -------------------------------------------------------------------------------------------
    def is_moe_layer(self, layer: int) -> bool:
        return self.moe is not None and layer in self.moe.layers

    def window(self, layer: int) -> int | None:
        """The sliding-window width of ``layer`` (None: full attention)."""
        return None if self.layer_windows is None else self.layer_windows[layer]

    @property
    def label(self) -> str:
        return self.name or self.model_type
