"""Training memory per device: weights, gradients, optimizer state, activations. Pure arithmetic.

Conventions (docs/planning.md has the long form):

Weights, gradients, optimizer state — bytes per parameter (Rajbhandari et al. 2019, "ZeRO", §3.1:
mixed-precision Adam keeps 2 + 2 + 12 bytes per parameter):

==========  =======  =====  ==========================================  ============================
precision   weights  grads  Adam/AdamW state                            SGD momentum / plain SGD
==========  =======  =====  ==========================================  ============================
fp32        4        4      8 (exp_avg, exp_avg_sq)                     4 / 0
amp         4        4      8 (torch.autocast: fp32 weights, 16-bit     4 / 0
                            activations)
mixed       2        2      12 (fp32 master copy 4 + exp_avg 4 + 4)     8 / 4 (master copy only)
bf16        2        2      4 (bf16 exp_avg, exp_avg_sq; no master)     2 / 0
==========  =======  =====  ==========================================  ============================

PyTorch's Adam/AdamW also keep a ``step`` counter per parameter tensor (a 0-d float32 tensor): 4 bytes ×
tensors, counted when the number of tensors is known. ZeRO (stage 1: optimizer state, 2: + gradients, 3: +
weights) divides the sharded terms by the data-parallel size. Tensor parallelism divides every parameter by
``tp`` (norm weights, replicated in practice, are under 0.1% of a model and counted as split); pipeline
parallelism puts ⌈L/pp⌉ layers on a stage, the token embedding on the first and the LM head (or a tied copy
of the embedding) and final norm on the last; the per-device figure is the heavier stage.

Activations — bytes saved for backward, derived op by op for the Hugging Face transformers Llama
implementation (``LlamaDecoderLayer``: RMSNorm → q/k/v → RoPE → attention → o → residual → RMSNorm →
gate/up/SiLU → down), and checked against ``torch.autograd.graph.saved_tensors_hooks`` (distinct storages) in
tests/test_memory_truth.py. Per layer and token, with ``a`` bytes per activation element (4 for fp32, 2 for
16-bit), h hidden, H heads, K kv heads, d head dim, S sequence, F MLP width:

* each RMSNorm: its input upcast to fp32 (4h: saved by ``pow`` and the ``* rsqrt``), ``rsqrt`` (4), the
  normalised value cast back (a·h, saved by ``weight *``) and the scaled output (a·h, saved by the next
  linear): 4h + 2a·h + 4;
* attention, eager: q, k, v after ``repeat_kv`` (all H heads: a·H·d each, copies made by ``matmul``), the
  softmax output in fp32 (4·H·S) plus its cast back to 16-bit (a·H·S, not when a = 4), the attention output
  (a·H·d, the input of ``o_proj``);
* attention, flash (SDPA flash kernel, FlashAttention-2): q (a·H·d), k and v at K heads (a·K·d each), the
  output (a·H·d) and the log-sum-exp (4·H): no S×S term;
* gated MLP: gate output, SiLU output, up output, their product (4·a·F); an ungated MLP: 2·a·F;
* under autocast (``amp``: fp32 weights, 16-bit matmuls): the residual stream, norms and RoPE tables stay
  fp32, each linear reading a norm saves its own 16-bit cast of it (2h per consumer), and every matmul
  weight's 16-bit copy is saved once per forward (2 bytes per weight).

Outside the layers: the final norm (4h + 2a·h + 4 per token), the fp32 log-softmax of the logits in the loss
(4·V per token), input ids and shifted labels (8 + 8 per token), RoPE cos/sin (2·S·d·a per micro-batch).
Full recomputation (activation checkpointing of each layer) keeps only each layer's input (a·h per token)
and, at the peak of backward, one layer's activations again. Korthikanti et al. 2022 ("Reducing Activation
Recomputation in Large Transformer Models", eq. 1): s·b·h·(34 + 5·a·s/h) bytes per layer for Megatron GPT in
16-bit with dropout — reported beside ours for comparison (the 5as/h term dropped with flash attention). Not
counted: temporary buffers of a single op, allocator fragmentation, the CUDA context and communication
buffers.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field

from monitor.errors import InputError
from monitor.model.params import count_params, param_sizes
from monitor.model.spec import ModelSpec

Optimizer = Literal["adam", "adamw", "sgd", "sgd-momentum"]
Precision = Literal["fp32", "amp", "mixed", "bf16"]
Recompute = Literal["none", "full"]

OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd", "sgd-momentum")
PRECISIONS: tuple[str, ...] = ("fp32", "amp", "mixed", "bf16")

# (weights, gradients) bytes per parameter, and optimizer-state bytes per parameter by optimizer family.
_WEIGHT_GRAD_BYTES: dict[str, tuple[int, int]] = {
    "fp32": (4, 4),
    "amp": (4, 4),
    "mixed": (2, 2),
    "bf16": (2, 2),
}
_OPTIMIZER_BYTES: dict[str, dict[str, int]] = {
    "fp32": {"adam": 8, "sgd-momentum": 4, "sgd": 0},
    "amp": {"adam": 8, "sgd-momentum": 4, "sgd": 0},
    "mixed": {"adam": 12, "sgd-momentum": 8, "sgd": 4},
    "bf16": {"adam": 4, "sgd-momentum": 2, "sgd": 0},
}
ADAM_STEP_BYTES = 4  # torch.optim.Adam(W) state["step"]: a 0-d float32 tensor per parameter tensor


class MemoryConfig(BaseModel):
    """How a model is trained: batch shape, optimizer, precision, parallelism."""

    seq_len: int = Field(gt=0)
    micro_batch: int = Field(default=1, gt=0)
    optimizer: Optimizer = "adamw"
    precision: Precision = "mixed"
    zero: int = Field(default=0, ge=0, le=3)
    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    dp: int = Field(default=1, gt=0)
    recompute: Recompute = "none"
    flash_attention: bool = False
    sequence_parallel: bool = False  # Megatron sequence parallelism: norm/residual activations split by tp


class BytesPerParam(BaseModel):
    weights: int
    gradients: int
    optimizer: int


class ActivationBreakdown(BaseModel):
    measured_family: bool  # the per-tensor accounting was checked against saved tensors for this layer kind
    per_layer_bytes: float
    layers_bytes: float
    recompute_buffer_bytes: float
    head_bytes: float
    other_bytes: float
    total_bytes: float
    korthikanti_bytes: float


class MemoryEstimate(BaseModel):
    """Bytes per device (the heaviest pipeline stage) and what they are made of."""

    params_total: int
    params_per_device: float
    bytes_per_param: BytesPerParam
    weights_bytes: float
    gradients_bytes: float
    optimizer_bytes: float
    activations: ActivationBreakdown
    activations_bytes: float
    total_bytes: float
    config: MemoryConfig


def bytes_per_param(precision: str, optimizer: str) -> BytesPerParam:
    """Weights, gradients and optimizer-state bytes per parameter (table in the module docstring)."""
    if precision not in _WEIGHT_GRAD_BYTES:
        raise InputError(
            "--precision", f"unknown precision {precision!r}", f"choose one of: {', '.join(PRECISIONS)}"
        )
    if optimizer not in OPTIMIZERS:
        raise InputError(
            "--optimizer", f"unknown optimizer {optimizer!r}", f"choose one of: {', '.join(OPTIMIZERS)}"
        )
    family = "adam" if optimizer in ("adam", "adamw") else optimizer
    w, g = _WEIGHT_GRAD_BYTES[precision]
    return BytesPerParam(weights=w, gradients=g, optimizer=_OPTIMIZER_BYTES[precision][family])


def activation_element_bytes(precision: str) -> int:
    """Bytes of one activation element: fp32 trains in fp32; amp, mixed and bf16 compute in 16-bit."""
    return 4 if precision == "fp32" else 2


def _norm_bytes_per_token(h: int, a: int, *, amp: bool = False, consumers: int = 1) -> float:
    """One RMSNorm (transformers LlamaRMSNorm) and what its consumers save of its output, per token.

    16-bit or fp32 weights: fp32 input 4h, rsqrt 4, the normalised value cast back a·h, the scaled output a·h
    (saved once by the linears that read it). Under autocast (``amp``: fp32 weights and residual stream):
    fp32 input 4h, rsqrt 4, fp32 normalised value 4h, and each consuming linear saves its own 16-bit cast
    of the output (2h each: autocast caches casts of weights, not of activations).
    """
    if amp:
        return 8 * h + 4 + 2 * h * consumers
    return 4 * h + 2 * a * h + 4


def _input_projections(spec: ModelSpec) -> int:
    """Linears reading the attention norm's output: q, k, v (GQA) or q(_a) and kv_a (MLA)."""
    return 2 if spec.mla is not None else 3


def _mlp_inputs(spec: ModelSpec, layer: int) -> int:
    """Linears reading the MLP norm's output: gate and up (gated), up (plain), plus the MoE router."""
    return (2 if spec.mlp_gated else 1) + (1 if spec.is_moe_layer(layer) else 0)


def linear_weight_params(spec: ModelSpec, layers: range | None = None, *, head: bool = True) -> int:
    """Matmul weights (no norms, biases, embedding lookups) of ``layers`` and, with ``head``, the LM head.

    Autocast saves a 16-bit copy of each for backward (2 bytes per weight, once per forward)."""
    sizes = param_sizes(spec)
    chosen = range(spec.num_layers) if layers is None else layers
    prefixes = tuple(f"layers.{i}." for i in chosen)
    total = sum(
        n for name, n in sizes.items() if name.startswith(prefixes) and not name.endswith(("norm", ".bias"))
    )
    if head:
        total += spec.vocab_size * spec.hidden_size  # the LM head (a tied one reuses the embedding matrix)
    return total


def _mlp_width_bytes(spec: ModelSpec, layer: int, a: int) -> float:
    """Activation bytes per token of one layer's MLP (a gated MLP saves 4 tensors of its width, ungated 2)."""
    per_width = 4 * a if spec.mlp_gated else 2 * a
    if spec.is_moe_layer(layer) and spec.moe is not None:
        # Each token visits top_k routed experts (+ the shared one); router logits/probabilities are small.
        width = spec.moe.top_k * spec.moe.expert_intermediate_size + spec.moe.shared_intermediate_size
        return per_width * width + 4 * spec.moe.num_experts
    return per_width * spec.intermediate_size


def layer_activation_bytes_per_token(
    spec: ModelSpec,
    layer: int,
    seq_len: int,
    a: int,
    *,
    flash_attention: bool,
    tp: int = 1,
    sequence_parallel: bool = False,
    amp: bool = False,
) -> float:
    """Bytes saved for backward by one decoder layer, per token (derivation in the module docstring)."""
    h, heads, kv = spec.hidden_size, spec.num_heads, spec.num_kv_heads
    d, dv = spec.head_dim, spec.v_head_dim
    window = spec.window(layer)
    keys = seq_len if window is None else min(seq_len, window)
    norms = _norm_bytes_per_token(h, a, amp=amp, consumers=_input_projections(spec)) + _norm_bytes_per_token(
        h, a, amp=amp, consumers=_mlp_inputs(spec, layer)
    )
    if flash_attention:
        attention = a * (heads * d + kv * d + kv * dv + heads * dv) + 4 * heads
    else:
        scores = heads * keys * (4 + (a if a != 4 else 0))
        attention = a * (2 * heads * d + 2 * heads * dv) + scores
    mlp = _mlp_width_bytes(spec, layer, a)
    # Tensor parallelism splits heads and the MLP width; the norms' tensors stay whole unless sequence
    # parallelism splits them along the sequence (Korthikanti et al. 2022, §4.2.2).
    return norms / (tp if sequence_parallel else 1) + (attention + mlp) / tp


def korthikanti_layer_bytes(
    seq_len: int, micro_batch: int, hidden: int, heads: int, *, flash: bool, tp: int = 1, sp: bool = False
) -> float:
    """Korthikanti et al. 2022 bytes per layer (16-bit Megatron GPT with dropout).

    No parallelism: s·b·h·(34 + 5·a·s/h); tensor parallelism t: s·b·h·(10 + 24/t + 5·a·s/(h·t)); with
    sequence parallelism too: s·b·h·(34 + 5·a·s/h)/t (their §4). Flash attention drops the 5·a·s/h term.
    """
    scores = 0.0 if flash else 5.0 * heads * seq_len / hidden
    per = (34.0 + scores) / tp if sp else 10.0 + 24.0 / tp + scores / tp
    return seq_len * micro_batch * hidden * per


def is_llama_like(spec: ModelSpec) -> bool:
    """Layers of the kind the activation accounting was measured on: pre-RMSNorm, gated MLP, GQA, dense.

    Others (LayerNorm + GELU + dropout as in GPT-2, MoE, MLA, post/sandwich norms) get the same accounting
    as an estimate: for GPT-2 it was measured 28% (no dropout) to 51% (dropout 0.1, SDPA) low.
    """
    return (
        spec.norm == "rmsnorm"
        and spec.norm_placement == "pre"
        and spec.mlp_gated
        and spec.moe is None
        and spec.mla is None
        and spec.qk_norm == "none"
        and not spec.parallel_residual
    )


def activation_memory(spec: ModelSpec, config: MemoryConfig) -> ActivationBreakdown:
    """Activation bytes on the heaviest device (see the module docstring for the per-tensor accounting)."""
    a = activation_element_bytes(config.precision)
    amp = config.precision == "amp"
    tokens = config.seq_len * config.micro_batch
    layers_here = math.ceil(spec.num_layers / config.pp)
    stage_layers = range(layers_here)  # the first stage's layers stand for every stage's (uniform models)
    per_layer_full = [
        tokens
        * layer_activation_bytes_per_token(
            spec,
            i,
            config.seq_len,
            a,
            flash_attention=config.flash_attention,
            tp=config.tp,
            sequence_parallel=config.sequence_parallel,
            amp=amp,
        )
        for i in stage_layers
    ]
    # Autocast's 16-bit weight copies, saved once per forward: this stage's layers, plus the LM head.
    casts = 2.0 * linear_weight_params(spec, stage_layers, head=False) / config.tp if amp else 0.0
    head_casts = 2.0 * spec.vocab_size * spec.hidden_size / config.tp if amp else 0.0
    if config.recompute == "full":
        residual = 4 if amp else a  # autocast keeps the residual stream in fp32
        per_layer_kept = [float(tokens * residual * spec.hidden_size) for _ in stage_layers]
        recompute_buffer = max(per_layer_full) + casts / len(per_layer_full)
        casts = 0.0
    else:
        per_layer_kept = per_layer_full
        recompute_buffer = 0.0
    # 1F1B pipeline schedule: the first stage holds pp micro-batches in flight (Narayanan et al. 2021,
    # §2.2.1).
    in_flight = config.pp
    head = (
        tokens * (_norm_bytes_per_token(spec.hidden_size, a, amp=amp) + 4.0 * spec.vocab_size / config.tp)
        + head_casts
    )
    ids = tokens * 16.0  # input ids (int64) + shifted labels (int64)
    rope_bytes = 4 if amp else a  # RoPE cos/sin follow the embedding output's dtype (fp32 under autocast)
    rope = 0.0 if config.recompute == "full" else 2.0 * config.seq_len * spec.head_dim * rope_bytes
    if config.pp == 1:
        layers_total = sum(per_layer_kept) + casts
        head_total = head
    else:
        first = in_flight * sum(per_layer_kept) + casts
        last = sum(per_layer_kept) + casts + head
        layers_total, head_total = (first, 0.0) if first >= last else (sum(per_layer_kept) + casts, head)
    other = ids + rope
    korthikanti = (
        layers_here
        * in_flight
        * korthikanti_layer_bytes(
            config.seq_len,
            config.micro_batch,
            spec.hidden_size,
            spec.num_heads,
            flash=config.flash_attention,
            tp=config.tp,
            sp=config.sequence_parallel,
        )
    )
    return ActivationBreakdown(
        measured_family=is_llama_like(spec),
        per_layer_bytes=sum(per_layer_full) / len(per_layer_full),
        layers_bytes=layers_total,
        recompute_buffer_bytes=recompute_buffer,
        head_bytes=head_total,
        other_bytes=other,
        total_bytes=layers_total + recompute_buffer + head_total + other,
        korthikanti_bytes=korthikanti,
    )


def params_per_device(spec: ModelSpec, tp: int = 1, pp: int = 1) -> float:
    """Parameters held by the heaviest device under tensor (``tp``) and pipeline (``pp``) parallelism."""
    sizes = param_sizes(spec)
    total = sum(sizes.values())
    if pp == 1:
        return total / tp
    per_layer = [
        sum(n for name, n in sizes.items() if name.startswith(f"layers.{i}.")) for i in range(spec.num_layers)
    ]
    per_stage = math.ceil(spec.num_layers / pp)
    first = sum(per_layer[:per_stage]) + sizes["embedding"] + sizes.get("position_embedding", 0)
    head = sizes.get("lm_head", sizes["embedding"])  # a tied LM head needs its own copy on the last stage
    last = sum(per_layer[-per_stage:]) + head + sizes.get("final_norm", 0)
    return max(first, last) / tp


def param_tensor_count(spec: ModelSpec) -> int:
    """Parameter tensors of the Hugging Face model: one per weight group or bias (``param_sizes`` entries).

    Fused expert tensors (transformers 5 keeps each MoE layer's experts in a few 3-D tensors) make this an
    overcount for MoE models; it only sizes Adam's 4-byte step counters.
    """
    return len(param_sizes(spec))


def training_memory(
    spec: ModelSpec, config: MemoryConfig, *, param_tensors: int | None = None
) -> MemoryEstimate:
    """Bytes per device to train ``spec`` under ``config``: weights, gradients, optimizer state, activations.

    ``param_tensors`` (number of parameter tensors) adds Adam's per-tensor ``step`` counters; default: derived
    from the spec with :func:`param_tensor_count`.
    """
    if config.pp > spec.num_layers:
        raise InputError(
            "--pp", f"{config.pp} pipeline stages for {spec.num_layers} layers", "use --pp ≤ layers"
        )
    if config.tp > 1 and spec.num_heads % config.tp:
        raise InputError(
            "--tp", f"{config.tp} does not divide {spec.num_heads} heads", "use a divisor of the heads"
        )
    per_param = bytes_per_param(config.precision, config.optimizer)
    n_total = count_params(spec).total
    n_device = params_per_device(spec, config.tp, config.pp)
    shard_opt = config.dp if config.zero >= 1 else 1
    shard_grad = config.dp if config.zero >= 2 else 1
    shard_weight = config.dp if config.zero >= 3 else 1
    tensors = param_tensors if param_tensors is not None else param_tensor_count(spec)
    step_counters = 0.0
    if config.optimizer in ("adam", "adamw"):
        # The step counters follow their tensors: this device holds them in proportion to its parameters.
        step_counters = ADAM_STEP_BYTES * tensors * (n_device / n_total) / shard_opt
    weights = per_param.weights * n_device / shard_weight
    grads = per_param.gradients * n_device / shard_grad
    optimizer = per_param.optimizer * n_device / shard_opt + step_counters
    activations = activation_memory(spec, config)
    return MemoryEstimate(
        params_total=n_total,
        params_per_device=n_device,
        bytes_per_param=per_param,
        weights_bytes=weights,
        gradients_bytes=grads,
        optimizer_bytes=optimizer,
        activations=activations,
        activations_bytes=activations.total_bytes,
        total_bytes=weights + grads + optimizer + activations.total_bytes,
        config=config,
    )
