"""Documents of packed rows read from a forward call's arguments (position_ids, flash-attention varlen
keywords, an explicit list), deferred to log time, on real transformers inputs."""

from __future__ import annotations

import pytest
import torch

from monitor.live.documents import DeferredDocuments, documents_in, lengths_from_starts, summarize

DOCS = [20, 30, 14]


def _flattened_batch(docs: list[list[int]], **kwargs: bool) -> dict[str, torch.Tensor]:
    from transformers import DataCollatorWithFlattening

    collator = DataCollatorWithFlattening(return_tensors="pt", **kwargs)
    features = [{"input_ids": list(range(3, 3 + n))} for row in docs for n in row]
    return collator(features)


def test_position_ids_from_data_collator_with_flattening() -> None:
    batch = _flattened_batch([DOCS])
    assert "attention_mask" not in batch
    found = documents_in(batch)
    assert found is not None and found.kind == "position_ids"
    assert found.read() == DOCS
    assert summarize(found.read()) == {"documents": 3.0, "mean_document_length": 64 / 3}


def test_flash_attention_keywords_win_over_position_ids() -> None:
    batch = _flattened_batch([DOCS], return_flash_attn_kwargs=True)
    assert "cu_seq_lens_q" in batch
    found = documents_in(batch)
    assert found is not None and found.kind == "cu_seq_lens" and found.read() == DOCS
    renamed = {"cu_seqlens_q": torch.tensor([0, 5, 5, 12], dtype=torch.int32)}  # an empty document is skipped
    found = documents_in(renamed)
    assert found is not None and found.read() == [5, 7]


def test_rows_of_plain_positions_are_one_document_each() -> None:
    positions = torch.arange(16).repeat(3, 1)
    found = documents_in({"position_ids": positions})
    assert found is not None and found.read() == [16, 16, 16]
    broadcast = documents_in({"position_ids": torch.arange(16).unsqueeze(0)}, rows=4)
    assert broadcast is not None and broadcast.read() == [16] * 4
    # Two rows, packed differently; a row that does not start at 0 still starts a document.
    rows = torch.tensor([[0, 1, 2, 0, 1, 0], [5, 6, 7, 8, 0, 1]])
    found = documents_in({"position_ids": rows})
    assert found is not None and found.read() == [3, 2, 1, 4, 2]


def test_no_marker_or_a_mask_means_no_documents() -> None:
    ids = torch.ones(2, 8, dtype=torch.long)
    assert documents_in({"input_ids": ids}) is None
    masked = {"position_ids": torch.tensor([[0, 1, 0, 1]]), "attention_mask": torch.ones(1, 4)}
    assert documents_in(masked) is None
    assert documents_in({"position_ids": torch.zeros(2, 3)}) is None  # floating: not positions


def test_explicit_lengths_are_taken_as_given() -> None:
    found = documents_in({"position_ids": torch.arange(8).unsqueeze(0)}, explicit=[3, 5])
    assert found is not None and found.kind == "explicit" and found.read() == [3, 5]


def test_read_is_deferred_the_tensor_is_kept_not_read() -> None:
    """On CPU the hot path keeps the tensor; the lengths are computed only when read."""
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0]])
    deferred = DeferredDocuments("position_ids", tensor=positions)
    assert deferred.read() == [4, 3, 1]
    assert lengths_from_starts(torch.tensor([[True, False, True]])) == [2, 1]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_path_does_not_synchronise() -> None:
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0]], device="cuda")
    cu = torch.tensor([0, 4, 7, 8], device="cuda", dtype=torch.int32)
    torch.cuda.set_sync_debug_mode("error")
    try:
        a = documents_in({"position_ids": positions})
        b = documents_in({"cu_seq_lens_q": cu})
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert a is not None and b is not None and a.read() == [4, 3, 1] == b.read()
