"""Tiny real models and data for the integration tests (transformers Llama, eager attention, CPU), imported
by the other ``test_integrations_*`` files.

Expected FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` over a real forward and backward, an
independent count of what the monitor's analytic model predicts (CONTRACTS: the default FLOPs convention is
full S×S attention, as FlopCounterMode counts eager attention).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

VOCAB = 128
PEAK = 1e12  # FLOP/s injected as the peak: above any 2-core CPU's fp32 rate, so 0 < MFU < 1


def tiny_llama(seed: int = 0) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def padded_sample(i: int, seq_len: int) -> dict[str, torch.Tensor]:
    """One sample with ``i % 5`` trailing padding positions (mask 0), labels = ids."""
    g = torch.Generator().manual_seed(1000 + i)
    ids = torch.randint(0, VOCAB, (seq_len,), generator=g)
    mask = torch.ones(seq_len, dtype=torch.long)
    pad = i % 5
    if pad:
        mask[-pad:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.clone()}


def padded_batch(i: int, batch_size: int, seq_len: int) -> dict[str, torch.Tensor]:
    samples = [padded_sample(i * batch_size + j, seq_len) for j in range(batch_size)]
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def training_flops(model: Any, batch: dict[str, torch.Tensor]) -> float:
    """FLOPs of one forward and backward of ``model`` on ``batch``, counted by FlopCounterMode (on a copy,
    so the model's gradients are untouched)."""
    clone = copy.deepcopy(model)
    with FlopCounterMode(display=False) as counter:
        loss = clone(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
        loss.backward()
    return float(counter.get_total_flops())


def read_log(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Records of a JSONL run log grouped by ``event``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        out.setdefault(record["event"], []).append(record)
    return out


def test_training_flops_are_affine_in_sequence_length() -> None:
    """What the Lightning callback's mean-length rule rests on: FLOPs per token at length S are affine in S,
    so N tokens at the token-weighted mean length cost what the micro-batches cost at their own lengths."""
    torch.set_num_threads(1)
    model = tiny_llama()
    per_token = {}
    for s in (8, 16, 24):
        batch = padded_batch(0, 2, s)
        per_token[s] = training_flops(model, batch) / batch["input_ids"].numel()
    assert per_token[16] - per_token[8] == per_token[24] - per_token[16]
    assert per_token[24] > per_token[16] > per_token[8]
