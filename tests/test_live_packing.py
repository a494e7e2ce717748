"""Packed rows through the monitor: a row's model FLOPs equal FlopCounterMode's count of its documents run one
by one (documents from ``position_ids`` restarting at 0, from ``cu_seq_lens_*`` and from
``mon.step(documents=...)``); documents per step and mean length in the snapshot, the run log and /metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from model_configs import TINY_CONFIGS, build_model
from torch.utils.flop_counter import FlopCounterMode

from monitor.export.prometheus import snapshot_metrics
from monitor.live.monitor import MFUMonitor

DOCS = [20, 30, 14]  # one packed row of 64 tokens
ROWS, STEPS = 2, 3


def _documents_one_by_one(model: torch.nn.Module) -> float:
    """Training FLOPs (forward + backward) of the documents run alone, as FlopCounterMode counts them."""
    total = 0.0
    for n in DOCS:
        ids = torch.randint(3, 97, (1, n))
        with FlopCounterMode(display=False) as fwd:
            loss = model(input_ids=ids, use_cache=False).logits.float().sum()
        with FlopCounterMode(display=False) as bwd:
            loss.backward()
        model.zero_grad(set_to_none=True)
        total += fwd.get_total_flops() + bwd.get_total_flops()
    return float(total)


def _packed_batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(3, 97, (ROWS, sum(DOCS)))
    positions = torch.cat([torch.arange(n) for n in DOCS]).repeat(ROWS, 1)
    return {"input_ids": ids, "labels": ids, "position_ids": positions, "use_cache": False}  # type: ignore[dict-item]


@pytest.mark.parametrize("marker", ["position_ids", "explicit"])
def test_packed_rows_cost_their_documents_run_one_by_one(marker: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(TINY_CONFIGS["llama"])
    truth = _documents_one_by_one(model) * ROWS * STEPS
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    log = tmp_path / "run.jsonl"
    mon = MFUMonitor(
        model, None if marker == "explicit" else opt, handle_sigterm=False, warmup_steps=0, peak_flops=1e12,
        log_path=str(log),
    )  # fmt: skip
    try:
        for _ in range(STEPS):
            batch = _packed_batch()
            if marker == "explicit":
                batch.pop("position_ids")  # one row per document as far as the hooks know
                model(**batch).loss.backward()
                opt.step()
                opt.zero_grad()
                mon.step(documents=[DOCS] * ROWS)
            else:
                model(**batch).loss.backward()
                opt.step()
                opt.zero_grad()
        snap = mon.snapshot()
    finally:
        mon.close()
    assert snap.tokens_total == ROWS * sum(DOCS) * STEPS
    assert snap.model_flops_total == pytest.approx(truth, rel=0.005)
    assert snap.documents_per_step == ROWS * len(DOCS)
    assert snap.documents_total == ROWS * len(DOCS) * STEPS
    assert snap.mean_document_length == pytest.approx(sum(DOCS) / len(DOCS))
    steps = [json.loads(line) for line in log.read_text().splitlines() if json.loads(line)["event"] == "step"]
    assert [s["documents"] for s in steps] == [ROWS * len(DOCS)] * STEPS
    assert sum(s["model_flops"] for s in steps) == pytest.approx(truth, rel=0.005)
    names = {m.name: m for m in snapshot_metrics(snap)}
    assert names["training_documents"].samples[0].value == ROWS * len(DOCS) * STEPS
    assert names["training_document_length_mean"].samples[0].value == pytest.approx(sum(DOCS) / len(DOCS))


def test_varlen_keywords_and_unpacked_rows() -> None:
    """``cu_seq_lens_q`` marks documents over the flattened batch; rows without a marker keep one document
    per row and no document figures."""
    spec_model = build_model(TINY_CONFIGS["llama"])
    mon = MFUMonitor(spec_model, None, handle_sigterm=False, warmup_steps=0, peak_flops=1e12)
    try:
        mon._capture.forward_pre_hook(
            spec_model, (), {"input_ids": torch.zeros(1, 64, dtype=torch.long),
                             "cu_seq_lens_q": torch.tensor([0, 20, 50, 64])},
        )  # fmt: skip
        mon.step()
        snap = mon.snapshot()
        assert snap.documents_per_step == 3
        assert snap.mean_document_length == pytest.approx(64 / 3)
    finally:
        mon.close()
    plain = MFUMonitor(spec_model, None, handle_sigterm=False, warmup_steps=0, peak_flops=1e12)
    try:
        plain._capture.forward_pre_hook(spec_model, (), {"input_ids": torch.zeros(2, 8, dtype=torch.long)})
        plain.step()
        snap = plain.snapshot()
        assert snap.documents_total is None and snap.mean_document_length is None
    finally:
        plain.close()
