"""Tiny Hugging Face configs with odd sizes, one per supported model type, and a FlopCounterMode harness.

The expectations in the model tests come from here: the transformers implementation itself, counted by
``torch.utils.flop_counter.FlopCounterMode`` (eager attention, eager experts) and ``sum(p.numel())``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

# Odd, mutually prime-ish sizes so that a wrong factor cannot cancel out.
_BASE: dict[str, Any] = dict(
    vocab_size=97,
    hidden_size=60,
    intermediate_size=37,
    num_hidden_layers=3,
    num_attention_heads=6,
    num_key_value_heads=2,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {**_BASE, "model_type": "llama", "attention_bias": True},
    "mistral": {**_BASE, "model_type": "mistral", "sliding_window": 5},
    "qwen2": {**_BASE, "model_type": "qwen2"},
    "qwen3": {**_BASE, "model_type": "qwen3", "head_dim": 14},
    "gemma": {**_BASE, "model_type": "gemma", "head_dim": 18},
    "gemma2": {**_BASE, "model_type": "gemma2", "head_dim": 22, "sliding_window": 4},
    "gemma3_text": {
        **_BASE,
        "model_type": "gemma3_text",
        "head_dim": 26,
        "sliding_window": 6,
        "num_hidden_layers": 4,
        "sliding_window_pattern": 3,
    },
    "phi3": {**_BASE, "model_type": "phi3"},
    "olmo2": {**_BASE, "model_type": "olmo2"},
    "gpt2": {
        "model_type": "gpt2",
        "vocab_size": 97,
        "n_embd": 60,
        "n_layer": 3,
        "n_head": 6,
        "n_positions": 41,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
    "gpt_neox": {
        "model_type": "gpt_neox",
        "vocab_size": 97,
        "hidden_size": 60,
        "intermediate_size": 37,
        "num_hidden_layers": 3,
        "num_attention_heads": 6,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
    },
    "mixtral": {**_BASE, "model_type": "mixtral", "num_local_experts": 5, "num_experts_per_tok": 2},
    "qwen2_moe": {
        **_BASE,
        "model_type": "qwen2_moe",
        "num_hidden_layers": 4,
        "num_experts": 5,
        "num_experts_per_tok": 3,
        "moe_intermediate_size": 13,
        "shared_expert_intermediate_size": 17,
        "decoder_sparse_step": 2,
        "mlp_only_layers": [3],
    },
    "qwen3_moe": {
        **_BASE,
        "model_type": "qwen3_moe",
        "head_dim": 14,
        "num_experts": 6,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 11,
        "mlp_only_layers": [1],
    },
    "deepseek_v2": {
        **_BASE,
        "model_type": "deepseek_v2",
        "num_key_value_heads": 6,
        "q_lora_rank": None,
        "kv_lora_rank": 10,
        "qk_nope_head_dim": 6,
        "qk_rope_head_dim": 4,
        "v_head_dim": 7,
        "n_routed_experts": 5,
        "n_shared_experts": 2,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 11,
        "first_k_dense_replace": 1,
    },
    "deepseek_v3": {
        **_BASE,
        "model_type": "deepseek_v3",
        "num_key_value_heads": 6,
        "q_lora_rank": 15,
        "kv_lora_rank": 9,
        "qk_nope_head_dim": 5,
        "qk_rope_head_dim": 4,
        "v_head_dim": 7,
        "n_routed_experts": 8,
        "n_shared_experts": 1,
        "num_experts_per_tok": 3,
        "n_group": 2,
        "topk_group": 1,
        "moe_intermediate_size": 11,
        "first_k_dense_replace": 1,
    },
}

DENSE_TYPES = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "phi3",
    "olmo2",
    "gpt2",
    "gpt_neox",
)
MOE_TYPES = ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3")


def hf_config(raw: dict[str, Any]) -> Any:
    """A transformers config with eager attention and eager experts (what FlopCounterMode can count)."""
    from transformers import AutoConfig

    cfg = dict(raw)
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    config._attn_implementation = "eager"
    config._experts_implementation = "eager"
    return config


def build_model(raw: dict[str, Any], *, device: str = "cpu", seed: int = 0) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config(raw))
    return model


def count_flops(
    model: torch.nn.Module,
    seq_len: int,
    *,
    batch_size: int = 2,
    device: str = "cpu",
    seed: int = 0,
    forward: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[float, float]:
    """(forward, backward) FLOPs per token of one step, as FlopCounterMode counts them."""
    gen = torch.Generator().manual_seed(seed)
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(3, vocab, (batch_size, seq_len), generator=gen).to(device)
    run = forward or (lambda m, x: m(input_ids=x, use_cache=False).logits)
    with FlopCounterMode(display=False) as fwd:
        loss = run(model, ids).float().sum()
    with FlopCounterMode(display=False) as bwd:
        loss.backward()
    tokens = batch_size * seq_len
    return fwd.get_total_flops() / tokens, bwd.get_total_flops() / tokens
