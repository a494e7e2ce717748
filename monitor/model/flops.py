"""FLOPs per token of a ModelSpec: forward, training (model FLOPs) and hardware FLOPs, with a breakdown.

Pure Python, no torch. What is counted is what ``torch.utils.flop_counter.FlopCounterMode`` counts on the
Hugging Face implementation with eager attention: matrix multiplies only, 2 FLOPs per multiply-accumulate
(PaLM, Chowdhery et al. 2022, appendix B). Embedding lookups, norms, activations, softmax, rotary embeddings,
residual adds, bias adds and the loss are not counted (they are elementwise and well under 1% of the total).

Forward FLOPs per token:
- every weight matrix a token goes through costs 2 x its elements (n_in x n_out): attention projections, the
  dense MLP or the ``top_k`` routed experts plus any shared expert, the router, the LM head;
- attention per layer and head costs 2·K·d_qk for the scores (Q·Kᵀ) plus 2·K·d_v for the values (P·V), with K
  the keys each query is charged for. Default (``causal=False``): K = S, the full S×S matrix that eager
  attention computes and that PaLM's 6N + 12·L·H·Q·T counts. ``causal=True``: K = the tokens each query
  actually attends, averaged over the sequence, with the diagonal (each query's own key) counted as half, so
  that a causal mask costs exactly half of S×S (the convention: ``--causal`` halves the score terms):
  S/2 without a window, mean(min(i, W)) - 1/2 for i = 1..S with a sliding window W. (The mask itself holds
  (S+1)/2 keys per query; the half-diagonal convention differs from it by 1/(S+1) of the score terms.)

Backward: every matmul y = x·W costs one matmul for dL/dx (when x depends on something trainable) and one for
dL/dW (when W is trainable) — so training = 3 x forward when everything trains. With frozen parameters, the
graph is walked as autograd walks it: a frozen weight skips its weight gradient, and a tensor that depends on
nothing trainable gets no input gradient (frozen first layers cost no backward at all).

Hardware FLOPs (for HFU): with ``recompute="full"`` every layer that backward reaches runs its forward again
(per-layer activation checkpointing, as ``torch.utils.checkpoint`` and Hugging Face's gradient checkpointing
do; the LM head is not recomputed); with ``"selective"`` only the attention scores and values are (Korthikanti
et al. 2022).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from monitor.errors import InputError
from monitor.model.params import param_sizes
from monitor.model.spec import ModelSpec

Recompute = Literal["none", "full", "selective"]

# Breakdown keys, in display order.
COMPONENTS = (
    "attention_proj",
    "attention_scores",
    "mlp",
    "experts",
    "shared_experts",
    "router",
    "lm_head",
    "adapters",
)


class FlopsPerToken(BaseModel):
    """FLOPs per token of one training sequence, and the conventions they follow."""

    model_config = ConfigDict(frozen=True)

    forward: float
    training: float
    hardware: float
    breakdown: dict[str, float]
    seq_len: int
    causal: bool
    sliding_window: bool = False
    recompute: Recompute = "none"
    frozen: tuple[str, ...] = ()
    method: Literal["analytic", "measured"] = "analytic"

    @property
    def backward(self) -> float:
        return self.training - self.forward

    def shares(self) -> dict[str, float]:
        """Each component's share of the forward FLOPs (0..1)."""
        total = sum(self.breakdown.values()) or 1.0
        return {k: v / total for k, v in self.breakdown.items()}


def attended_keys(seq_len: int, window: int | None, causal: bool) -> float:
    """Keys each query is charged for, averaged over a sequence of ``seq_len`` tokens.

    Full attention: S (or min(S, W) with a window). Causal: query i (1-based) attends min(i, W) keys, its own
    among them; counting that diagonal key as half gives S/2 without a window (exactly half of S×S, as
    the ``--causal`` convention prescribes) and (W(W+1)/2 + (S-W)·W) / S - 1/2 with one (W < S).
    """
    s = seq_len
    if not causal:
        return float(s if window is None else min(s, window))
    if window is None or window >= s:
        return s / 2
    w = window
    return (w * (w + 1) / 2 + (s - w) * w) / s - 0.5


class _Graph:
    """A token's path through the model, walked the way autograd walks it, summing matmul FLOPs."""

    def __init__(
        self, trainable: Callable[[str], bool], names: set[str], adapters: Mapping[str, int] | None = None
    ) -> None:
        self.trainable = trainable
        self.adapters = dict(adapters or {})  # weight group -> LoRA rank
        self.names = names  # canonical names that exist (biases only where the model has them)
        self.rg: dict[str, bool] = {}  # tensor -> depends on something trainable (needs a gradient)
        self.forward: dict[str, float] = dict.fromkeys(COMPONENTS, 0.0)
        self.backward = 0.0

    def leaf(self, out: str, weight: str) -> None:
        self.rg[out] = self._trains(weight)

    def _trains(self, weight: str | None) -> bool:
        """Whether a weight group or its bias exists and trains (either makes its output need a gradient)."""
        if weight is None:
            return False
        return any(name in self.names and self.trainable(name) for name in (weight, weight + ".bias"))

    def matmul(
        self, out: str, x: str, weight: str, n_in: int, n_out: int, component: str, times: int = 1
    ) -> None:
        """y = x·W (+ b), W n_in x n_out, ``times`` per token (top-k experts).

        Forward 2·n_in·n_out; backward the same again for dx when x needs a gradient, and again for dW when W
        trains. A LoRA adapter on W (rank r: y += x·A·B) adds 2·r·(n_in + n_out) forward and, backward, dB and
        d(xA) (2·r·n_out each), dA (2·r·n_in) and, when x needs it, dx through A (2·r·n_in).
        """
        flops = 2.0 * n_in * n_out * times
        x_rg, w_rg = self.rg[x], self.trainable(weight)
        self.forward[component] += flops
        self.backward += flops * (int(x_rg) + int(w_rg))
        rank = self.adapters.get(weight, 0)
        if rank:
            self.forward["adapters"] += 2.0 * rank * (n_in + n_out) * times
            self.backward += 2.0 * rank * (2 * n_out + n_in + (n_in if x_rg else 0)) * times
        self.rg[out] = x_rg or self._trains(weight) or bool(rank)

    def product(self, out: str, a: str, b: str, flops: float, component: str) -> None:
        """y = a·b of two activations (attention): one backward matmul per operand that needs a gradient."""
        self.forward[component] += flops
        self.backward += flops * (int(self.rg[a]) + int(self.rg[b]))
        self.rg[out] = self.rg[a] or self.rg[b]

    def elementwise(self, out: str, inputs: Iterable[str], weight: str | None = None) -> None:
        """Uncounted op (norm, activation, add, scaling): only propagates whether a gradient is needed."""
        self.rg[out] = any(self.rg[i] for i in inputs) or self._trains(weight)


def _attention(g: _Graph, spec: ModelSpec, p: str, x: str, keys: float) -> str:
    """Attention of layer prefix ``p`` on input ``x``; returns the output tensor name."""
    h, nh, nkv, d, dv = spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.v_head_dim
    if spec.mla is None:
        g.matmul("q", x, p + "q", h, nh * d, "attention_proj")
        g.matmul("k", x, p + "k", h, nkv * d, "attention_proj")
        g.matmul("v", x, p + "v", h, nkv * dv, "attention_proj")
        if spec.qk_norm != "none":
            g.elementwise("q", ["q"], p + "q_norm")
            g.elementwise("k", ["k"], p + "k_norm")
    else:
        mla = spec.mla
        if mla.q_lora_rank is None:
            g.matmul("q", x, p + "q", h, nh * d, "attention_proj")
        else:
            r = mla.q_lora_rank
            g.matmul("q_a", x, p + "q_a", h, r, "attention_proj")
            g.elementwise("q_a", ["q_a"], p + "q_a_norm")
            g.matmul("q", "q_a", p + "q", r, nh * d, "attention_proj")
        kvr = mla.kv_lora_rank
        g.matmul("kv_a", x, p + "kv_a", h, kvr + mla.qk_rope_head_dim, "attention_proj")
        g.elementwise("c_kv", ["kv_a"], p + "kv_a_norm")
        g.matmul("v", "c_kv", p + "kv_b", kvr, nh * (mla.qk_nope_head_dim + dv), "attention_proj")
        g.elementwise("k", ["v", "kv_a"])  # k = [k_nope from kv_b, k_rope from kv_a]
    # Eager attention: scores Q·Kᵀ and values P·V, per query head (GQA repeats K/V; the FLOPs are per query
    # head).
    g.product("scores", "q", "k", 2 * nh * d * keys, "attention_scores")
    g.product("attn", "scores", "v", 2 * nh * dv * keys, "attention_scores")
    g.matmul("attn_out", "attn", p + "o", nh * dv, h, "attention_proj")
    return "attn_out"


def _ffn(g: _Graph, spec: ModelSpec, x: str, group: str, width: int, component: str, times: int = 1) -> str:
    """The MLP of weight group ``group`` (``layers.3.``, ``layers.3.experts.``, ``layers.3.shared.``) on
    ``x``: up, gate and down when gated, up and down otherwise, ``times`` per token; returns its output."""
    h = spec.hidden_size
    up, out = group + "up", group + "down"
    g.matmul(up, x, group + "up", h, width, component, times=times)
    if spec.mlp_gated:
        g.matmul(group + "gate", x, group + "gate", h, width, component, times=times)
        g.elementwise(up, [up, group + "gate"])
    g.matmul(out, up, group + "down", width, h, component, times=times)
    return out


def _mlp(g: _Graph, spec: ModelSpec, p: str, x: str, moe_layer: bool) -> str:
    if not moe_layer:
        return _ffn(g, spec, x, p, spec.intermediate_size, "mlp")
    moe = spec.moe
    assert moe is not None
    h = spec.hidden_size
    g.matmul("router", x, p + "router", h, moe.num_experts, "router")
    g.elementwise("routing_weights", ["router"])
    # Each token runs through top_k experts (eager experts: one gather + matmuls per expert hit).
    experts = _ffn(g, spec, x, p + "experts.", moe.expert_intermediate_size, "experts", times=moe.top_k)
    g.elementwise(experts, [experts, "routing_weights"])
    outputs = [experts]
    if moe.shared_intermediate_size:
        shared = _ffn(g, spec, x, p + "shared.", moe.shared_intermediate_size, "shared_experts")
        if moe.shared_expert_gate:
            g.matmul("s_scale", x, p + "shared_gate", h, 1, "router")
            g.elementwise(shared, [shared, "s_scale"])
        outputs.append(shared)
    g.elementwise("mlp_out", outputs)
    return "mlp_out"


def _normalize_recompute(recompute: bool | str) -> Recompute:
    if recompute is True:
        return "full"
    if recompute is False or recompute is None:
        return "none"
    if recompute in ("none", "full", "selective"):
        return recompute  # type: ignore[return-value]
    raise InputError("recompute", f"unknown value {recompute!r}", "use none, full or selective (or a bool)")


def _frozen_predicate(
    names: set[str], frozen: Iterable[str] | None
) -> tuple[tuple[str, ...], Callable[[str], bool]]:
    """Trainable-name predicate, from glob patterns of frozen ones (``layers.0.*``, ``embedding``)."""
    patterns = tuple(frozen or ())
    if not patterns:
        return (), lambda name: True
    frozen_names: set[str] = set()
    for pattern in patterns:
        if pattern in names:  # an exact group name: that weight only (its bias is ``<name>.bias``)
            hits = {pattern}
        else:  # a glob (``layers.*.q``) or a prefix (``layers.3`` = the whole layer)
            prefix = pattern.rstrip(".") + "."
            hits = {n for n in names if fnmatch.fnmatchcase(n, pattern) or n.startswith(prefix)}
        if not hits:
            raise InputError(
                "frozen",
                f"pattern {pattern!r} matches no parameter of this model",
                "use canonical names such as 'embedding', 'lm_head', 'layers.0.*', 'layers.*.q' "
                "(see monitor.model.params), or frozen_from_param_names() for Hugging Face names",
            )
        frozen_names |= hits
    return patterns, lambda name: name not in frozen_names


def flops_per_token(
    spec: ModelSpec,
    seq_len: int,
    *,
    causal: bool = False,
    sliding_window: bool | None = None,
    recompute: bool | Recompute = False,
    frozen: Iterable[str] | None = None,
    adapters: Mapping[str, int] | None = None,
) -> FlopsPerToken:
    """Forward, training and hardware FLOPs per token of ``spec`` on sequences of ``seq_len`` tokens.

    ``causal``: charge attention for the tokens actually attended (see :func:`attended_keys`) instead of full
    S×S.
    ``sliding_window``: apply the spec's per-layer windows (default: when ``causal``).
    ``recompute``: ``True``/``"full"`` or ``"selective"`` activation recomputation (hardware FLOPs only).
    ``frozen``: canonical parameter names or glob patterns that do not train (no weight gradient); see
    :mod:`monitor.model.params` for the names and :func:`frozen_from_param_names` to map Hugging Face names.
    ``adapters``: weight groups carrying trainable LoRA adapters, mapped to their rank (their matmuls are
    counted under ``adapters``; the group's output needs a gradient even when its weight is frozen). Use
    :func:`training_setup_from_parameters` to read ``frozen`` and ``adapters`` off a model.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
        raise InputError(
            "seq_len", f"must be a positive integer, got {seq_len!r}", "pass e.g. --seq-len 4096"
        )
    mode = _normalize_recompute(recompute)
    windowed = causal if sliding_window is None else sliding_window
    patterns, trainable, adapters = _training_setup(spec, frozen, adapters)

    def keys(layer: int) -> float:
        return attended_keys(seq_len, spec.window(layer) if windowed else None, causal)

    forward, training, hardware, breakdown = count_flops(spec, keys, mode, trainable, adapters)
    return FlopsPerToken(
        forward=forward,
        training=training,
        hardware=hardware,
        breakdown=breakdown,
        seq_len=seq_len,
        causal=causal,
        sliding_window=bool(windowed and spec.layer_windows and any(w for w in spec.layer_windows)),
        recompute=mode,
        frozen=patterns,
    )


def _training_setup(
    spec: ModelSpec, frozen: Iterable[str] | None, adapters: Mapping[str, int] | None
) -> tuple[tuple[str, ...], Callable[[str], bool], dict[str, int]]:
    """Checked ``frozen`` patterns, the trainable-name predicate and the adapters of a FLOPs count."""
    names = set(param_sizes(spec))
    patterns, trainable = _frozen_predicate(names, frozen)
    unknown = sorted(set(adapters or {}) - names)
    if unknown:
        raise InputError("adapters", f"no weight group named {unknown[0]!r}", "use names like 'layers.0.q'")
    return patterns, trainable, dict(adapters or {})


def count_flops(
    spec: ModelSpec,
    keys: Callable[[int], float],
    recompute: Recompute,
    trainable: Callable[[str], bool],
    adapters: Mapping[str, int] | None = None,
) -> tuple[float, float, float, dict[str, float]]:
    """(forward, training, hardware, forward breakdown) FLOPs per token, with ``keys(layer)`` the keys each
    query of that layer is charged for. Every count is linear in each layer's keys (scores and values are
    products whose cost, forward, backward and recomputed, is proportional to them); the packed-row model
    (:mod:`monitor.model.packing`) relies on that."""
    mode = recompute
    names = set(param_sizes(spec))
    g = _Graph(trainable, names, adapters)
    h, v = spec.hidden_size, spec.vocab_size
    g.leaf("x", "embedding")
    if spec.position_embeddings:
        g.leaf("pos", "position_embedding")
        g.elementwise("x", ["x", "pos"])
    recomputed = 0.0
    for layer in range(spec.num_layers):
        p = f"layers.{layer}."
        before = dict(g.forward)
        a_keys = keys(layer)
        g.elementwise("a_in", ["x"], p + "attn_norm")
        a = _attention(g, spec, p, "a_in", a_keys)
        g.elementwise(a, [a], p + "attn_out_norm")
        if spec.parallel_residual:
            g.elementwise("m_in", ["x"], p + "mlp_norm")
        else:
            g.elementwise("x", ["x", a])
            g.elementwise("m_in", ["x"], p + "mlp_norm")
        m = _mlp(g, spec, p, "m_in", spec.is_moe_layer(layer))
        g.elementwise(m, [m], p + "mlp_out_norm")
        g.elementwise("x", ["x", a, m] if spec.parallel_residual else ["x", m])
        if mode != "none" and g.rg["x"]:
            # Backward reaches this layer, so its checkpointed forward runs again.
            if mode == "full":
                recomputed += sum(g.forward[c] - before[c] for c in COMPONENTS)
            else:
                recomputed += g.forward["attention_scores"] - before["attention_scores"]
    g.elementwise("x", ["x"], "final_norm")
    g.matmul("logits", "x", "embedding" if spec.tie_word_embeddings else "lm_head", h, v, "lm_head")
    forward = sum(g.forward.values())
    training = forward + g.backward
    core = ("attention_proj", "attention_scores", "mlp", "lm_head")
    breakdown = {k: val for k, val in g.forward.items() if val or k in core}
    return forward, training, training + recomputed, breakdown


# Hugging Face parameter names -> canonical names
# ------------------------------------------------------------------
_HF_PARTS: dict[str, tuple[str, ...]] = {
    # attention
    "q_proj": ("q",),
    "k_proj": ("k",),
    "v_proj": ("v",),
    "o_proj": ("o",),
    "qkv_proj": ("q", "k", "v"),
    "query_key_value": ("q", "k", "v"),
    "c_attn": ("q", "k", "v"),
    "dense": ("o",),
    "q_a_proj": ("q_a",),
    "q_b_proj": ("q",),
    "q_a_layernorm": ("q_a_norm",),
    "kv_a_proj_with_mqa": ("kv_a",),
    "kv_a_layernorm": ("kv_a_norm",),
    "kv_b_proj": ("kv_b",),
    "q_norm": ("q_norm",),
    "k_norm": ("k_norm",),
    # MLP
    "gate_proj": ("gate",),
    "up_proj": ("up",),
    "down_proj": ("down",),
    "gate_up_proj": ("gate", "up"),
    "c_fc": ("up",),
    "dense_h_to_4h": ("up",),
    "dense_4h_to_h": ("down",),
}


def frozen_from_param_names(spec: ModelSpec, names: Iterable[str]) -> list[str]:
    """Canonical names (for ``flops_per_token(frozen=...)``) of Hugging Face parameter names that are frozen.

    ``names`` are ``model.named_parameters()`` names with ``requires_grad=False``, e.g.
    ``model.layers.3.mlp.up_proj.weight``, ``model.embed_tokens.weight``, ``lm_head.weight``. A canonical
    group counts as frozen when any of its tensors is (a group's weight and bias train together in practice).
    Names that match nothing known (a LoRA adapter's ``lora_A``, say) are ignored: they are not part of the
    base model.
    """
    known = set(param_sizes(spec))
    out: list[str] = []
    for full in names:
        for canonical in _canonical(spec, full):
            if canonical in known and canonical not in out:
                out.append(canonical)
    return out


class TrainingSetup(BaseModel):
    """What trains, read off a model: the ``frozen`` and ``adapters`` arguments of :func:`flops_per_token`."""

    model_config = ConfigDict(frozen=True)

    frozen: tuple[str, ...] = ()
    adapters: dict[str, int] = {}


def training_setup_from_parameters(
    spec: ModelSpec, named_parameters: Iterable[tuple[str, Any]]
) -> TrainingSetup:
    """Frozen groups and LoRA adapters from ``model.named_parameters()`` (duck-typed: no torch import).

    A parameter with ``requires_grad=False`` freezes its group; a trainable
    ``...<module>.lora_A.<name>.weight`` (PEFT's layout, rank = its first dimension) marks ``<module>``'s
    group as adapted. With LoRA on a fused tensor (``qkv_proj``, ``c_attn``, ``gate_up_proj``) each group
    it holds is charged a full adapter, which overstates the adapter FLOPs slightly (rank ≪ hidden size:
    well under 1% of the total).
    """
    frozen_names: list[str] = []
    adapters: dict[str, int] = {}
    known = set(param_sizes(spec))
    for name, param in named_parameters:
        trains = getattr(param, "requires_grad", True)
        parts = name.split(".")
        if "lora_A" in parts and trains:
            base = ".".join(parts[: parts.index("lora_A")]) + ".weight"
            for group in _canonical(spec, base):
                if group in known:
                    adapters[group] = int(param.shape[0])
        elif not trains:
            frozen_names.append(name)  # adapter tensors map to no group there and are ignored
    return TrainingSetup(frozen=tuple(frozen_from_param_names(spec, frozen_names)), adapters=adapters)


def _canonical(spec: ModelSpec, name: str) -> list[str]:
    parts = [
        t for t in name.split(".") if t != "base_layer"
    ]  # PEFT keeps the wrapped weight under base_layer
    suffix = ".bias" if parts and parts[-1] == "bias" else ""
    if parts and parts[-1] in ("weight", "bias"):
        parts = parts[:-1]
    return [c + suffix for c in _canonical_groups(spec, parts)]


def _canonical_groups(spec: ModelSpec, parts: list[str]) -> list[str]:
    if any(t in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B") for t in parts):
        return []
    leaf = parts[-1] if parts else ""
    if leaf in ("embed_tokens", "wte", "embed_in"):
        return ["embedding"]
    if leaf == "wpe":
        return ["position_embedding"]
    if leaf in ("lm_head", "embed_out"):
        return ["embedding" if spec.tie_word_embeddings else "lm_head"]
    if leaf in ("norm", "ln_f", "final_layer_norm"):
        return ["final_norm"]
    layer = next((int(t) for t in parts if t.isdigit()), None)
    if layer is None or layer >= spec.num_layers:
        return []
    p = f"layers.{layer}."
    if leaf in ("input_layernorm", "ln_1"):
        return [p + "attn_norm"]
    if leaf == "post_attention_layernorm" or leaf == "ln_2":
        # llama & co: the pre-MLP norm; gemma2/3, olmo2: the norm on the attention output.
        return [p + ("attn_out_norm" if spec.norm_placement in ("post", "sandwich") else "mlp_norm")]
    if leaf == "pre_feedforward_layernorm":
        return [p + "mlp_norm"]
    if leaf == "post_feedforward_layernorm":
        return [p + "mlp_out_norm"]
    if leaf == "shared_expert_gate":
        return [p + "shared_gate"]
    if "experts" in parts and "shared_experts" not in parts:
        # fused expert tensors: mlp.experts.gate_up_proj / mlp.experts.down_proj (or per-expert modules)
        return [p + "experts." + c for c in _HF_PARTS.get(leaf, ())]
    if "shared_expert" in parts or "shared_experts" in parts:
        return [p + "shared." + c for c in _HF_PARTS.get(leaf, ())]
    if leaf == "gate" and ("mlp" in parts or "block_sparse_moe" in parts):
        return [p + "router"]
    if leaf == "c_proj":
        return [p + ("down" if "mlp" in parts else "o")]
    return [p + c for c in _HF_PARTS.get(leaf, ())]
