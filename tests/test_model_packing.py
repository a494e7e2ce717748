"""Packed rows: model FLOPs per document (Σ Lᵢ²), checked against FlopCounterMode on the documents run one
by one (transformers' tiny models, eager attention), and what transformers does with ``position_ids``
restarting at 0."""

from __future__ import annotations

import pytest
import torch
from model_configs import TINY_CONFIGS, build_model
from torch.utils.flop_counter import FlopCounterMode

from monitor.errors import InputError
from monitor.model.flops import flops_per_token
from monitor.model.hf_config import spec_from_hf_config
from monitor.model.packing import PackedFlopsModel, attention_share, flatten_lengths, packed_step_flops

DOCS = [20, 30, 14]  # one packed row of 64 tokens


def _training_flops(model: torch.nn.Module, ids: torch.Tensor, **kwargs: object) -> float:
    """Forward + backward FLOPs of one call, as FlopCounterMode counts them."""
    with FlopCounterMode(display=False) as fwd:
        loss = model(input_ids=ids, use_cache=False, **kwargs).logits.float().sum()
    with FlopCounterMode(display=False) as bwd:
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(fwd.get_total_flops() + bwd.get_total_flops())


@pytest.mark.parametrize("model_type", ["llama", "mistral", "gemma2"])
def test_packed_row_equals_its_documents_run_one_by_one(model_type: str) -> None:
    raw = TINY_CONFIGS[model_type]
    model = build_model(raw)
    gen = torch.Generator().manual_seed(1)
    measured = sum(_training_flops(model, torch.randint(3, 97, (1, n), generator=gen)) for n in DOCS)
    ours = packed_step_flops(spec_from_hf_config(raw), DOCS)
    assert ours.training == pytest.approx(measured, rel=1e-9)  # exact: FlopCounterMode charges full L×L
    assert ours.tokens == sum(DOCS) and ours.documents == 3
    # The per-row convention (S² over the row) is what FlopCounterMode counts on the packed row itself.
    row = torch.randint(3, 97, (1, sum(DOCS)), generator=gen)
    positions = torch.cat([torch.arange(n) for n in DOCS]).unsqueeze(0)
    per_row = _training_flops(model, row, position_ids=positions)
    assert per_row == pytest.approx(flops_per_token(spec_from_hf_config(raw), sum(DOCS)).training * sum(DOCS))
    assert per_row > ours.training


def test_packed_model_prices_a_document_as_flops_per_token_at_its_length() -> None:
    """With causal masks, sliding windows (mistral's 5, gemma2's alternating 4) and recomputation, a document
    of L tokens costs L × flops_per_token(L) under the same options; rows of a step add up."""
    for model_type in ("mistral", "gemma2", "qwen2_moe"):
        spec = spec_from_hf_config(TINY_CONFIGS[model_type])
        for causal, recompute in ((True, "none"), (True, "full"), (False, "selective")):
            packed = PackedFlopsModel(spec, causal=causal, recompute=recompute)
            step = packed.step([[20, 3], [30, 14], [1]])
            expected = [
                n * flops_per_token(spec, n, causal=causal, recompute=recompute).training for n in DOCS
            ]
            expected_hw = [
                n * flops_per_token(spec, n, causal=causal, recompute=recompute).hardware for n in DOCS
            ]
            extra = [(n, flops_per_token(spec, n, causal=causal, recompute=recompute)) for n in (3, 1)]
            assert step.training == pytest.approx(
                sum(expected) + sum(n * e.training for n, e in extra), rel=1e-12
            )
            assert step.hardware == pytest.approx(
                sum(expected_hw) + sum(n * e.hardware for n, e in extra), rel=1e-12
            )
            assert step.documents == 5 and step.tokens == 68


def test_per_row_convention_overcharges_a_packed_row() -> None:
    spec = spec_from_hf_config(TINY_CONFIGS["llama"])
    share = attention_share(PackedFlopsModel(spec), DOCS, sum(DOCS))
    assert share["ratio"] > 1.05  # the tiny model's attention is a large share: the S² error shows


def test_transformers_masks_other_documents_when_position_ids_restart() -> None:
    """Eager attention with ``position_ids`` restarting at 0, no 2-D mask and no cache: transformers builds a
    block mask, so each document's logits equal those of the document run alone (no attention across
    documents), while the matmuls still span the whole row. With a cache (``use_cache`` left on, as in eval
    mode) or a 2-D ``attention_mask``, it does not, and documents attend across each other."""
    model = build_model(TINY_CONFIGS["llama"]).eval()
    gen = torch.Generator().manual_seed(2)
    docs = [torch.randint(3, 97, (1, n), generator=gen) for n in DOCS]
    positions = torch.cat([torch.arange(n) for n in DOCS]).unsqueeze(0)
    with torch.no_grad():
        row = torch.cat(docs, dim=1)
        packed = model(input_ids=row, position_ids=positions, use_cache=False).logits
        alone = torch.cat([model(input_ids=d, use_cache=False).logits for d in docs], dim=1)
        cached = model(input_ids=row, position_ids=positions, use_cache=True).logits
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(cached[:, DOCS[0] :], alone[:, DOCS[0] :], atol=1e-3)


def test_bad_document_lengths_name_the_field() -> None:
    for bad in ([], [0], [3, -1], [2.5], [[4], [True]]):
        with pytest.raises(InputError, match="documents"):
            flatten_lengths(bad)  # type: ignore[arg-type]
    assert flatten_lengths([[1, 2], 3]) == [1, 2, 3]  # type: ignore[list-item]
